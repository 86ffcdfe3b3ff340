"""The audit log: who changed what, when, from where and through what (issue 13, part 7).

See docs/audit.md. ``audit.context`` knows the acting request; ``audit.recorder`` turns
model signals, the PBX apply and console commands into ``audit.models.AuditEntry`` rows.
"""
