# The "scheduler" sync_states row: the lease `skydeck serve` holds while it runs the django-q2
# cluster, so a second serve on the same database refuses instead of running a second scheduler.

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("experiments", "0005_ownership"),
    ]

    operations = [
        migrations.AlterField(
            model_name="syncstate",
            name="source",
            field=models.CharField(
                choices=[
                    ("skypilot", "SkyPilot jobs"),
                    ("s3", "S3 checkpoints"),
                    ("reconciler", "Reconciler"),
                    ("backup", "Scheduled backups"),
                    ("scheduler", "Task scheduler"),
                ],
                max_length=32,
                unique=True,
            ),
        ),
    ]
