"""Live events: model changes become ordered events, and events become WebSocket frames.

Domain apps only *declare* what they broadcast (``live.broadcasts.register``). Everything
else lives here, once: signal handlers and the per-transaction outbox (``outbox``), the
single publisher that numbers and stores events (``bus``), the per-process fan-out to
sockets (``hub``), the WebSocket consumer (``consumers``) and the database poller that
catches changes made outside Django (``poller``).
"""
