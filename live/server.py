"""How ``manage.py serve`` runs daphne for the live layer.

Two additions to stock daphne, both through its public hooks (the CLI's ``server_class``
and the server's WebSocket factory):

* **A direct broadcast path.** Each WebSocket application gets, in the ASGI scope
  extension ``rayanpbx.prepared_send``, a function that writes an already-framed message
  straight to its socket. The hub frames each event once (autobahn's *prepared message*)
  and hands the same bytes to every local socket: per client that is one transport write,
  instead of five layers of ASGI send, per-socket UTF-8 encoding and framing. Under any
  other ASGI server the extension is absent and the consumer uses the standard send.
* **Close codes instead of dropped connections.** A protocol violation, such as a client
  message over the size limit, ends with a close frame carrying its RFC 6455 code (1009
  "message too big") rather than a silently dropped TCP connection.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from autobahn.websocket.protocol import PreparedMessage
from daphne.cli import CommandLineInterface
from daphne.server import Server

EXTENSION = "rayanpbx.prepared_send"

PreparedSend = Callable[[PreparedMessage], None]


def prepare(frame: str) -> PreparedMessage:
    """Frame a text message once, for sending to many sockets."""
    return PreparedMessage(frame.encode(), isBinary=False, applyMask=False, doNotCompress=True)


def _prepared_sender(protocol: Any) -> PreparedSend:
    def send(prepared: PreparedMessage) -> None:
        if protocol.state == protocol.STATE_OPEN:
            protocol.sendPreparedMessage(prepared)

    return send


class LiveServer(Server):
    """Daphne's server, with the prepared-send extension and close codes on violations."""

    def create_application(self, protocol: Any, scope: dict[str, Any]) -> Any:
        if scope.get("type") == "websocket":
            # autobahn copied the factory's options onto the protocol when the TCP
            # connection was made; this one is ours alone.
            protocol.failByDrop = False
            scope.setdefault("extensions", {})[EXTENSION] = {"send": _prepared_sender(protocol)}
        return super().create_application(protocol, scope)


class LiveCommandLineInterface(CommandLineInterface):
    server_class = LiveServer
