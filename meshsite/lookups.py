"""`field__any=[...]`: `IN (...)` as one array parameter on PostgreSQL.

Django renders `__in` with one placeholder per value; at the thousands of values a
processing batch carries, building, splitting and binding that statement cost more than
running it (measured: 0.15-0.28 s per 5,000-id UPDATE, most of it client-side). `= ANY(%s)`
sends the list as one array. Other backends get Django's `IN`.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import EmptyResultSet
from django.db.models import Field, ForeignObject, Lookup
from django.db.models.lookups import In


class AnyOf(Lookup):
    lookup_name = "any"

    def get_prep_lookup(self) -> Any:
        return list(self.rhs)

    def as_sql(self, compiler: Any, connection: Any) -> Any:
        return In(self.lhs, self.rhs).as_sql(compiler, connection)

    def as_postgresql(self, compiler: Any, connection: Any) -> Any:
        lhs, lhs_params = self.process_lhs(compiler, connection)
        field = self.lhs.output_field
        values = [field.get_db_prep_value(value, connection) for value in self.rhs]
        if not values:
            raise EmptyResultSet  # as `__in=[]`: matches nothing, and the query is not sent
        return f"{lhs} = ANY(%s)", [*lhs_params, values]


Field.register_lookup(AnyOf)
ForeignObject.register_lookup(AnyOf)  # values are the target's: ids, not model objects
