"""How ``manage.py serve`` runs daphne for the live layer.

Two additions to stock daphne, both through its public hooks (the CLI's ``server_class``
and the server's WebSocket factory):

* **A direct broadcast path.** Each WebSocket application gets, in the ASGI scope
  extension ``rayanpbx.prepared_send``, a function that writes an already-framed message
  straight to its socket. The hub frames each event once (autobahn's *prepared message*)
  and hands the same bytes to every local socket: per client that is one ``send`` system
  call when nothing is queued for the socket, instead of five layers of ASGI send,
  per-socket UTF-8 encoding and framing, and Twisted's deferred, epoll-registered write. Under any
  other ASGI server the extension is absent and the consumer uses the standard send.
* **Lean open sockets.** The handshake's raw bytes and headers are dropped once a socket
  is open.
* **Background work in the embedded default.** Without Redis there is no worker process:
  the server runs the background tasks marked ``embedded`` (``rayanpbx.background``, e.g.
  the PBX link) on its own event loop from the moment it starts.
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
from twisted.internet import tcp

EXTENSION = "rayanpbx.prepared_send"

PreparedSend = Callable[[PreparedMessage], None]


def prepare(frame: str) -> PreparedMessage:
    """Frame a text message once, for sending to many sockets."""
    return PreparedMessage(frame.encode(), isBinary=False, applyMask=False, doNotCompress=True)


def _prepared_sender(protocol: Any) -> PreparedSend:
    def send(prepared: PreparedMessage) -> None:
        if protocol.state != protocol.STATE_OPEN:
            return
        transport = protocol.transport
        if not _idle_tcp(transport, protocol):
            protocol.sendPreparedMessage(prepared)  # queued behind what is already waiting
            return
        # Nothing is waiting for this socket: send now. Twisted would otherwise buffer the
        # bytes until the loop turns, then register and unregister the socket with epoll
        # around the send: two system calls more per socket per event. What the kernel does
        # not take goes through Twisted's buffer, still in order.
        data = prepared.payloadHybi
        try:
            sent = transport.socket.send(data)
        except BlockingIOError:
            sent = 0
        except OSError:
            protocol.sendPreparedMessage(prepared)  # let Twisted see and handle the error
            return
        if sent < len(data):
            transport.write(data[sent:])

    return send


def _idle_tcp(transport: Any, protocol: Any) -> bool:
    """A plain TCP transport with nothing queued in Twisted or autobahn (relies on Twisted's
    ``tcp.Connection`` buffers, pinned in requirements.txt and exercised by the tests)."""
    return (
        type(transport) is tcp.Server
        and transport.connected
        and not transport.disconnecting
        and not transport.dataBuffer
        and not transport._tempDataBuffer
        and not protocol.send_queue
    )


class _RequestPath:
    """What daphne still reads of the handshake request once the socket is open (its path,
    for the disconnect log line): the rest is dropped, see ``LiveServer``."""

    __slots__ = ("path",)

    def __init__(self, path: str) -> None:
        self.path = path


class LiveServer(Server):
    """Daphne's server, with the prepared-send extension and close codes on violations."""

    def run(self) -> None:
        from twisted.internet import reactor

        reactor.callWhenRunning(self._start_background)
        super().run()

    def _start_background(self) -> None:
        from django.conf import settings

        from rayanpbx import background

        if not settings.REDIS_URL:  # with Redis, `runworker` runs them
            self.background_tasks = background.start(background.embedded())

    def create_application(self, protocol: Any, scope: dict[str, Any]) -> Any:
        if scope.get("type") == "websocket":
            # autobahn copied the factory's options onto the protocol when the TCP
            # connection was made; this one is ours alone.
            protocol.failByDrop = False
            scope.setdefault("extensions", {})[EXTENSION] = {"send": _prepared_sender(protocol)}
            protocol.onOpen = _forget_handshake(protocol, protocol.onOpen)
        return super().create_application(protocol, scope)


def _forget_handshake(protocol: Any, on_open: Callable[[], None]) -> Callable[[], None]:
    """Once open, drop the handshake's raw bytes and parsed headers (four copies of them,
    tokens included), about 1.8 KiB per socket for its whole life."""

    def forget() -> None:
        on_open()
        protocol.http_request_data = b""
        protocol.http_headers = {}
        protocol.websocket_protocols = []
        protocol.request = _RequestPath(protocol.request.path)

    return forget


class LiveCommandLineInterface(CommandLineInterface):
    server_class = LiveServer
