"""What the live stream says about trunks (the seed's event contract)."""

from live import broadcasts
from trunks.models import Trunk

broadcasts.register(
    Trunk,
    topic="trunk",
    fields=("id", "name", "host", "enabled"),
    deleted_fields=("id", "name"),
    count_as="trunks",
)
