"""How a connection reaches its vendor: egress proxies, TLS trust and client certificates (sans-I/O).

The connection extras are the ones Airflow users know from the HTTP provider:

- ``proxies``: one proxy URL (``http://user:pass@proxy:3128``), or a mapping by scheme
  (``{"https": "http://proxy:3128", "http": null}``; ``all`` is accepted too). Credentials in the URL are
  allowed; they are registered as secrets and never shown (see :attr:`Proxy.display`).
- ``verify``: ``true`` (default), ``false`` (no certificate check; warned about once per connection and process),
  or the path of a CA bundle file or directory (a TLS-inspecting proxy's private CA).
- ``cert``: a client certificate (PEM with its key), or a ``[cert, key]`` pair, for mTLS egress gateways.
- ``trust_env`` (default true): read HTTPS_PROXY / HTTP_PROXY / ALL_PROXY / NO_PROXY (either case) and
  SSL_CERT_FILE / SSL_CERT_DIR as httpx does, plus REQUESTS_CA_BUNDLE (Airflow images commonly set it).

Why the environment is read here rather than by httpx (``trust_env=True``): both clients must agree, and the
lean transport has no httpx machinery. The proxy variables come from :func:`urllib.request.getproxies`, the
function httpx itself uses. NO_PROXY matching is re-implemented because httpx 0.28 turns ``10.0.0.0/8`` into
a pattern that only matches the host ``10.0.0.0`` (its patterns have no CIDR notion); the rules otherwise
follow httpx: ``*`` disables proxies, ``example.com`` matches it and its subdomains, ``.example.com`` only
subdomains, IP addresses exactly, ``host:port`` and ``scheme://host`` entries narrow the match.

TLS contexts are built once per distinct setting and shared (building one costs ~20 ms of CPU and ~1 MiB):
every trigger of a triggerer that uses the same CA and client certificate shares one context.
"""

from __future__ import annotations

import base64
import functools
import ipaddress
import json
import logging
import os
import ssl
import sys
import threading
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from airflow_provider_runwatch.core import proxy as _proxy
from airflow_provider_runwatch.core.errors import ConfigurationError

if TYPE_CHECKING:
    from airflow_provider_runwatch.core.connection import ConnectionSettings

log = logging.getLogger(__name__)

__all__ = [
    "Failure",
    "NetworkSettings",
    "Proxy",
    "TlsSettings",
    "describe_tls_failure",
    "explain_failure",
    "network_settings",
    "no_proxy_matches",
    "parse_proxy_url",
    "register_secrets",
    "ssl_context",
]

DEFAULT_PORTS = {"http": 80, "https": 443}
#: The CA variables honoured with ``trust_env``, in order of precedence (httpx's two first).
CA_ENV_VARS = ("SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE")
_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})


@dataclass(frozen=True)
class Proxy:
    """An HTTP proxy. ``url`` (with the password) is excluded from ``repr``; messages use :attr:`display`."""

    url: str = field(repr=False)
    host: str
    port: int
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    @property
    def display(self) -> str:
        """The proxy as ``http://user:***@host:port``: safe for logs and errors."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        user = f"{self.username}:***@" if self.username is not None else ""
        return f"http://{user}{host}:{self.port}"

    @property
    def authorization(self) -> str | None:
        """The ``Proxy-Authorization`` value (Basic) from the URL's credentials, or None without them."""
        if self.username is None:
            return None
        token = f"{self.username}:{self.password or ''}".encode()
        return "Basic " + base64.b64encode(token).decode("ascii")


@dataclass(frozen=True)
class TlsSettings:
    """What a TLS context depends on; hashable, so equal settings share one context (:func:`ssl_context`)."""

    verify: bool = True
    cafile: str | None = None
    capath: str | None = None
    certfile: str | None = None
    keyfile: str | None = None
    #: Where the trust came from, for messages: "the 'verify' extra", "SSL_CERT_FILE", "certifi".
    ca_source: str = "certifi"


