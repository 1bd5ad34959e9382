"""OpenAPI pieces every meshsite-native API shares: the one error shape (meshsite/errors.py)."""

from __future__ import annotations

from drf_spectacular.utils import inline_serializer
from rest_framework import serializers

MESH_ERROR = inline_serializer("MeshError", {
    "detail": serializers.CharField(), "code": serializers.CharField(),
    "extra": serializers.JSONField(required=False, allow_null=True)})
