import django.db.models.functions.datetime
from django.db import migrations, models

from live import changelog


class Migration(migrations.Migration):
    initial = True

    dependencies = [
        ("extensions", "0003_config_safe_values"),
        ("trunks", "0002_config_safe_values"),
    ]

    operations = [
        migrations.CreateModel(
            name="ChangeLog",
            fields=[
                ("id", models.BigAutoField(primary_key=True, serialize=False)),
                ("table_name", models.CharField(max_length=64)),
                ("row_id", models.BigIntegerField()),
                (
                    "created_at",
                    models.DateTimeField(db_default=django.db.models.functions.datetime.Now(), db_index=True),
                ),
            ],
            options={"db_table": "live_changelog"},
        ),
        # Not atomic: MySQL cannot roll DDL back, and Django refuses DDL in a transaction there.
        migrations.RunPython(changelog.create, changelog.drop, atomic=False),
    ]