@dataclass(frozen=True)
class NetworkSettings:
    """A connection's resolved network settings. ``proxies`` maps ``http``/``https``/``all`` to a proxy or to
    None (no proxy for that scheme); ``no_proxy`` applies to proxies from the environment only."""

    conn_label: str
    tls: TlsSettings = field(default_factory=TlsSettings)
    proxies: tuple[tuple[str, Proxy | None], ...] = ()
    no_proxy: tuple[str, ...] = ()
    #: "extra" or "environment": where the proxies came from, for messages.
    proxy_source: str = "extra"

    def proxy_for(self, scheme: str, host: str, port: int | None = None) -> Proxy | None:
        """The proxy for an origin, or None to connect directly (a pure function of the settings)."""
        by_scheme = dict(self.proxies)
        proxy = by_scheme[scheme] if scheme in by_scheme else by_scheme.get("all")
        if proxy is None:
            return None
        if self.no_proxy and no_proxy_matches(self.no_proxy, scheme, host, port or DEFAULT_PORTS.get(scheme)):
            return None
        return proxy

    def proxy_for_url(self, url: str) -> Proxy | None:
        parts = urlsplit(url)
        return self.proxy_for(parts.scheme, parts.hostname or "", parts.port)

    @property
    def secrets(self) -> tuple[str, ...]:
        """Proxy passwords (and URLs that carry them), for masking and redaction."""
        found: list[str] = []
        for _, proxy in self.proxies:
            if proxy is not None and proxy.password:
                found += [proxy.password, proxy.url]
        return tuple(found)


# -- parsing ------------------------------------------------------------------------------------------------


def _where(settings: ConnectionSettings) -> str:
    return f"{settings.vendor.display_name} connection '{settings.conn_id}'"


def parse_proxy_url(raw: str, *, where: str, source: str) -> Proxy:
    """Validate one proxy URL; ``source`` names where it came from (an extra or a variable) for the error.

    Only ``http://`` proxies are accepted: the tunnel to an https vendor is TLS end to end anyway, and TLS to
    the proxy itself (``https://``) is refused with a message rather than half-supported.
    """
    text = raw.strip()
    if "://" not in text:
        text = "http://" + text  # "proxy:3128", as httpx and curl read it
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:
        raise ConfigurationError(f"{where}: {source} is not a valid proxy URL ({exc})") from None
    host = parts.hostname
    shown = _hide_password(text)
    if parts.scheme == "https":
        raise ConfigurationError(
            f"{where}: {source} is an https:// proxy ({shown}); TLS to the proxy is not supported. Use the proxy's "
            "plain http:// address: requests to the vendor still travel in a TLS tunnel through it"
        )
    if parts.scheme != "http":
        raise ConfigurationError(
            f"{where}: {source} must be an http:// proxy URL like http://proxy.internal:3128, got {shown}"
        )
    if not host:
        raise ConfigurationError(f"{where}: {source} has no host: {shown}")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ConfigurationError(f"{where}: {source} must be scheme, host and port only, got {shown}")
    username = unquote(parts.username) if parts.username is not None else None
    password = unquote(parts.password) if parts.password is not None else None
    return Proxy(url=text, host=host, port=port or DEFAULT_PORTS["http"], username=username, password=password)


def _hide_password(url: str) -> str:
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return "<unparseable URL>"
    if not password:
        return url
    return url.replace(f":{password}@", ":***@", 1)


def _parse_bool(value: Any, *, where: str, name: str, default: bool) -> bool:
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ConfigurationError(f"{where}: extra '{name}' must be true or false, got {value!r}")


def _maybe_json(value: Any) -> Any:
    """Form fields arrive as strings; a JSON object or list typed into one is read as such."""
    if isinstance(value, str) and value.strip()[:1] in ("{", "["):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _parse_proxies(value: Any, *, where: str) -> tuple[tuple[str, Proxy | None], ...]:
    value = _maybe_json(value)
    if isinstance(value, str):
        return (("all", parse_proxy_url(value, where=where, source="extra 'proxies'")),)
    if not isinstance(value, Mapping):
        raise ConfigurationError(
            f"{where}: extra 'proxies' must be a proxy URL or a mapping by scheme like "
            f'{{"https": "http://proxy:3128"}}, got {type(value).__name__}'
        )
    result: list[tuple[str, Proxy | None]] = []
    for key, url in value.items():
        scheme = str(key).strip().lower().removesuffix("://")
        if scheme not in ("http", "https", "all"):
            raise ConfigurationError(
                f"{where}: extra 'proxies' has key {key!r}; use 'http', 'https' or 'all' (the scheme of the vendor's "
                "URL that goes through the proxy)"
            )
        if url is None or (isinstance(url, str) and not url.strip()):
            result.append((scheme, None))
            continue
        if not isinstance(url, str):
            raise ConfigurationError(f"{where}: extra 'proxies' value for {scheme!r} must be a URL string")
        result.append((scheme, parse_proxy_url(url, where=where, source=f"extra 'proxies' ({scheme})")))
    return tuple(result)


