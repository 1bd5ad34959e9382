"""Open Connectors' instance API: `/elements/api-v2/instances[...]`, for the bearer token
of an open-connectors service key. Answers in Open Connectors' shapes; errors in meshsite's
own format. The OpenAPI document's part for these APIs is connectors_schema.py."""

from __future__ import annotations

import uuid
from typing import Any

from rest_framework import status
from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from meshsite.errors import Invalid, NotFound
from meshsite.platform.auth import Client, ServiceKeyAuthentication
from meshsite.platform.models import Service, ServiceInstance

from ..connectors import instances as services
from ..models import ConnectorInstance
from . import connectors_schema as doc


class OpenConnectorsKey(BasePermission):
    message = "This API takes the token of an open-connectors service key"

    def has_permission(self, request: Request, view: Any) -> bool:
        client = request.user
        return isinstance(client, Client) and client.instance.service == Service.OPEN_CONNECTORS


class ConnectorsView(APIView):
    authentication_classes = [ServiceKeyAuthentication]
    permission_classes = [OpenConnectorsKey]

    @property
    def owner(self) -> ServiceInstance:
        return self.request.user.instance  # type: ignore[union-attr]

    def connector(self, pk: int) -> ConnectorInstance:
        found = ConnectorInstance.objects.filter(service_instance=self.owner, pk=pk).select_related(
            "service_instance", "event_mesh").first()
        if found is None:
            raise NotFound(f"Connector instance {pk} not found")
        return found


def _json(request: Request, instance: ConnectorInstance) -> dict[str, Any]:
    return {
        "id": instance.pk, "name": instance.name, "element": {"key": instance.element_key},
        "configuration": services.shown_configuration(instance), "eventsEnabled": instance.events_enabled(),
        "eventMeshInstanceId": str(instance.event_mesh_id) if instance.event_mesh_id else None,
        "topicPrefix": instance.topic_prefix, "providerAccount": instance.provider_account,
        # Where the provider posts its webhooks for this instance (the token names it).
        "eventsUrl": request.build_absolute_uri(f"/elements/api-v2/events/{instance.element_key}/"
                                                f"{instance.webhook_token}/"),
        "createdDate": instance.created_at.isoformat(), "updatedDate": instance.updated_at.isoformat(),
    }


def _body(request: Request) -> dict[str, Any]:
    if not isinstance(request.data, dict):
        raise Invalid("The body must be a JSON object")
    return request.data


def _element_key(body: dict[str, Any]) -> Any:
    element = body.get("element")
    return element.get("key") if isinstance(element, dict) else None


def _event_mesh(owner: ServiceInstance, ref: Any) -> ServiceInstance | None:
    if ref is None:
        return None
    try:
        pk = uuid.UUID(str(ref))
    except ValueError:
        raise Invalid("eventMeshInstanceId must be a service instance id") from None
    found = ServiceInstance.objects.filter(pk=pk, subaccount_id=owner.subaccount_id,
                                           service=Service.EVENT_MESH).first()
    if found is None:
        raise Invalid("eventMeshInstanceId must be an Event Mesh instance of the same subaccount")
    return found


def _fields(owner: ServiceInstance, body: dict[str, Any]) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for name, attr in (("name", "name"), ("configuration", "configuration"), ("topicPrefix", "topic_prefix"),
                       ("providerAccount", "provider_account")):
        if name in body:
            fields[attr] = body[name]
    if "element" in body:
        fields["element_key"] = _element_key(body)
    if "eventMeshInstanceId" in body:
        fields["event_mesh"] = _event_mesh(owner, body["eventMeshInstanceId"])
    return fields


@doc.INSTANCE_LIST
class InstanceListView(ConnectorsView):
    def get(self, request: Request) -> Response:
        found = ConnectorInstance.objects.filter(service_instance=self.owner).order_by("pk")
        return Response([_json(request, instance) for instance in found])

    def post(self, request: Request) -> Response:
        body = _body(request)
        fields = _fields(self.owner, body)
        fields.setdefault("name", body.get("name"))
        fields.setdefault("element_key", None)
        if "providerData" in body:  # OAuth2: the authorization code the provider redirected with
            if not isinstance(body["providerData"], dict):
                raise Invalid("providerData must be an object")
            fields["provider_code"] = body["providerData"].get("code", "")
        created = services.connector_instance_create(service_instance=self.owner, **fields)
        return Response(_json(request, created), status=status.HTTP_201_CREATED)


@doc.INSTANCE
class InstanceView(ConnectorsView):
    def get(self, request: Request, pk: int) -> Response:
        return Response(_json(request, self.connector(pk)))

    def patch(self, request: Request, pk: int) -> Response:
        instance = self.connector(pk)
        updated = services.connector_instance_update(instance=instance, **_fields(self.owner, _body(request)))
        return Response(_json(request, updated))

    def delete(self, request: Request, pk: int) -> Response:
        services.connector_instance_delete(instance=self.connector(pk))
        return Response(status=status.HTTP_204_NO_CONTENT)


def _configuration(instance: ConnectorInstance) -> list[dict[str, Any]]:
    shown = services.shown_configuration(instance)
    return [{"id": key, "key": key, "propertyValue": value} for key, value in shown.items()]


@doc.CONFIGURATION_LIST
class ConfigurationListView(ConnectorsView):
    def get(self, request: Request, pk: int) -> Response:
        return Response(_configuration(self.connector(pk)))


@doc.CONFIGURATION
class ConfigurationView(ConnectorsView):
    def patch(self, request: Request, pk: int, key: str) -> Response:
        body = _body(request)
        if "propertyValue" not in body:
            raise Invalid("propertyValue is required")
        instance = services.connector_configuration_set(instance=self.connector(pk), key=key,
                                                        value=body["propertyValue"])
        value = services.shown_configuration(instance).get(key)
        return Response({"id": key, "key": key, "propertyValue": value})
