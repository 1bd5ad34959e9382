"""The scenario modeller's forms: one editor per section of the definition (scenario.py gives
the shape). An editor reads its part of the definition into a form (or a formset of rows,
one per list entry, with one blank row to add and a Remove box per row) and writes it back
into a copy of the definition; everything else in the definition is kept as it was.
The forms check shapes only (required, numbers, choices): whether the definition can be
activated is scenario.problems(), shown beside the fields it concerns."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

from django import forms
from django.forms import BaseFormSet, formset_factory

from ..scenario import AGGREGATES, ATTRIBUTE_TYPES, CHARTS, DIMENSIONS_BUILT_IN, DURATION_UNITS, PERIODS
from ..selectors_scenarios import attribute_types, events_known

Choices = list[tuple[str, str]]
Definition = dict[str, Any]
ROW_PATH = re.compile(r"^(\w+)\[(\d+)\](?:\.(\w+))?(?:\.(\w+))?")


def ref_value(ref: Any) -> str:
    """An event reference as one form value (JSON keeps any character of either id apart)."""
    ref = ref if isinstance(ref, dict) else {}
    return json.dumps([str(ref.get("participant", "")), str(ref.get("eventType", ""))])


def ref_parse(value: str) -> dict[str, str]:
    participant, event_type = json.loads(value)
    return {"participant": participant, "eventType": event_type}


def event_choices(definition: Definition) -> Choices:
    """The participants' events, then any event the definition names that they no longer have
    (so that it is shown, and its problem with it, rather than silently dropped)."""
    choices = [(ref_value({"participant": p, "eventType": e}), label) for p, e, label in events_known(definition)]
    known = {value for value, _ in choices}
    for ref in _refs_named(definition):
        value = ref_value(ref)
        if value not in known:
            known.add(value)
            choices.append((value, f"(not a participant's event) {ref.get('participant')}/{ref.get('eventType')}"))
    return choices


def _refs_named(definition: Definition) -> Iterable[dict[str, Any]]:
    state = definition.get("state")
    if isinstance(state, dict):
        yield from _dicts(state.get("completingEvents"))
    for phase in _dicts(definition.get("phases")):
        yield from _dicts(phase.get("startEvents"))
        yield from _dicts(phase.get("endEvents"))
    for attribute in _dicts(definition.get("attributes")):
        yield from _dicts([attribute.get("from"), attribute.get("to")])


def _dicts(value: Any) -> list[dict[str, Any]]:
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def _obj(container: dict[str, Any], key: str) -> dict[str, Any]:
    value = container.get(key)
    return value if isinstance(value, dict) else {}


def _number(value: float) -> int | float:
    return int(value) if float(value).is_integer() else value


def _text(data: dict[str, Any], name: str) -> str:
    return str(data.get(name) or "").strip()


# --- sections that are one form -----------------------------------------------------------


class SectionForm(forms.Form):
    """A section that is one form; `fields_of` maps a problem path's key to a form field."""

    fields_of: dict[str, str] = {}

    def __init__(self, *args: Any, choices: Choices, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)

    @staticmethod
    def initial_of(definition: Definition, choices: Choices) -> dict[str, Any]:
        raise NotImplementedError

    def apply(self, definition: Definition) -> Definition:
        raise NotImplementedError


class GeneralForm(SectionForm):
    name = forms.CharField(max_length=200)
    namespace = forms.CharField(max_length=100, required=False)
    singular = forms.CharField(max_length=100, label="Instance label (singular)", initial="Instance")
    plural = forms.CharField(max_length=100, label="Instance label (plural)", initial="Instances")

    fields_of = {"name": "name", "namespace": "namespace", "instanceLabel": "singular"}

    @staticmethod
    def initial_of(definition: Definition, choices: Choices) -> dict[str, Any]:
        label = _obj(definition, "instanceLabel")
        return {"name": definition.get("name", ""), "namespace": definition.get("namespace", ""),
                "singular": label.get("singular", "Instance"), "plural": label.get("plural", "Instances")}

    def apply(self, definition: Definition) -> Definition:
        data = self.cleaned_data
        return {**definition, "name": data["name"].strip(), "namespace": _text(data, "namespace"),
                "instanceLabel": {"singular": data["singular"].strip(), "plural": data["plural"].strip()}}


