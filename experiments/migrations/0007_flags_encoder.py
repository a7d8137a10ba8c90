# Issue 14: on PostgreSQL, jsonb turned a large float flag (1e+20) into an integer; the flags'
# encoder writes such floats in full with ".0" (validation.FlagsEncoder). No SQL.
import django.db.models
from django.db import migrations

import experiments.validation


class Migration(migrations.Migration):
    dependencies = [("experiments", "0006_scheduler_lease")]
    operations = [
        migrations.AlterField(
            "experiment",
            "flags",
            django.db.models.JSONField(
                blank=True,
                default=dict,
                encoder=experiments.validation.FlagsEncoder,
                validators=[experiments.validation.validate_flags],
            ),
        ),
    ]
