"""Proxy tunnels, sans-I/O: the CONNECT request and the reading of the proxy's answer.

The lean transport does the I/O (:mod:`airflow_provider_runwatch.core.transport`); this module only builds
bytes and judges answers, so each outcome is unit-tested without sockets. Errors name the proxy by
:attr:`~airflow_provider_runwatch.core.network.Proxy.display` (never its password) and the origin.

Transient or permanent: a 5xx from the proxy (502/503/504: it could not reach the origin, or is overloaded),
a refused or dropped connection to the proxy are transient; 407 (credentials), 403 (the proxy's policy
forbids the origin) and other 4xx are permanent, a retry would only repeat them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import httpx

if TYPE_CHECKING:
    from airflow_provider_runwatch.core.network import Proxy

__all__ = ["MAX_ANSWER_BYTES", "ProxyRefused", "connect_request", "origin_label", "parse_connect_answer", "refusal"]

#: A proxy's answer to CONNECT is a status line and a few headers; more than this is not a proxy talking.
MAX_ANSWER_BYTES = 64 * 1024


class ProxyRefused(httpx.ProxyError):
    """The proxy did not open the tunnel (or dropped it). ``transient`` says whether a retry may help;
    ``status`` is the proxy's HTTP status, None when it gave none."""

    def __init__(self, message: str, *, transient: bool, status: int | None = None) -> None:
        super().__init__(message)
        self.transient = transient
        self.status = status


def origin_label(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def connect_request(proxy: Proxy, host: str, port: int) -> bytes:
    """``CONNECT host:port`` with ``Proxy-Authorization`` when the proxy URL carries credentials."""
    target = origin_label(host, port).encode("ascii")
    lines = [b"CONNECT " + target + b" HTTP/1.1", b"Host: " + target]
    authorization = proxy.authorization
    if authorization is not None:
        lines.append(b"Proxy-Authorization: " + authorization.encode("ascii"))
    return b"\r\n".join(lines) + b"\r\n\r\n"


def answer_complete(buffer: bytes) -> int:
    """The length of the answer's head once it is complete in ``buffer`` (0 while incomplete)."""
    end = buffer.find(b"\r\n\r\n")
    return end + 4 if end != -1 else 0


def parse_connect_answer(head: bytes, proxy: Proxy, host: str, port: int) -> None:
    """Return when the proxy opened the tunnel (2xx); raise :class:`ProxyRefused` saying why otherwise."""
    status_line = head.split(b"\r\n", 1)[0].decode("latin-1").strip()
    parts = status_line.split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        raise ProxyRefused(
            f"proxy {proxy.display} did not open a tunnel to {origin_label(host, port)}: not an HTTP answer "
            f"({status_line[:80]!r})",
            transient=False,
        )
    status = int(parts[1])
    if not 200 <= status < 300:
        raise refusal(status, parts[2] if len(parts) > 2 else "", proxy, host, port)


def refusal(status: int, reason: str, proxy: Proxy, host: str, port: int) -> ProxyRefused:
    """The error for a proxy that answered CONNECT with ``status`` (both transports' answers end here)."""
    where = f"proxy {proxy.display} did not open a tunnel to {origin_label(host, port)}"
    said = f"{status} {reason}".strip()
    if status in (401, 407):  # tinyproxy answers 401 to wrong credentials, 407 to none
        fix = (
            "the proxy rejected the credentials in the proxy URL; check user and password"
            if proxy.username is not None
            else "the proxy requires credentials; put them in the proxy URL (http://user:password@host:port)"
        )
        return ProxyRefused(f"{where} ({said}): {fix}", transient=False, status=status)
    if status == 403:
        return ProxyRefused(
            f"{where} ({said}): the proxy's policy forbids this destination; ask its operators to allow it",
            transient=False,
            status=status,
        )
    # 5xx: the proxy failed (tinyproxy answers 500 when it cannot reach the origin); other 4xx: its refusal.
    transient = status >= 500
    hint = "; the proxy could not reach the vendor or is overloaded" if transient else ""
    return ProxyRefused(f"{where} ({said}){hint}", transient=transient, status=status)


def unreachable(proxy: Proxy, host: str, port: int, exc: BaseException) -> ProxyRefused:
    """The proxy could not be reached (refused, reset, timed out): transient."""
    return ProxyRefused(
        f"proxy {proxy.display} is unreachable (on the way to {origin_label(host, port)}): {type(exc).__name__}: {exc}",
        transient=True,
    )


def dropped(proxy: Proxy, host: str, port: int) -> ProxyRefused:
    """The proxy closed the connection before answering CONNECT: transient."""
    return ProxyRefused(
        f"proxy {proxy.display} closed the connection before opening a tunnel to {origin_label(host, port)}",
        transient=True,
    )