class StateForm(SectionForm):
    completing = forms.MultipleChoiceField(
        required=False, widget=forms.CheckboxSelectMultiple, label="Completing events",
        help_text="An instance is Completed once one of these happened; Open until then")

    fields_of = {"state": "completing"}

    def __init__(self, *args: Any, choices: Choices, **kwargs: Any) -> None:
        super().__init__(*args, choices=choices, **kwargs)
        self.fields["completing"].choices = choices  # type: ignore[attr-defined]

    @staticmethod
    def initial_of(definition: Definition, choices: Choices) -> dict[str, Any]:
        state = _obj(definition, "state")
        return {"completing": [ref_value(ref) for ref in _dicts(state.get("completingEvents"))]}

    def apply(self, definition: Definition) -> Definition:
        state = _obj(definition, "state")
        refs = [ref_parse(value) for value in self.cleaned_data["completing"]]
        return {**definition, "state": {**state, "completingEvents": refs}}


class StatusForm(SectionForm):
    enabled = forms.BooleanField(required=False, label="Track a status (On Track / At Risk / Critical)")
    value = forms.FloatField(min_value=0, required=False, label="Target duration")
    unit = forms.ChoiceField(choices=[(unit, unit) for unit in DURATION_UNITS], initial="days")
    threshold = forms.FloatField(required=False, label="At Risk threshold (% of the target)", initial=80)

    fields_of = {"status": "enabled", "targetDuration": "unit", "value": "value", "threshold": "threshold"}

    @staticmethod
    def initial_of(definition: Definition, choices: Choices) -> dict[str, Any]:
        status = definition.get("status")
        if not isinstance(status, dict):
            return {"enabled": False, "unit": "days", "threshold": 80}
        target = _obj(status, "targetDuration")
        return {"enabled": True, "value": target.get("value"), "unit": target.get("unit", "days"),
                "threshold": status.get("threshold", 80)}

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if data.get("enabled") and not data.get("value"):
            self.add_error("value", "A status needs a target duration above 0")
        return data

    def apply(self, definition: Definition) -> Definition:
        data = self.cleaned_data
        rest = {key: value for key, value in definition.items() if key != "status"}
        if not data["enabled"]:
            return rest
        threshold = data["threshold"] if data["threshold"] is not None else 80
        return {**rest, "status": {"targetDuration": {"value": _number(data["value"]), "unit": data["unit"]},
                                   "threshold": _number(threshold)}}


# --- sections that are a list of rows ------------------------------------------------------