def _existing_path(value: str, *, where: str, name: str, what: str) -> str:
    path = os.path.expanduser(value.strip())
    if not os.path.exists(path):
        raise ConfigurationError(f"{where}: {name} points at {path!r}, which does not exist; give the path of {what}")
    return path


def _parse_cert(value: Any, *, where: str) -> tuple[str | None, str | None]:
    value = _maybe_json(value)
    if value is None or value == "" or value == []:
        return None, None
    what = "a PEM client certificate (with its key, or give [cert, key])"
    if isinstance(value, str):
        return _existing_path(value, where=where, name="extra 'cert'", what=what), None
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(v, str) for v in value):
        cert = _existing_path(value[0], where=where, name="extra 'cert'", what=what)
        key = _existing_path(value[1], where=where, name="extra 'cert' (key)", what="the client certificate's key")
        return cert, key
    raise ConfigurationError(f"{where}: extra 'cert' must be a path or a [cert, key] pair of paths, got {value!r}")


def _tls_settings(extras: Mapping[str, Any], *, where: str, trust_env: bool) -> TlsSettings:
    certfile, keyfile = _parse_cert(extras.get("cert"), where=where)
    raw = extras.get("verify")
    bundle: tuple[str, str] | None = None  # (where the CA bundle path came from, the path)
    if isinstance(raw, str) and raw.strip().lower() not in _TRUE | _FALSE and raw.strip():
        bundle = ("extra 'verify'", raw)
    elif not _parse_bool(raw, where=where, name="verify", default=True):
        return TlsSettings(verify=False, certfile=certfile, keyfile=keyfile, ca_source="nothing (verify is false)")
    elif trust_env:
        bundle = next(((n, os.environ[n]) for n in CA_ENV_VARS if (os.environ.get(n) or "").strip()), None)
    if bundle is None:
        return TlsSettings(certfile=certfile, keyfile=keyfile)
    source, value = bundle
    path = _existing_path(value, where=where, name=source, what="a CA bundle (PEM file or directory)")
    is_dir = os.path.isdir(path)
    return TlsSettings(
        cafile=None if is_dir else path,
        capath=path if is_dir else None,
        certfile=certfile,
        keyfile=keyfile,
        ca_source="the 'verify' extra" if source == "extra 'verify'" else source,
    )


def _environment_proxies(where: str) -> tuple[tuple[tuple[str, Proxy | None], ...], tuple[str, ...]]:
    """HTTP(S)_PROXY / ALL_PROXY / NO_PROXY, read the way httpx reads them (:func:`urllib.request.getproxies`)."""
    found = _proxy_variables()
    no_proxy = tuple(h.strip() for h in found.get("no", "").split(",") if h.strip())
    if "*" in no_proxy:
        return (), ()
    proxies = tuple(
        (scheme, parse_proxy_url(found[scheme], where=where, source=f"{scheme.upper()}_PROXY"))
        for scheme in ("http", "https", "all")
        if found.get(scheme)
    )
    return proxies, no_proxy


def _proxy_variables() -> dict[str, str]:
    """What :func:`urllib.request.getproxies` answers, worked out once per distinct set of proxy variables.

    Why: every trigger resolves its connection's network settings when it starts, and ``getproxies`` walks the
    whole environment twice, decoding every name and value: with a triggerer's environment that was a quarter
    of a trigger's start, and 5000 triggers starting together held the loop over a second longer, into the
    polls of the triggers already running. Its answer depends only on the variables whose name ends in
    ``_proxy`` (any case) and on whether ``REQUEST_METHOD`` is set; one walk over the names finds those
    (:func:`_environment_key`), and they are the cache key, so a variable set, changed or removed is seen by
    the next resolution as before. Where ``getproxies`` falls back to the system's settings when no variable
    is set (macOS, Windows), it is asked each time, as before.
    """
    variables, cgi, _ = _environment_key()
    found = _getproxies_environment(variables, cgi)
    if not found and sys.platform in ("darwin", "win32"):
        return urllib.request.getproxies()
    return dict(found)


