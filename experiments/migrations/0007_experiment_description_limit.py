# Issue 14: the description's limit lives on the model (validation.DESCRIPTION_MAX_LENGTH), so the
# UI, the admin and the API accept the same descriptions. Validators change no column: this
# migration only records them (no SQL).

import django.core.validators
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("experiments", "0006_scheduler_lease"),
    ]

    operations = [
        migrations.AlterField(
            model_name="experiment",
            name="description",
            field=models.TextField(
                blank=True,
                validators=[
                    django.core.validators.MaxLengthValidator(100000),
                    django.core.validators.ProhibitNullCharactersValidator(),
                ],
            ),
        ),
    ]
