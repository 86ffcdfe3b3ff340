"""SIP trunks: the links to providers and other PBXs."""
