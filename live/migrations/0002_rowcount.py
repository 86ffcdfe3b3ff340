from django.db import migrations, models

from live import changelog


class Migration(migrations.Migration):
    dependencies = [("live", "0001_changelog")]

    operations = [
        migrations.CreateModel(
            name="RowCount",
            fields=[
                ("table_name", models.CharField(max_length=64, primary_key=True, serialize=False)),
                ("total", models.BigIntegerField(default=0)),
                ("enabled", models.BigIntegerField(default=0)),
            ],
            options={"db_table": "live_rowcount"},
        ),
        # Not atomic: MySQL cannot roll DDL back, and Django refuses DDL in a transaction there.
        migrations.RunPython(changelog.create_counts, changelog.drop_counts, atomic=False),
    ]
