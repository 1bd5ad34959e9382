"""The publisher's own message properties (AMQP). A constant database default: PostgreSQL adds
the column without rewriting the table, however many messages it holds."""

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('messaging', '0007_unique_claim_id'),
    ]

    operations = [
        migrations.AddField(
            model_name='message',
            name='properties',
            field=models.TextField(blank=True, db_default='', default=''),
        ),
    ]