class RowForm(forms.Form):
    """One entry of a list section; `fields_of` maps a problem's field in the entry to a form field."""

    fields_of: dict[str, str] = {}

    def __init__(self, *args: Any, choices: Choices, definition: Definition, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)

    @staticmethod
    def initial_of(item: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    def item(self) -> dict[str, Any]:
        raise NotImplementedError


class ParticipantRow(RowForm):
    processDefinitionId = forms.CharField(max_length=255, label="Process definition id")
    name = forms.CharField(max_length=255, required=False)
    businessKeyAttribute = forms.CharField(
        max_length=100, required=False, label="Business key attribute",
        help_text="A context attribute whose value correlates this participant's instances with the others'")
    events = forms.CharField(
        required=False, widget=forms.Textarea(attrs={"rows": 4}), label="Event types",
        help_text="One a line: EVENT_TYPE = Readable name")

    @staticmethod
    def initial_of(item: dict[str, Any]) -> dict[str, Any]:
        lines = [f"{event.get('eventType', '')} = {event.get('name') or event.get('eventType', '')}"
                 for event in _dicts(item.get("events"))]
        return {"processDefinitionId": item.get("processDefinitionId", ""), "name": item.get("name", ""),
                "businessKeyAttribute": item.get("businessKeyAttribute") or "", "events": "\n".join(lines)}

    def item(self) -> dict[str, Any]:
        data = self.cleaned_data
        entry: dict[str, Any] = {"processDefinitionId": data["processDefinitionId"].strip(),
                                 "name": _text(data, "name") or data["processDefinitionId"].strip()}
        if _text(data, "businessKeyAttribute"):
            entry["businessKeyAttribute"] = _text(data, "businessKeyAttribute")
        entry["events"] = [_event_line(line) for line in data["events"].splitlines() if line.strip()]
        return entry


def _event_line(line: str) -> dict[str, str]:
    event_type, _, name = line.partition("=")
    return {"eventType": event_type.strip(), "name": name.strip() or event_type.strip()}


class ContextRow(RowForm):
    id = forms.CharField(max_length=100, help_text="As in the events' context, unless a source is given")
    name = forms.CharField(max_length=255, required=False)
    type = forms.ChoiceField(choices=[(kind, kind) for kind in ATTRIBUTE_TYPES], initial="String")
    source = forms.CharField(max_length=255, required=False, help_text="The context key to read, if not the id")

    @staticmethod
    def initial_of(item: dict[str, Any]) -> dict[str, Any]:
        return {name: item.get(name) or "" for name in ("id", "name", "type", "source")}

    def item(self) -> dict[str, Any]:
        data = self.cleaned_data
        entry = {"id": data["id"].strip(), "name": _text(data, "name") or data["id"].strip(), "type": data["type"]}
        return {**entry, "source": _text(data, "source")} if _text(data, "source") else entry


class PhaseRow(RowForm):
    id = forms.CharField(max_length=100)
    name = forms.CharField(max_length=255)
    startEvents = forms.MultipleChoiceField(required=False, label="Start events")
    endEvents = forms.MultipleChoiceField(required=False, label="End events")

    def __init__(self, *args: Any, choices: Choices, definition: Definition, **kwargs: Any) -> None:
        super().__init__(*args, choices=choices, definition=definition, **kwargs)
        for name in ("startEvents", "endEvents"):
            self.fields[name].choices = choices  # type: ignore[attr-defined]

    @staticmethod
    def initial_of(item: dict[str, Any]) -> dict[str, Any]:
        return {"id": item.get("id", ""), "name": item.get("name", ""),
                "startEvents": [ref_value(ref) for ref in _dicts(item.get("startEvents"))],
                "endEvents": [ref_value(ref) for ref in _dicts(item.get("endEvents"))]}

    def item(self) -> dict[str, Any]:
        data = self.cleaned_data
        return {"id": data["id"].strip(), "name": data["name"].strip(),
                "startEvents": [ref_parse(value) for value in data["startEvents"]],
                "endEvents": [ref_parse(value) for value in data["endEvents"]]}


KINDS = [("duration", "Duration between two events"), *[(period, f"{period.title()} of a date") for period in PERIODS]]


class AttributeRow(RowForm):
    id = forms.CharField(max_length=100)
    name = forms.CharField(max_length=255, required=False)
    kind = forms.ChoiceField(choices=KINDS, initial="duration")

    def __init__(self, *args: Any, choices: Choices, definition: Definition, **kwargs: Any) -> None:
        super().__init__(*args, choices=choices, definition=definition, **kwargs)
        dates = [(name, name) for name, kind in attribute_types(definition).items() if kind == "Date"]
        self.fields["from"] = forms.ChoiceField(choices=[("", "—"), *choices], required=False,
                                                label="From event (duration)")
        self.fields["to"] = forms.ChoiceField(choices=[("", "—"), *choices], required=False,
                                              label="To event (duration)")
        self.fields["of"] = forms.ChoiceField(choices=[("", "—"), *dates], required=False,
                                              label="Of the date (month, quarter, year)")

    @staticmethod
    def initial_of(item: dict[str, Any]) -> dict[str, Any]:
        initial = {"id": item.get("id", ""), "name": item.get("name", ""), "kind": item.get("kind", "duration"),
                   "of": item.get("of", "")}
        for name in ("from", "to"):
            initial[name] = ref_value(item[name]) if isinstance(item.get(name), dict) else ""
        return initial

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        needed = ("from", "to") if data.get("kind") == "duration" else ("of",)
        for name in needed:
            if not data.get(name):
                self.add_error(name, f"A {data.get('kind')} attribute needs this")
        return data

    def item(self) -> dict[str, Any]:
        data = self.cleaned_data
        entry = {"id": data["id"].strip(), "name": _text(data, "name") or data["id"].strip(), "kind": data["kind"]}
        if data["kind"] == "duration":
            return {**entry, "from": ref_parse(data["from"]), "to": ref_parse(data["to"])}
        return {**entry, "of": data["of"]}


class IndicatorRow(RowForm):
    id = forms.CharField(max_length=100)
    title = forms.CharField(max_length=200)
    aggregate = forms.ChoiceField(choices=[(name, name) for name in AGGREGATES], initial="count", label="Measure")
    chart = forms.ChoiceField(choices=[(name, name) for name in CHARTS], initial="bar")
    filters = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}),
                              help_text="One a line: attribute = value, value")

    fields_of = {"measure": "aggregate"}

    def __init__(self, *args: Any, choices: Choices, definition: Definition, **kwargs: Any) -> None:
        super().__init__(*args, choices=choices, definition=definition, **kwargs)
        types = attribute_types(definition)
        numbers = [(name, name) for name, kind in types.items() if kind == "Number"]
        texts = [(name, name) for name, kind in types.items() if kind == "String" and name not in DIMENSIONS_BUILT_IN]
        self.fields["attribute"] = forms.ChoiceField(choices=[("", "— (count)"), *numbers], required=False,
                                                     label="Of the attribute")
        self.fields["dimension"] = forms.ChoiceField(
            choices=[("", "— (one value)"), *[(name, name) for name in DIMENSIONS_BUILT_IN], *texts], required=False)
        self.order_fields(["id", "title", "aggregate", "attribute", "dimension", "filters", "chart"])

    @staticmethod
    def initial_of(item: dict[str, Any]) -> dict[str, Any]:
        measure = _obj(item, "measure")
        lines = [f"{condition.get('attribute', '')} = {', '.join(str(v) for v in _values(condition))}"
                 for condition in _dicts(item.get("filters"))]
        return {"id": item.get("id", ""), "title": item.get("title", ""),
                "aggregate": measure.get("aggregate", "count"), "attribute": measure.get("attribute", ""),
                "dimension": item.get("dimension") or "",
                "filters": "\n".join(lines), "chart": item.get("chart", "bar")}

    def item(self) -> dict[str, Any]:
        data = self.cleaned_data
        measure = {"aggregate": data["aggregate"]}
        if data["aggregate"] != "count" or data["attribute"]:
            measure["attribute"] = data["attribute"]
        entry: dict[str, Any] = {"id": data["id"].strip(), "title": data["title"].strip(), "measure": measure}
        if data["dimension"]:
            entry["dimension"] = data["dimension"]
        entry["filters"] = [_filter_line(line) for line in data["filters"].splitlines() if line.strip()]
        return {**entry, "chart": data["chart"]}


