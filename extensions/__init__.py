"""SIP extensions: the phones of the PBX."""
