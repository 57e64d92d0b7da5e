"""Real network parts for the networking tests: Debian's tinyproxy and a test-time PKI (trustme).

Every process is started on loopback, on a free port, in a temporary directory, and stopped by the fixture
that started it (also on failure, and on SIGTERM: the fixtures turn it into an interrupt).
"""

from __future__ import annotations

import contextlib
import re
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

TINYPROXY = shutil.which("tinyproxy") or "/usr/sbin/tinyproxy"
#: The variables a connection with ``trust_env`` reads (both cases of the proxy ones): tests clear them first,
#: so the host's own (this machine sets SSL_CERT_FILE) cannot decide an outcome.
_PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")
NETWORK_ENV_VARS = (
    *_PROXY_VARS,
    *(v.lower() for v in _PROXY_VARS),
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "REQUESTS_CA_BUNDLE",
)
START_TIMEOUT = 10.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class TinyProxy:
    """A tinyproxy on 127.0.0.1 with its config and log in ``directory``; ``auth`` = (user, password).

    ``bind``: the local address of its outgoing connections (another loopback address, e.g. 127.0.0.2), so a
    server can tell a request that came through this proxy (its peer is ``bind``) from a direct one."""

    def __init__(self, directory: Path, auth: tuple[str, str] | None = None, bind: str | None = None) -> None:
        self.directory = directory
        self.auth = auth
        self.bind = bind
        self.port = 0
        self.log_path = directory / "tinyproxy.log"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The proxy URL, with the credentials when it has some."""
        user = f"{self.auth[0]}:{self.auth[1]}@" if self.auth else ""
        return f"http://{user}127.0.0.1:{self.port}"

    @property
    def bare_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> TinyProxy:
        self.directory.mkdir(parents=True, exist_ok=True)
        for _ in range(5):  # a free port may be taken between the probe and tinyproxy's bind
            self.port = free_port()
            lines = [
                f"Port {self.port}",
                "Listen 127.0.0.1",
                "Timeout 120",
                f'LogFile "{self.log_path}"',
                "LogLevel Info",
                "MaxClients 200",
                "Allow 127.0.0.1",
                "DisableViaHeader Yes",
                # No ConnectPort line: CONNECT to any port (the emulator's is random).
            ]
            if self.auth:
                lines.append(f"BasicAuth {self.auth[0]} {self.auth[1]}")
            if self.bind:
                lines.append(f"Bind {self.bind}")
            config = self.directory / "tinyproxy.conf"
            config.write_text("\n".join(lines) + "\n")
            self.log_path.write_text("")
            self._proc = subprocess.Popen(
                [TINYPROXY, "-d", "-c", str(config)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            if self._wait_listening():
                return self
            self.stop()
        raise RuntimeError(f"tinyproxy did not start; its log:\n{self.log()[-2000:]}")

    def _wait_listening(self) -> bool:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            assert self._proc is not None
            if self._proc.poll() is not None:
                return False
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return True
            time.sleep(0.05)
        return False

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def mark(self) -> int:
        """A position in the log; :meth:`requests_since` reads what the proxy logged after it."""
        return self.log_path.stat().st_size if self.log_path.exists() else 0

    def requests_since(self, mark: int) -> list[str]:
        """The request lines (``CONNECT host:port HTTP/1.1``, ``GET http://... HTTP/1.1``) logged after ``mark``."""
        with self.log_path.open("rb") as f:
            f.seek(mark)
            text = f.read().decode(errors="replace")
        return re.findall(r"Request \(file descriptor \d+\): (.+)", text)


@dataclass(frozen=True)
class Pki:
    """PEM files of a CA made at test time, a server certificate for 127.0.0.1/localhost, a client certificate
    from a second CA (what an mTLS gateway trusts), and an unrelated CA (what must not be trusted)."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_ca: Path
    client_cert: Path
    client_key: Path
    client_combined: Path
    stranger_cert: Path
    other_ca: Path


def make_pki(directory: Path) -> Pki:
    import trustme

    directory.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA(organization_name="Runwatch Test Private CA")
    server = ca.issue_cert("127.0.0.1", "localhost", "::1")
    client_ca = trustme.CA(organization_name="Runwatch Test Client CA")
    client = client_ca.issue_cert("runwatch-worker@example.test")
    stranger = trustme.CA(organization_name="Someone Else").issue_cert("runwatch-worker@example.test")
    other = trustme.CA(organization_name="Unrelated CA")
    paths = {
        "ca": directory / "ca.pem",
        "server_cert": directory / "server.pem",
        "server_key": directory / "server.key",
        "client_ca": directory / "client-ca.pem",
        "client_cert": directory / "client.pem",
        "client_key": directory / "client.key",
        "client_combined": directory / "client-combined.pem",
        "stranger_cert": directory / "stranger-combined.pem",
        "other_ca": directory / "other-ca.pem",
    }
    ca.cert_pem.write_to_path(str(paths["ca"]))
    server.cert_chain_pems[0].write_to_path(str(paths["server_cert"]))
    for pem in server.cert_chain_pems[1:]:
        pem.write_to_path(str(paths["server_cert"]), append=True)
    server.private_key_pem.write_to_path(str(paths["server_key"]))
    client_ca.cert_pem.write_to_path(str(paths["client_ca"]))
    client.cert_chain_pems[0].write_to_path(str(paths["client_cert"]))
    client.private_key_pem.write_to_path(str(paths["client_key"]))
    client.private_key_and_cert_chain_pem.write_to_path(str(paths["client_combined"]))
    stranger.private_key_and_cert_chain_pem.write_to_path(str(paths["stranger_cert"]))
    other.cert_pem.write_to_path(str(paths["other_ca"]))
    return Pki(**paths)