def _values(condition: dict[str, Any]) -> list[Any]:
    values = condition.get("values")
    return values if isinstance(values, list) else []


def _filter_line(line: str) -> dict[str, Any]:
    attribute, _, values = line.partition("=")
    return {"attribute": attribute.strip(), "values": [value.strip() for value in values.split(",") if value.strip()]}


# --- one editor per section ----------------------------------------------------------------

ROW_FORMS: dict[str, type[RowForm]] = {
    "participants": ParticipantRow, "context": ContextRow, "phases": PhaseRow, "attributes": AttributeRow,
    "indicators": IndicatorRow,
}
FORMS: dict[str, type[SectionForm]] = {"general": GeneralForm, "state": StateForm, "status": StatusForm}
SECTIONS = {
    "general": ("General", "The scenario's name, namespace and what its instances are called."),
    "participants": ("Participants", "The process definitions whose events the scenario takes, and their event "
                                     "types. Instances of different participants correlate by a business key."),
    "context": ("Context", "Typed attributes read from the events' context."),
    "state": ("State", "Which events complete an instance."),
    "status": ("Status", "When an open instance is On Track, At Risk or Critical."),
    "phases": ("Phases", "Stretches of an instance between a start event and an end event."),
    "attributes": ("Calculated attributes", "Durations between two events, and the month, quarter or year of a date."),
    "indicators": ("Performance indicators", "The workspace's tiles: a measure by a dimension, filtered."),
}
KEYS = {"general": ("", "name", "namespace", "instanceLabel")}


