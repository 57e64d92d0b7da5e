"""How the emulator is served: loopback checks, socket binding and the uvicorn settings (CLI and thread mode).

The emulator accepts any API key, so it must never listen beyond the loopback interface: every entry point
(``runwatch-emulator``, ``EmulatorServer``) goes through :func:`check_loopback`.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import uvicorn

__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "HTTP_IMPL",
    "LISTENING_PREFIX",
    "TRICKLE_HEAD_HEADER",
    "HeadTrickle",
    "TlsFiles",
    "bind_socket",
    "check_loopback",
    "is_loopback_host",
    "make_config",
    "origin",
]

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
LISTENING_PREFIX = "runwatch-emulator listening on "


def _http_impl() -> str:
    """httptools when importable: it nearly doubles the status polls one core can answer.

    Measured with 50 keep-alive pollers against one emulator core: h11 about 2,500 polls/s, httptools about
    4,800 polls/s (both CPU-bound in the server). Both ship with uvicorn's standard extras, h11 always.
    """
    try:
        import httptools  # noqa: F401
    except ImportError:
        return "h11"
    return "httptools"


HTTP_IMPL = _http_impl()


def is_loopback_host(host: str) -> bool:
    """True for ``localhost``, 127.0.0.0/8 and ::1 (brackets allowed), False for anything else."""
    name = host.strip()
    if name.startswith("[") and name.endswith("]"):
        name = name[1:-1]
    if name.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def check_loopback(host: str) -> None:
    """Raise ValueError with a one-line reason unless ``host`` is loopback."""
    if not is_loopback_host(host):
        raise ValueError(
            f"refusing to listen on {host!r}: the emulator accepts any API key, so only loopback hosts "
            "(127.0.0.0/8, ::1, localhost) are allowed"
        )


def bind_socket(host: str, port: int) -> socket.socket:
    """A bound (not yet listening) TCP socket; ``port=0`` lets the kernel pick a free port.

    Binding ourselves, rather than letting uvicorn do it, is what makes port 0 usable: the real port is known
    before uvicorn starts, and uvicorn serves the socket as given.
    """
    check_loopback(host)
    name = host.strip().strip("[]")
    if name.lower() == "localhost":
        name = "127.0.0.1"
    family = socket.AF_INET6 if ":" in name else socket.AF_INET
    # proto=IPPROTO_TCP matters: asyncio only sets TCP_NODELAY on accepted sockets whose proto says TCP, and
    # without it Nagle plus delayed ACKs add ~40 ms to every response (measured: 44 ms -> <1 ms per poll).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((name, port))
    except BaseException:
        sock.close()
        raise
    return sock


@dataclass(frozen=True)
class TlsFiles:
    """Serve over https: the server's certificate and key (PEM), and optionally the CA that client certificates
    must chain to; ``require_client_cert`` makes the handshake fail without one (an mTLS gateway's behaviour)."""

    certfile: str
    keyfile: str
    ca_certs: str | None = None
    require_client_cert: bool = False

    def args(self) -> list[str]:
        """The same settings as ``runwatch-emulator`` options."""
        args = ["--ssl-certfile", self.certfile, "--ssl-keyfile", self.keyfile]
        if self.ca_certs:
            args += ["--ssl-ca-certs", self.ca_certs]
        if self.require_client_cert:
            args.append("--ssl-require-client-cert")
        return args


def origin(sock: socket.socket, tls: bool = False) -> str:
    """``http://HOST:PORT`` (``https://`` when served with TLS) of a bound socket (IPv6 hosts in brackets)."""
    address: Any = sock.getsockname()
    host, port = address[0], address[1]
    if ":" in host:
        host = f"[{host}]"
    return f"{'https' if tls else 'http'}://{host}:{port}"


def _tls_kwargs(tls: TlsFiles | None) -> dict[str, Any]:
    if tls is None:
        return {}
    import ssl

    kwargs: dict[str, Any] = {"ssl_certfile": tls.certfile, "ssl_keyfile": tls.keyfile}
    if tls.ca_certs:
        kwargs["ssl_ca_certs"] = tls.ca_certs
        kwargs["ssl_cert_reqs"] = ssl.CERT_REQUIRED if tls.require_client_cert else ssl.CERT_OPTIONAL
    return kwargs


def make_config(app: Any, log_level: str = "warning", tls: TlsFiles | None = None) -> uvicorn.Config:
    """uvicorn settings for the emulator: no access log, no lifespan, asyncio loop, no websockets.

    ``log_config=None`` keeps uvicorn from installing its own handlers (its access logger would write to
    stdout, which must carry only the "listening" line). Keep-alive is long so pollers that reuse a
    connection every few seconds never race the server closing it. No proxy headers: the request log's
    ``peer`` is the TCP peer, never an address a client wrote into X-Forwarded-For.
    """
    import uvicorn

    return uvicorn.Config(
        app,
        loop="asyncio",
        http=_head_trickling_protocol(),
        ws="none",
        lifespan="off",
        access_log=False,
        log_config=None,
        log_level=log_level,
        server_header=False,
        proxy_headers=False,
        timeout_keep_alive=65,
        timeout_graceful_shutdown=3,
        backlog=4096,
        **_tls_kwargs(tls),
    )


#: A response head carrying this header (its value: seconds between bytes) leaves the server one byte at a time
#: (the ``trickle_head`` scenario). An ASGI app hands the server its head whole, so the connection does it.
TRICKLE_HEAD_HEADER = b"x-emulator-trickle-head"


class HeadTrickle:
    """A connection's transport as uvicorn's HTTP protocol sees it: a head marked with
    :data:`TRICKLE_HEAD_HEADER` goes out one byte every so many seconds, and what the protocol writes meanwhile
    (the body, a close) waits behind it. Everything else passes straight through."""

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        self._behind: list[bytes] | None = None  # written while a head trickles
        self._close = False
        self._task: asyncio.Task[None] | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)

    def write(self, data: bytes) -> None:
        if self._behind is not None:
            self._behind.append(bytes(data))
        elif data[:5] == b"HTTP/" and TRICKLE_HEAD_HEADER in data:
            self._behind = []
            self._task = asyncio.get_running_loop().create_task(self._trickle(bytes(data)))
        else:
            self._transport.write(data)

    def close(self) -> None:
        if self._behind is not None:
            self._close = True
        else:
            self._transport.close()

    async def _trickle(self, data: bytes) -> None:
        head, _, rest = data.partition(b"\r\n\r\n")
        head += b"\r\n\r\n"
        start = head.index(TRICKLE_HEAD_HEADER) + len(TRICKLE_HEAD_HEADER) + 1
        interval = float(head[start : head.index(b"\r\n", start)].strip())
        transport = self._transport
        for index in range(len(head)):
            if transport.is_closing():
                break
            transport.write(head[index : index + 1])
            await asyncio.sleep(interval)
        behind, self._behind = self._behind or [], None
        if not transport.is_closing():
            transport.writelines([rest, *behind])
        if self._close:
            transport.close()


def _head_trickling_protocol() -> type[asyncio.Protocol]:
    """uvicorn's HTTP protocol (:data:`HTTP_IMPL`) on a :class:`HeadTrickle` of each connection's transport."""
    from uvicorn.config import HTTP_PROTOCOLS
    from uvicorn.importer import import_from_string

    base: type[asyncio.Protocol] = import_from_string(HTTP_PROTOCOLS[HTTP_IMPL])

    class HeadTricklingProtocol(base):  # type: ignore[valid-type,misc]
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            super().connection_made(HeadTrickle(transport))  # type: ignore[arg-type]

    return HeadTricklingProtocol
