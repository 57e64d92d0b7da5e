"""``runwatch-emulator`` / ``python -m airflow_provider_runwatch.emulator``: serve the emulator on loopback.

Once the socket is bound and uvicorn is serving, exactly one line goes to stdout (and is flushed):
``runwatch-emulator listening on http://HOST:PORT``. Scripts and :class:`EmulatorServer` wait for that line
instead of polling a port. Logs go to stderr.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from typing import TYPE_CHECKING, Any

from airflow_provider_runwatch.emulator.clock import SPEED_ENV, parse_speed, speed_from_env
from airflow_provider_runwatch.emulator.scenario import ScenarioError, parse_spec
from airflow_provider_runwatch.emulator.serving import (
    DEFAULT_HOST,
    DEFAULT_PORT,
    LISTENING_PREFIX,
    TlsFiles,
    bind_socket,
    check_loopback,
    make_config,
    origin,
)

if TYPE_CHECKING:
    import socket
    from collections.abc import Sequence

__all__ = ["build_parser", "main"]

PROG = "runwatch-emulator"
LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Local emulator of the Gumloop, GloriaMundo and Puffle agent-run APIs (loopback only).",
    )
    parser.add_argument("--host", default=DEFAULT_HOST, help="loopback address to bind (default %(default)s)")
    parser.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help="port (default %(default)s; 0 picks a free port)"
    )
    parser.add_argument(
        "--scenario",
        default=None,
        help="default scenario for runs whose start request has none, e.g. 'polls=3 outcome=failed'",
    )
    parser.add_argument(
        "--speed",
        default=None,
        help=f"run the emulator's clock N times faster (run durations, rate windows; default ${SPEED_ENV} or 1)",
    )
    parser.add_argument(
        "--puffle-concurrency",
        type=int,
        default=None,
        help="unfinished Puffle chat runs per key before starts get 429 with Retry-After (default: unlimited)",
    )
    parser.add_argument("--log-level", default="warning", choices=LOG_LEVELS, help="default %(default)s")
    tls = parser.add_argument_group("TLS (serve https; the listening line then says https://)")
    tls.add_argument("--ssl-certfile", default=None, help="server certificate (PEM)")
    tls.add_argument("--ssl-keyfile", default=None, help="server key (PEM)")
    tls.add_argument("--ssl-ca-certs", default=None, help="CA bundle that client certificates must chain to")
    tls.add_argument(
        "--ssl-require-client-cert",
        action="store_true",
        help="refuse clients without a certificate (needs --ssl-ca-certs)",
    )
    # Internal (EmulatorServer): exit when stdin closes, so the child dies with its parent even on SIGKILL.
    parser.add_argument("--exit-with-stdin", action="store_true", help=argparse.SUPPRESS)
    return parser


def _fail(message: str) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr, flush=True)
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    """Run the emulator until SIGINT/SIGTERM; return the process exit code (2 for bad arguments)."""
    parser = build_parser()
    try:
        args = parser.parse_args(None if argv is None else list(argv))
    except SystemExit as exc:  # argparse already printed the reason
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)

    try:
        check_loopback(args.host)
    except ValueError as exc:
        return _fail(str(exc))
    if not 0 <= args.port <= 65535:
        return _fail(f"invalid port {args.port}")
    try:
        default_scenario = parse_spec(args.scenario)
    except ScenarioError as exc:
        return _fail(f"--scenario: {exc}")
    try:
        speed = speed_from_env() if args.speed is None else parse_speed(args.speed)
    except ValueError as exc:
        return _fail(str(exc) if args.speed is None else f"--speed: {exc}")
    if args.puffle_concurrency is not None and args.puffle_concurrency < 1:
        return _fail("--puffle-concurrency must be a positive integer")
    tls_files: TlsFiles | None = None
    if args.ssl_certfile or args.ssl_keyfile:
        if not (args.ssl_certfile and args.ssl_keyfile):
            return _fail("--ssl-certfile and --ssl-keyfile go together")
        tls_files = TlsFiles(args.ssl_certfile, args.ssl_keyfile, args.ssl_ca_certs, args.ssl_require_client_cert)
    if args.ssl_require_client_cert and not args.ssl_ca_certs:
        return _fail("--ssl-require-client-cert needs --ssl-ca-certs (the CA client certificates chain to)")
    try:
        sock = bind_socket(args.host, args.port)
    except OSError as exc:
        print(f"{PROG}: error: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr, flush=True)
        return 1

    _raise_open_files_limit()
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.DEBUG if args.log_level == "trace" else args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )

    # Imported late: argument errors must stay instant, and the app pulls in Starlette and uvicorn.
    import uvicorn

    from airflow_provider_runwatch.emulator.app import create_app
    from airflow_provider_runwatch.emulator.state import EmulatorState

    app = create_app(
        EmulatorState(default_scenario=default_scenario, speed=speed, puffle_concurrency=args.puffle_concurrency)
    )
    line = LISTENING_PREFIX + origin(sock, tls=tls_files is not None)

    class _AnnouncingServer(uvicorn.Server):
        """Prints the listening line only once uvicorn really serves the socket."""

        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets=sockets)
            if self.started:
                print(line, flush=True)

    server = _AnnouncingServer(make_config(app, args.log_level, tls_files))
    if args.exit_with_stdin:
        _exit_when_stdin_closes(server)

    # uvicorn re-raises the signal that stopped it once it has shut down; exit 0 on SIGTERM instead of dying.
    def _exit_cleanly(signum: int, frame: Any) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, _exit_cleanly)
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:
        pass
    finally:
        sock.close()
    return 0


def _exit_when_stdin_closes(server: Any) -> None:
    """Stop serving once stdin reaches EOF, i.e. when the parent closed its end or died.

    ``os.read`` on the raw descriptor, not ``sys.stdin.buffer``: a daemon thread blocked inside a buffered
    reader makes interpreter shutdown abort ("could not acquire lock ... at interpreter shutdown").
    """
    fd = sys.stdin.fileno()

    def watch() -> None:
        try:
            while os.read(fd, 65536):
                pass
        except OSError:
            pass
        server.should_exit = True

    threading.Thread(target=watch, name="runwatch-emulator-stdin", daemon=True).start()


def _raise_open_files_limit() -> None:
    """Lift the soft open-files limit to the hard one: a benchmark may hold thousands of keep-alive pollers,
    and the common soft default (1024) would make the emulator refuse connections long before its CPU is busy.
    """
    try:
        import resource
    except ImportError:  # not POSIX
        return
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
        if soft != resource.RLIM_INFINITY and soft < target:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (OSError, ValueError):
        pass
