"""The change-log and count triggers again, after ``version`` was added to extensions and
trunks: on SQLite adding that column rebuilt the tables, and their triggers went with them."""

from django.db import migrations

from live import changelog


class Migration(migrations.Migration):
    dependencies = [
        ("live", "0002_rowcount"),
        ("extensions", "0006_version"),
        ("trunks", "0004_version"),
    ]

    operations = [
        # Not atomic: MySQL cannot roll DDL back, and Django refuses DDL in a transaction there.
        migrations.RunPython(changelog.recreate, migrations.RunPython.noop, atomic=False),
    ]