def _environment_key() -> tuple[tuple[tuple[Any, Any], ...], bool, tuple[Any, ...]]:
    """What of the environment a connection's network settings depend on: the ``*_proxy`` variables (any
    case), whether ``REQUEST_METHOD`` is set (getproxies' CGI rule) and the :data:`CA_ENV_VARS` values.

    Read from the ``os`` module's own store of the environment (``os.environ._data``: bytes on POSIX) where
    there is one, because iterating ``os.environ`` decodes every name in a Python function call: that was
    most of a trigger's start beyond the one before the networking work (45 decodes per start on the
    benchmark machine; a triggerer has more variables). The bytes are the same variables, so they make the
    same key."""
    environ = os.environ
    raw = getattr(environ, "_data", None)
    if os.name != "posix" or not isinstance(raw, dict):  # pragma: no cover - Windows: str names, upper-cased
        variables = tuple((name, environ[name]) for name in environ if name[-6:].lower() == "_proxy")
        return variables, "REQUEST_METHOD" in environ, tuple(environ.get(name) for name in CA_ENV_VARS)
    found = tuple((n, v) for n, v in raw.items() if n[-6:].lower() == b"_proxy")
    return found, b"REQUEST_METHOD" in raw, tuple(raw.get(name) for name in _CA_ENV_BYTES)


@functools.lru_cache(maxsize=16)
def _getproxies_environment(variables: tuple[tuple[Any, Any], ...], cgi: bool) -> tuple[tuple[str, str], ...]:
    """:func:`urllib.request.getproxies_environment` for the environment that holds ``variables`` (the key
    :func:`_proxy_variables` made of it just before, in the same thread of this call)."""
    return tuple(urllib.request.getproxies_environment().items())


#: Resolved settings by what they depend on (:func:`network_settings`); bounded, as a triggerer's distinct
#: connections and environments are few.
_resolved: dict[tuple[Any, ...], NetworkSettings] = {}
_RESOLVED_MAX = 256
#: The extras the network settings read.
_NETWORK_EXTRAS = ("cert", "verify", "trust_env", "proxies")
_CA_ENV_BYTES = tuple(name.encode() for name in CA_ENV_VARS)


def network_settings(settings: ConnectionSettings) -> NetworkSettings:
    """Resolve and validate a connection's network extras (and, with ``trust_env``, the environment).

    Raises :class:`ConfigurationError` naming the connection, the extra or variable, and what to do.

    Every trigger resolves them when it starts, so the answer is shared by every resolution with the same
    connection label, the same network extras and the same proxy and CA variables (one object for all the
    triggers of a connection, not two more per trigger, and no re-parsing): any change to one of those is a
    new key, hence resolved and checked again. What a hit skips is re-checking that a CA bundle or client
    certificate file still exists; the TLS context built from it is shared by path already
    (:func:`ssl_context`). A failed resolution is not remembered. On macOS and Windows, where ``getproxies``
    may consult the system's settings, nothing is remembered.
    """
    extras = settings.extras
    key = (_where(settings), *(repr(extras.get(name)) for name in _NETWORK_EXTRAS), *_environment_key())
    net = _resolved.get(key)
    if net is not None:
        if not net.tls.verify:
            _warn_unverified(net.conn_label)  # once per connection and process, as on a first resolution
        return net
    net = _resolve(settings)
    if sys.platform not in ("darwin", "win32"):
        if len(_resolved) >= _RESOLVED_MAX:
            _resolved.clear()
        _resolved[key] = net
    return net


def _resolve(settings: ConnectionSettings) -> NetworkSettings:
    where = _where(settings)
    extras = settings.extras
    trust_env = _parse_bool(extras.get("trust_env"), where=where, name="trust_env", default=True)
    tls = _tls_settings(extras, where=where, trust_env=trust_env)
    raw = extras.get("proxies")
    if raw not in (None, "", {}):
        net = NetworkSettings(where, tls=tls, proxies=_parse_proxies(raw, where=where))
    elif trust_env:
        proxies, no_proxy = _environment_proxies(where)
        net = NetworkSettings(where, tls=tls, proxies=proxies, no_proxy=no_proxy, proxy_source="environment")
    else:
        net = NetworkSettings(where, tls=tls)
    if not tls.verify:
        _warn_unverified(where)
    return net


_warned: set[str] = set()
_warned_lock = threading.Lock()


def _warn_unverified(where: str) -> None:
    with _warned_lock:
        if where in _warned:
            return
        _warned.add(where)
    log.warning(
        "%s: extra 'verify' is false, so TLS certificates are NOT checked and anyone on the path can read the "
        "API key; point 'verify' at your CA bundle instead",
        where,
    )


