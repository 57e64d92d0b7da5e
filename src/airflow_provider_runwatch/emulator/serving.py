"""How the emulator is served: loopback checks, socket binding and the uvicorn settings (CLI and thread mode).

The emulator accepts any API key, so it must never listen beyond the loopback interface: every entry point
(``runwatch-emulator``, ``EmulatorServer``) goes through :func:`check_loopback`.
"""

from __future__ import annotations

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
        http=HTTP_IMPL,
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
