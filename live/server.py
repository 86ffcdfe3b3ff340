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
* **A bound per socket.** At most ``LIVE_MAX_SOCKET_BUFFER`` bytes (1 MiB) wait in
  Twisted for one socket (over TLS too: the encrypted bytes under the TLS wrapper count,
  and are handed to the kernel at once, as a plain socket's are); past it the consumer
  closes the socket with 4009 ("too slow") and the client resumes from its last ``seq``.
  A closed socket has ``LIVE_CLOSE_TIMEOUT`` seconds to read its backlog and the close
  frame before the connection is dropped.
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
from django.conf import settings
from twisted.internet import tcp
from twisted.protocols.tls import TLSMemoryBIOProtocol

EXTENSION = "rayanpbx.prepared_send"

#: Writes one framed event to a socket; False (nothing written) when the socket already
#: has more than ``LIVE_MAX_SOCKET_BUFFER`` bytes waiting: the caller closes it, 4009.
PreparedSend = Callable[[PreparedMessage], bool]


def prepare(frame: str) -> PreparedMessage:
    """Frame a text message once, for sending to many sockets."""
    return PreparedMessage(frame.encode(), isBinary=False, applyMask=False, doNotCompress=True)


def queued_bytes(transport: Any) -> int:
    """Bytes Twisted holds for a socket that the kernel has not taken yet (Twisted's
    ``FileDescriptor`` buffers; 0 for a transport without them). Under TLS (``serve`` with
    ``TLS_CERT_FILE``) the socket's transport is a TLS wrapper: what it holds before the
    handshake ends plus the encrypted bytes waiting in the TCP transport beneath it."""
    total = 0
    while isinstance(transport, TLSMemoryBIOProtocol):
        total += sum(len(chunk) for chunk in getattr(transport, "_appSendBuffer", ()))
        transport = transport.transport
    buffered = len(getattr(transport, "dataBuffer", b"")) - getattr(transport, "offset", 0)
    return total + buffered + getattr(transport, "_tempDataLen", 0)


def _prepared_sender(protocol: Any, limit: int) -> PreparedSend:
    def send(prepared: PreparedMessage) -> bool:
        if protocol.state != protocol.STATE_OPEN:
            return True  # closing: the consumer learns it from the disconnect
        transport = protocol.transport
        if isinstance(transport, TLSMemoryBIOProtocol):
            _push_tls(transport)  # what the kernel takes is not waiting
            if queued_bytes(transport) + len(prepared.payloadHybi) > limit:
                return False  # a client that does not read: bounded, and told (4009)
            protocol.sendPreparedMessage(prepared)  # encrypted into the TCP transport's buffer
            _push_tls(transport)
            return True
        if not _idle_tcp(transport, protocol):
            if queued_bytes(transport) + len(prepared.payloadHybi) > limit:
                return False  # a client that does not read: bounded, and told (4009)
            protocol.sendPreparedMessage(prepared)  # queued behind what is already waiting
            return True
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
        return True

    return send


def _push_tls(transport: TLSMemoryBIOProtocol) -> None:
    """Under TLS, hand the encrypted bytes Twisted holds for a socket to the kernel now,
    as the reactor would at its next turn. Without this a burst written in one turn (the
    hub writes every frame that arrived at once) piles up in Twisted's buffer before any of
    it reaches the kernel, and a client reading at full speed would pass the bound and be
    closed 4009; with it a TLS socket is bounded like a plain one (by what it leaves unread).
    """
    inner = transport.transport
    if (
        type(inner) is tcp.Server
        and inner.connected
        and not inner.disconnecting
        and (len(inner.dataBuffer) > inner.offset or inner._tempDataLen)
    ):
        # An error comes back as a value, not raised: ignored here on purpose, since the
        # transport is still registered for writing and the reactor's own doWrite gets the
        # same error at its next turn and closes the connection.
        inner.doWrite()


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
        from rayanpbx import background

        tasks = background.for_channels([background.SERVER])
        if not settings.REDIS_URL:  # with Redis, `runworker` runs them
            tasks += background.embedded()
        self.background_tasks = background.start(tasks)

    def create_application(self, protocol: Any, scope: dict[str, Any]) -> Any:
        if scope.get("type") == "websocket":
            # autobahn copied the factory's options onto the protocol when the TCP
            # connection was made; this one is ours alone.
            protocol.failByDrop = False
            # Time for a slow socket to read its backlog and the close frame (4009) before
            # the connection is dropped; autobahn's default is 1 s.
            protocol.closeHandshakeTimeout = settings.LIVE_CLOSE_TIMEOUT
            sender = _prepared_sender(protocol, settings.LIVE_MAX_SOCKET_BUFFER)
            scope.setdefault("extensions", {})[EXTENSION] = {"send": sender}
            protocol.onOpen = _forget_handshake(protocol, protocol.onOpen)
            protocol.handle_reply = _close_with_reason(protocol, protocol.handle_reply)
        return super().create_application(protocol, scope)


def _close_with_reason(protocol: Any, handle_reply: Callable[[dict[str, Any]], None]) -> Callable[..., None]:
    """Daphne drops a ``websocket.close`` message's ``reason``; a refused socket's reason is
    what its page shows (``live.limits``): send it in the close frame (at most 123 bytes)."""

    def handle(message: dict[str, Any]) -> None:
        reason = message.get("reason") if message.get("type") == "websocket.close" else None
        if reason and protocol.state == protocol.STATE_OPEN:
            text = str(reason).encode()[:123].decode(errors="ignore")
            protocol.sendClose(code=message.get("code") or 1000, reason=text)
            return
        handle_reply(message)

    return handle


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