def register_secrets(net: NetworkSettings) -> None:
    """Register proxy passwords with Airflow's log masker (worker side: not safe inside the triggerer's loop)."""
    secrets = net.secrets
    if not secrets:
        return
    try:
        from airflow.sdk.log import mask_secret
    except ImportError:  # pragma: no cover - very old SDKs
        return
    for secret in secrets:
        mask_secret(secret)


# -- NO_PROXY -----------------------------------------------------------------------------------------------


def no_proxy_matches(entries: tuple[str, ...], scheme: str, host: str, port: int | None) -> bool:
    """Whether an origin is exempt from the proxy by NO_PROXY ``entries`` (rules in the module docstring)."""
    name = host.strip("[]").lower().rstrip(".")
    try:
        address: ipaddress.IPv4Address | ipaddress.IPv6Address | None = ipaddress.ip_address(name)
    except ValueError:
        address = None
    for raw in entries:
        entry = raw.strip().lower()
        if entry == "*":
            return True
        if "://" in entry:
            entry_scheme, entry = entry.split("://", 1)
            if entry_scheme not in ("all", scheme):
                continue
        entry = entry.rstrip("/")
        entry_host, entry_port = _split_port(entry)
        if entry_port is not None and entry_port != port:
            continue
        if address is not None:
            if "/" in entry_host:
                try:
                    if address in ipaddress.ip_network(entry_host.strip("[]"), strict=False):
                        return True
                except ValueError:
                    pass
                continue
            try:
                if address == ipaddress.ip_address(entry_host.strip("[]")):
                    return True
            except ValueError:
                pass
            continue
        entry_host = entry_host.rstrip(".")
        if entry_host.startswith("*."):
            entry_host = entry_host[1:]
        if entry_host.startswith("."):
            if name.endswith(entry_host):
                return True
        elif entry_host and (name == entry_host or name.endswith("." + entry_host)):
            return True
    return False


