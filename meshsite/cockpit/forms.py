"""Forms of the platform pages. They check shapes (a number, a JSON document); the rules
(quotas, names, descriptors) are the services', whose refusals the views attach to a field."""

from __future__ import annotations

import json
from typing import Any

from django import forms

from meshsite.platform.models import Role, Service


class EntitlementForm(forms.Form):
    service = forms.ChoiceField(choices=Service.choices)
    plan = forms.CharField(max_length=40)
    quota = forms.IntegerField(min_value=0, max_value=100_000, initial=1)


class QuotaForm(forms.Form):
    quota = forms.IntegerField(min_value=0, max_value=100_000)


def json_error(error: json.JSONDecodeError) -> str:
    return f"Not valid JSON: {error.msg} (line {error.lineno}, column {error.colno})"


def optional_json(text: str) -> Any:
    """The JSON a parameters field holds, None when it is empty, or the error beside it."""
    if not text.strip():
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise forms.ValidationError(json_error(error)) from None


class InstanceForm(forms.Form):
    plan = forms.ChoiceField(label="Service plan")
    name = forms.CharField(max_length=100, label="Instance name")
    parameters = forms.CharField(
        required=False, widget=forms.Textarea(attrs={"rows": 18, "spellcheck": "false"}),
        label="Parameters (JSON)", help_text="The service descriptor; for Event Mesh, emname must equal the name.",
    )

    def __init__(self, *args: Any, plans: list[tuple[str, str]], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["plan"].choices = plans  # type: ignore[attr-defined]  # a ChoiceField

    def clean_plan(self) -> tuple[str, str]:
        service, _, plan = self.cleaned_data["plan"].partition(":")
        return service, plan

    def clean_parameters(self) -> Any:
        return optional_json(self.cleaned_data["parameters"])


class ServiceKeyForm(forms.Form):
    name = forms.CharField(max_length=100, label="Service key name")
    parameters = forms.CharField(
        required=False, widget=forms.Textarea(attrs={"rows": 3, "spellcheck": "false"}),
        label="Parameters (JSON, optional)",
        help_text='For Process Visibility, the roles the key grants, e.g. {"roles": ["PVEventSender", "PVOperator"]}; '
                  "without, it may push events only.",
    )

    def __init__(self, *args: Any, takes_parameters: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not takes_parameters:
            del self.fields["parameters"]

    def clean_parameters(self) -> Any:
        return optional_json(self.cleaned_data["parameters"])


class MemberForm(forms.Form):
    username = forms.CharField(max_length=150)
    role = forms.ChoiceField(choices=Role.choices)
