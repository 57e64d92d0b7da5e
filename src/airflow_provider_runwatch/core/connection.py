"""Turn an Airflow connection into the settings an API client needs, and check them early.

Host is the API base URL exactly as the vendor documents it (the vendor default when empty),
``https`` only, except ``http`` for loopback hosts so a local emulator works. Password is the API key.
Extras stay a plain dict for vendor-specific options.
"""

from __future__ import annotations

import functools
import ipaddress
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from airflow_provider_runwatch.core.errors import ConfigurationError

if TYPE_CHECKING:
    from airflow.sdk import Connection

    from airflow_provider_runwatch.core.network import NetworkSettings


@dataclass(frozen=True)
class VendorSpec:
    """What the shared core needs to know about a vendor: its names and where its API lives."""

    name: str
    display_name: str
    conn_type: str
    default_conn_id: str
    default_base_url: str
    #: Link to the vendor's console for a run, when one can be built from the run id (``{run_id}``).
    run_url_template: str | None = None


@dataclass(frozen=True)
class ConnectionSettings:
    """Resolved, validated connection values. ``api_key`` is excluded from ``repr`` on purpose."""

    vendor: VendorSpec
    conn_id: str
    base_url: str
    api_key: str = field(repr=False)
    login: str | None = None
    extras: Mapping[str, Any] = field(default_factory=dict)

    @functools.cached_property
    def network(self) -> NetworkSettings:
        """Proxies, TLS trust and client certificate (core/network.py), resolved and checked once."""
        from airflow_provider_runwatch.core.network import network_settings

        return network_settings(self)

    @property
    def secrets(self) -> tuple[str, ...]:
        """Everything to keep out of text: the API key and the proxy passwords."""
        return (self.api_key, *self.network.secrets)

    def extra_str(self, name: str) -> str | None:
        """An extra as a stripped string, ``None`` when absent or blank."""
        value = self.extras.get(name)
        if value is None:
            return None
        text = str(value).strip()
        return text or None

    def extra_float(self, name: str, default: float) -> float:
        """A numeric extra with a default; a non-number is a configuration error that names the field."""
        value = self.extras.get(name)
        if value in (None, ""):
            return default
        try:
            return float(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise ConfigurationError(
                f"{self.vendor.display_name} connection '{self.conn_id}': extra '{name}' must be a number, "
                f"got {value!r}"
            ) from None


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def normalize_base_url(raw: str | None, vendor: VendorSpec, conn_id: str) -> str:
    """Validate the host field and return a base URL without a trailing slash.

    A bare host name (``api.example.com``) gets ``https://``; ``http://`` is refused unless the host is
    loopback, so a typo can never send an API key in clear text across a network.
    """
    url = (raw or "").strip() or vendor.default_base_url
    if "://" not in url:
        url = "https://" + url
    parts = urlsplit(url)
    where = f"{vendor.display_name} connection '{conn_id}'"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigurationError(f"{where}: host must be an http(s) URL like {vendor.default_base_url}, got {url!r}")
    if parts.scheme == "http" and not _is_loopback(parts.hostname):
        raise ConfigurationError(
            f"{where}: plain http is only allowed for loopback hosts (a local emulator); use https:// for "
            f"{parts.hostname}"
        )
    if parts.query or parts.fragment:
        raise ConfigurationError(f"{where}: host must not contain a query or fragment: {url!r}")
    return url.rstrip("/")


def parse_extras(extra: str | Mapping[str, Any] | None, vendor: VendorSpec, conn_id: str) -> dict[str, Any]:
    """Parse the connection's extra without Airflow's ``extra_dejson`` (it calls ``mask_secret``, which
    can raise inside the triggerer's running event loop)."""
    if not extra:
        return {}
    if isinstance(extra, Mapping):
        return dict(extra)
    try:
        value = json.loads(extra)
    except ValueError:
        raise ConfigurationError(f"{vendor.display_name} connection '{conn_id}': extra is not valid JSON") from None
    if not isinstance(value, dict):
        raise ConfigurationError(f"{vendor.display_name} connection '{conn_id}': extra must be a JSON object")
    return value


def _host_from_parts(host: str | None, port: int | None, schema: str | None) -> str | None:
    """Rebuild a URL from a URI-style connection (``puffle://:KEY@127.0.0.1:8765/api``), where Airflow
    splits host, port and path (``schema``). A full URL in the host field is used as it is."""
    host = (host or "").strip()
    if not host or "://" in host:
        return host or None
    scheme = "http" if _is_loopback(host) else "https"
    url = f"{scheme}://{host}"
    if port:
        url += f":{port}"
    if schema:
        url += "/" + schema.strip("/")
    return url


def settings_from_connection(conn: Connection, vendor: VendorSpec) -> ConnectionSettings:
    """Build :class:`ConnectionSettings`, failing with a message that names the connection and field."""
    conn_id = conn.conn_id or vendor.default_conn_id
    key = (conn.password or "").strip()
    if not key:
        raise ConfigurationError(
            f"{vendor.display_name} connection '{conn_id}' has no API key: put it in the Password field"
        )
    host = _host_from_parts(conn.host, conn.port, conn.schema)
    return ConnectionSettings(
        vendor=vendor,
        conn_id=conn_id,
        base_url=normalize_base_url(host, vendor, conn_id),
        api_key=key,
        login=(conn.login or "").strip() or None,
        extras=parse_extras(conn.extra, vendor, conn_id),
    )