def _split_port(entry: str) -> tuple[str, int | None]:
    if entry.startswith("["):  # [::1]:8080
        host, _, rest = entry[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") and rest[1:].isdigit() else None
    if entry.count(":") == 1:
        host, _, port = entry.partition(":")
        if port.isdigit():
            return host, int(port)
    return entry, None


# -- TLS ----------------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=64)
def ssl_context(tls: TlsSettings) -> ssl.SSLContext:
    """One TLS context per distinct setting, shared by every client of the process. Raises ``ssl.SSLError``
    or ``OSError`` on an unreadable bundle or certificate (callers name the connection: :func:`context_for`)."""
    if tls.verify:
        if tls.cafile is None and tls.capath is None:
            import certifi

            context = ssl.create_default_context(cafile=certifi.where())
        else:
            context = ssl.create_default_context(cafile=tls.cafile, capath=tls.capath)
    else:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if tls.certfile is not None:
        # An encrypted key would make OpenSSL prompt on the terminal; refuse instead.
        context.load_cert_chain(tls.certfile, tls.keyfile, password=_no_password)
    return context


def _no_password() -> str:
    raise ssl.SSLError("the client key is encrypted; give an unencrypted key (its file is the secret)")


def context_for(net: NetworkSettings) -> ssl.SSLContext:
    """:func:`ssl_context` for a connection, with errors that name it and the setting to fix."""
    try:
        return ssl_context(net.tls)
    except (ssl.SSLError, OSError, ValueError) as exc:
        tls = net.tls
        setting = "extra 'cert'" if tls.certfile else f"the CA bundle from {tls.ca_source}"
        if tls.certfile and tls.cafile is None and tls.capath is None:
            setting = "extra 'cert'"
        raise ConfigurationError(f"{net.conn_label}: cannot load {setting}: {type(exc).__name__}: {exc}") from None


def describe_tls_failure(text: str, net: NetworkSettings, host: str) -> str | None:
    """What to do about a TLS failure, from the error text the ssl module gave; None when it is not one.

    Pure text matching on OpenSSL's reason codes: the lean transport and httpx wrap the ``ssl`` exception in
    their own, so the text is what both paths have in common.
    """
    upper = text.upper()
    if "CERTIFICATE_VERIFY_FAILED" in upper:
        why = text.split("certificate verify failed:", 1)[-1].split("(_ssl")[0].strip(" )") or "untrusted"
        if "hostname mismatch" in text.lower() or "IP address mismatch" in text:
            return (
                f"TLS certificate of {host} does not match the host name ({why}); check the connection's host "
                "(and that no proxy answers in the vendor's place)"
            )
        return (
            f"TLS certificate of {host} is not trusted ({why}; CAs from {net.tls.ca_source}). If a TLS-inspecting "
            "proxy or a private CA signs it, set the connection extra 'verify' to that CA bundle's path (or "
            "SSL_CERT_FILE in the environment)"
        )
    if any(code in upper for code in ("CERTIFICATE_REQUIRED", "BAD_CERTIFICATE", "UNKNOWN_CA", "CERTIFICATE_UNKNOWN")):
        if net.tls.certfile is None:
            return (
                f"{host} requires a TLS client certificate; set the connection extra 'cert' to the certificate "
                "(and key) your gateway expects"
            )
        return f"{host} refused the TLS client certificate from extra 'cert' ({shorten_reason(text)})"
    if "SSL" in upper and ("WRONG_VERSION_NUMBER" in upper or "RECORD_LAYER_FAILURE" in upper):
        return f"TLS handshake with {host} failed ({shorten_reason(text)}); is the port plain http?"
    return None


def shorten_reason(text: str) -> str:
    """The ``[SSL: REASON] text`` part of an ssl error message."""
    start = text.find("[SSL")
    if start == -1:
        start = text.find("[")
    piece = text[start:] if start != -1 else text
    return piece.split("(_ssl")[0].strip()


@dataclass(frozen=True)
class Failure:
    """A network failure explained: ``kind`` "proxy" or "tls", the message, and whether a retry may help."""

    kind: str
    detail: str
    transient: bool


def _leading_status(text: str) -> int | None:
    head = text.strip().split(" ", 1)[0]
    return int(head) if head.isdigit() and len(head) == 3 else None


def explain_failure(net: NetworkSettings, exc: BaseException, url: str) -> Failure | None:
    """Proxy and TLS failures of a request to ``url`` explained the same way on every transport (the lean one
    raises :class:`~.proxy.ProxyRefused`; httpx raises ``httpx.ProxyError("407 ...")`` and plain connect
    errors); None for any other failure. A failure through a proxy always names the proxy."""
    import httpx

    parts = urlsplit(url)
    scheme, host = parts.scheme, parts.hostname or ""
    port = parts.port or DEFAULT_PORTS.get(scheme, 443)
    if isinstance(exc, _proxy.ProxyRefused):
        return Failure("proxy", str(exc), exc.transient)
    text = f"{type(exc).__name__}: {exc}"
    tls = describe_tls_failure(text, net, host)
    if tls is not None:
        return Failure("tls", tls, False)
    chosen = net.proxy_for(scheme, host, port)
    if (
        chosen is not None
        and isinstance(exc, httpx.RemoteProtocolError)
        and scheme == "https"
        and "without sending a response" in str(exc)
    ):
        # httpx's CONNECT got no answer: the proxy dropped the tunnel (the lean transport says ProxyRefused)
        return Failure("proxy", str(_proxy.dropped(chosen, host, port)), True)
    if scheme == "https" and _closed_silently(exc, text) and not isinstance(exc, httpx.ProxyError):
        # An mTLS server that refuses a certificate may close without a TLS alert (asyncio servers do): the
        # client cannot tell it from a dropped connection, so say what it may be, and keep it retryable.
        if net.tls.certfile is None:
            hint = f"if {host} requires a TLS client certificate, set the connection extra 'cert'"
        else:
            hint = f"{host} may have refused the TLS client certificate from extra 'cert'"
        return Failure(
            "hint", f"{text.rstrip(': ')}: the server closed the TLS connection without answering; {hint}", True
        )
    if chosen is None:
        return None
    if isinstance(exc, httpx.ProxyError):
        status = _leading_status(str(exc))
        if status is not None:
            refused = _proxy.refusal(status, str(exc).strip()[4:], chosen, host, port)
            return Failure("proxy", str(refused), refused.transient)
        return Failure("proxy", str(_proxy.dropped(chosen, host, port)) + f" ({text})", True)
    if isinstance(exc, httpx.ConnectTimeout) and chosen.display in str(exc):
        return Failure("proxy", str(exc), True)  # the lean transport's own words name the proxy already
    if isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout)):
        return Failure("proxy", str(_proxy.unreachable(chosen, host, port, exc)), True)
    return None


def _closed_silently(exc: BaseException, text: str) -> bool:
    import httpx

    if not isinstance(exc, (httpx.ReadError, httpx.RemoteProtocolError, httpx.ConnectError)):
        return False
    message = str(exc).strip()
    return not message or "EOF" in text or "without sending" in message or "reset by peer" in message
