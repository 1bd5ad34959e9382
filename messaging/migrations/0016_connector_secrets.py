"""A connector instance's secret configuration keys in one sealed JSON column (`secrets`),
so that provider credentials and the vendor's webhook secret are kept like the signature
key; the signature keys already stored move into it."""

import json

from django.db import migrations, models

SIGNATURE_KEY = "event.notification.signature.key"


def signature_keys_into_secrets(apps, schema_editor):
    from meshsite import secretbox

    ConnectorInstance = apps.get_model("messaging", "ConnectorInstance")
    for instance in ConnectorInstance.objects.exclude(signature_key=""):
        key = secretbox.unseal(instance.signature_key)
        instance.secrets = secretbox.seal(json.dumps({SIGNATURE_KEY: key}))
        instance.save(update_fields=["secrets"])


def secrets_into_signature_keys(apps, schema_editor):
    from meshsite import secretbox

    ConnectorInstance = apps.get_model("messaging", "ConnectorInstance")
    for instance in ConnectorInstance.objects.exclude(secrets=""):
        key = json.loads(secretbox.unseal(instance.secrets)).get(SIGNATURE_KEY, "")
        instance.signature_key = secretbox.seal(key) if key else ""
        instance.save(update_fields=["signature_key"])


class Migration(migrations.Migration):
    dependencies = [("messaging", "0015_connector_events")]

    operations = [
        migrations.AddField(model_name="connectorinstance", name="secrets", field=models.TextField(blank=True)),
        migrations.RunPython(signature_keys_into_secrets, secrets_into_signature_keys),
        migrations.RemoveField(model_name="connectorinstance", name="signature_key"),
    ]
