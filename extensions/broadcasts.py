"""What the live stream says about extensions (the seed's event contract)."""

from extensions.models import Extension
from live import broadcasts

broadcasts.register(
    Extension,
    topic="extension",
    fields=("id", "extension_number", "name", "enabled"),
    deleted_fields=("id", "extension_number"),
    count_as="extensions",
)
