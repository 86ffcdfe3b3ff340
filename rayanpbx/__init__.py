"""RayanPBX: a live web admin for an Asterisk PBX."""