def _tokens(path: str) -> list[str]:
    return [token for token in re.split(r"[.\[\]]+", path) if token]


def section_of(path: str) -> str:
    first = (_tokens(path) or [""])[0]
    return next((slug for slug, keys in KEYS.items() if first in keys), first)


class Editor:
    """One section's form or formset over a definition, and its rows with their problems."""

    def __init__(self, section: str, definition: Definition, data: Any = None) -> None:
        self.section, self.refusal = section, ""
        choices = event_choices(definition)
        self.form: Any
        if section in ROW_FORMS:
            row = ROW_FORMS[section]
            formset = formset_factory(row, extra=1, can_delete=True)
            self.form = formset(data, prefix=section, initial=[row.initial_of(item)
                                                               for item in _dicts(definition.get(section))],
                                form_kwargs={"choices": choices, "definition": definition})
        else:
            form = FORMS[section]
            self.form = form(data, initial=form.initial_of(definition, choices), choices=choices)

    @property
    def is_rows(self) -> bool:
        return isinstance(self.form, BaseFormSet)

    def is_valid(self) -> bool:
        return bool(self.form.is_valid())

    def apply(self, definition: Definition) -> Definition:
        if not self.is_rows:
            return dict(self.form.apply(definition))
        kept = []
        for index, form in enumerate(self.form.forms):
            if form.cleaned_data.get("DELETE"):
                continue
            if index >= self.form.initial_form_count() and not form.has_changed():
                continue  # the blank row left blank
            kept.append(form.item())
        return {**definition, self.section: kept}

    def rows(self, problems: list[dict[str, str]]) -> list[dict[str, Any]]:
        forms_ = list(self.form.forms) if self.is_rows else [self.form]
        placed: list[dict[str, list[str]]] = [{} for _ in forms_]
        unplaced: list[list[str]] = [[] for _ in forms_]
        for problem in problems:
            index, name = self._place(problem["path"], forms_)
            if index is None:
                continue
            where = placed[index].setdefault(name, []) if name else unplaced[index]
            where.append(f"{problem['path']}: {problem['message']}" if not name else problem["message"])
        return [{"form": form, "problems": unplaced[n], "cells": [(field, placed[n].get(field.name, []))
                                                                  for field in form.visible_fields()]}
                for n, form in enumerate(forms_)]

    def _place(self, path: str, forms_: list[Any]) -> tuple[int | None, str]:
        if not self.is_rows:
            mapping = type(self.form).fields_of
            name = next((mapping[token] for token in reversed(_tokens(path)) if token in mapping), "")
            return 0, name
        found = ROW_PATH.match(path)
        if found is None or int(found[2]) >= len(forms_):
            return None, ""
        form = forms_[int(found[2])]
        field, sub = found[3] or "", found[4] or ""
        name = sub if sub in form.fields else type(form).fields_of.get(field, field)
        return int(found[2]), name if name in form.fields else ""


# --- creating a scenario, granting a role --------------------------------------------------


class ScenarioNewForm(forms.Form):
    scenario_id = forms.CharField(max_length=100, label="Id", help_text="Letters, digits, _ and -; used in URLs")
    name = forms.CharField(max_length=200)
    participants = forms.CharField(max_length=2000, required=False, label="Participants",
                                   help_text="processDefinitionIds, comma-separated")

    def participant_ids(self) -> list[str]:
        return [part.strip() for part in self.cleaned_data["participants"].split(",") if part.strip()]


class GrantForm(forms.Form):
    role = forms.ChoiceField()
    user = forms.CharField(max_length=254, required=False, label="User",
                           help_text="A member's user name or e-mail address")
    service_key = forms.ChoiceField(required=False, label="or a service key of the instance")

    def __init__(self, *args: Any, roles: Choices, keys: Choices, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["role"].choices = roles  # type: ignore[attr-defined]
        self.fields["service_key"].choices = [("", "—"), *keys]  # type: ignore[attr-defined]

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if bool(data.get("user", "").strip()) == bool(data.get("service_key")):
            raise forms.ValidationError("Name a user or choose a service key (one of them)")
        return data
