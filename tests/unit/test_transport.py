"""The lean transport (core/transport.py) and the AsyncApiClient paths over it, against a scripted loopback server.

The server answers each request with whatever the test's ``reply`` function returns (raw bytes, so framing
edge cases can be written out), or closes the connection when it returns ``None``.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import ssl
import tempfile
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import httpx
import pytest
import trustme

from airflow_provider_runwatch.core import shared_transport
from airflow_provider_runwatch.core import transport as lean
from airflow_provider_runwatch.core.connection import ConnectionSettings
from airflow_provider_runwatch.core.errors import (
    ClientError,
    NotFoundError,
    RateLimitedError,
    ResponseTooLargeError,
    TlsError,
    TransportError,
)
from airflow_provider_runwatch.core.http import ApiRequest, AsyncApiClient, ClientOptions
from airflow_provider_runwatch.vendors.puffle import PUFFLE
from tests.helpers import NO_RETRY

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(not lean.AVAILABLE, reason="httptools is not installed"),
]

GET = ApiRequest("GET", "/api/agent/chat/run_1", "GET /api/agent/chat/{runId}")
POST = ApiRequest("POST", "/api/agent/chat", "POST /api/agent/chat", json={"message": "hi"})


def ok(body: bytes = b'{"runId": "run_1", "status": "running"}', *, extra: str = "") -> bytes:
    return (
        f"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n{extra}\r\n".encode()
        + body
    )


@dataclass
class Server:
    reply: Callable[[bytes, int], bytes | None]
    port: int = 0
    requests: list[bytes] = field(default_factory=list)
    connections: int = 0
    delay: float = 0.0
    close_after: bool = False
    #: Write the answer's head, then its body this many seconds later (as uvicorn writes them apart).
    split: float = 0.0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                request = head + (await reader.readexactly(length) if length else b"")
                self.requests.append(request)
                answer = self.reply(request, len(self.requests))
                if self.delay:
                    await asyncio.sleep(self.delay)
                if answer is None:
                    break
                if self.split:
                    head_end = answer.index(b"\r\n\r\n") + 4
                    writer.write(answer[:head_end])
                    await writer.drain()
                    await asyncio.sleep(self.split)
                    answer = answer[head_end:]
                writer.write(answer)
                await writer.drain()
                if self.close_after:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@asynccontextmanager
async def serve(
    reply: Callable[[bytes, int], bytes | None], *, tls: ssl.SSLContext | None = None
) -> AsyncIterator[Server]:
    server = Server(reply)
    listener = await asyncio.start_server(server.handle, "127.0.0.1", 0, ssl=tls)
    server.port = listener.sockets[0].getsockname()[1]
    try:
        yield server
    finally:
        listener.close()


def client_for(server: Server, **options: object) -> AsyncApiClient:
    settings = ConnectionSettings(
        vendor=PUFFLE, conn_id="puffle_default", base_url=f"http://127.0.0.1:{server.port}", api_key="pk_test"
    )
    opts = ClientOptions(headers={"Authorization": "Bearer pk_test"}, retry=NO_RETRY)
    for name, value in options.items():
        setattr(opts, name, value)
    return AsyncApiClient(settings, opts)


async def test_polls_reuse_one_connection_and_send_the_clients_headers() -> None:
    async with serve(lambda request, n: ok()) as server:
        async with client_for(server) as client:
            for _ in range(5):
                assert await client.send(GET) == {"runId": "run_1", "status": "running"}
        assert server.connections == 1
        first = server.requests[0].decode()
        assert first.startswith("GET /api/agent/chat/run_1 HTTP/1.1\r\n")
        for header in ("Authorization: Bearer pk_test", "Accept: application/json", "User-Agent: airflow-provider"):
            assert header in first
        assert all(r == server.requests[0] for r in server.requests), "a poll's request is built once"


async def test_clients_of_one_loop_share_connections_and_the_last_close_ends_them() -> None:
    async with serve(lambda request, n: ok()) as server:
        clients = [client_for(server) for _ in range(20)]
        for client in clients:
            await client.send(GET)
        assert server.connections == 1, "sequential polls of 20 clients ride one shared connection"
        shared = next(iter(shared_transport._shared[asyncio.get_running_loop()].values()))
        assert shared.users == 20
        for client in clients:
            await client.aclose()
        assert not shared_transport._shared.get(asyncio.get_running_loop())


async def test_concurrent_requests_open_connections_on_demand() -> None:
    async with serve(lambda request, n: ok()) as server:
        server.delay = 0.05
        async with client_for(server) as client:
            await asyncio.gather(*(client.send(GET) for _ in range(10)))
        assert server.connections == 10


async def test_per_client_transports_when_sharing_is_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shared_transport, "SHARE_CONNECTIONS", False)
    async with serve(lambda request, n: ok()) as server:
        for _ in range(3):
            async with client_for(server) as client:
                await client.send(GET)
        assert server.connections == 3


async def test_post_body_and_json() -> None:
    async with serve(lambda request, n: ok(b'{"runId": "run_9", "status": "queued"}')) as server:
        async with client_for(server) as client:
            assert (await client.send(POST))["runId"] == "run_9"
        raw = server.requests[0]
        assert raw.startswith(b"POST /api/agent/chat HTTP/1.1\r\n")
        assert json.loads(raw.split(b"\r\n\r\n", 1)[1]) == {"message": "hi"}


async def test_chunked_body_and_content_length_split_across_packets() -> None:
    body = b'{"runId": "run_1", "status": "completed", "text": "' + b"x" * 5000 + b'"}'
    chunked = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-type: application/json\r\n\r\n"
    for i in range(0, len(body), 1000):
        part = body[i : i + 1000]
        chunked += f"{len(part):x}\r\n".encode() + part + b"\r\n"
    chunked += b"0\r\n\r\n"
    async with serve(lambda request, n: chunked) as server:
        async with client_for(server) as client:
            assert len((await client.send(GET))["text"]) == 5000
            assert len((await client.send(GET))["text"]) == 5000
        assert server.connections == 1


async def test_close_delimited_body() -> None:
    answer = b'HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n{"runId": "run_1", "status": "running"}'
    async with serve(lambda request, n: answer) as server:
        server.close_after = True
        async with client_for(server) as client:
            assert (await client.send(GET))["status"] == "running"
            assert (await client.send(GET))["status"] == "running"
        assert server.connections == 2, "connection: close is honoured"


async def test_gzip_answer_is_decoded() -> None:
    body = gzip.compress(b'{"runId": "run_1", "status": "running"}')
    reply = ok(body, extra="content-encoding: gzip\r\n")
    async with serve(lambda request, n: reply) as server, client_for(server) as client:
        assert (await client.send(GET))["status"] == "running"


async def test_size_cap_with_and_without_content_length() -> None:
    big = b"{" + b" " * 50_000 + b"}"
    chunked = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n" + b"".join(
        f"{len(big[i : i + 4096]):x}\r\n".encode() + big[i : i + 4096] + b"\r\n" for i in range(0, len(big), 4096)
    )
    for answer in (ok(big), chunked + b"0\r\n\r\n"):
        async with (
            serve(lambda request, n, answer=answer: answer) as server,  # type: ignore[misc]
            client_for(server, max_response_bytes=1000) as client,
        ):
            with pytest.raises(ResponseTooLargeError):
                await client.send(GET)
            # the connection that carried the refused body is not reused half-read
            with pytest.raises(ResponseTooLargeError):
                await client.send(GET)


async def test_errors_map_like_before() -> None:
    answers = {
        1: b"HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\ncontent-length: 23\r\n\r\n"
        b'{"error": "Run not fou"}',
        2: b"HTTP/1.1 429 Too Many\r\nretry-after: 7\r\ncontent-length: 2\r\n\r\n{}",
        3: b"HTTP/1.1 302 Found\r\nlocation: https://evil.example/x\r\ncontent-length: 0\r\n\r\n",
    }
    async with serve(lambda request, n: answers[n]) as server, client_for(server) as client:
        with pytest.raises(NotFoundError, match="Run not fou"):
            await client.send(GET)
        with pytest.raises(RateLimitedError) as info:
            await client.send(GET)
        assert info.value.retry_after == 7.0
        with pytest.raises(ClientError, match="redirects are not followed"):
            await client.send(GET)


async def test_informational_answer_is_skipped() -> None:
    reply = b"HTTP/1.1 100 Continue\r\n\r\n" + ok()
    async with serve(lambda request, n: reply) as server, client_for(server) as client:
        assert (await client.send(GET))["status"] == "running"


async def test_stale_keepalive_connection_is_retried_once_for_a_get() -> None:
    # The second request finds its reused connection closed without an answer (the keep-alive race).
    async with serve(lambda request, n: None if n == 2 else ok()) as server:
        async with client_for(server) as client:
            for _ in range(3):
                assert (await client.send(GET))["status"] == "running"
        assert len(server.requests) == 4, "the GET that met the closed connection was sent again, once"
        assert server.connections == 2


async def test_post_on_a_connection_that_dies_is_not_resent() -> None:
    async with serve(lambda request, n: None if n == 2 else ok()) as server:
        async with client_for(server) as client:
            await client.send(GET)
            with pytest.raises(TransportError) as info:
                await client.send(POST)
            assert info.value.reached_server is True
        assert len(server.requests) == 2
    async with serve(lambda request, n: None) as server:
        async with client_for(server) as client:
            with pytest.raises(TransportError, match="RemoteProtocolError"):
                await client.send(GET)
        assert len(server.requests) == 1, "a fresh connection that dies is not a keep-alive race"


async def test_read_timeout_and_connect_error() -> None:
    async with serve(lambda request, n: ok()) as server:
        server.delay = 2.0
        async with client_for(server, timeout=httpx.Timeout(5.0, read=0.2)) as client:
            with pytest.raises(TransportError, match="ReadTimeout") as info:
                await client.send(GET)
            assert info.value.reached_server is True
    settings = ConnectionSettings(vendor=PUFFLE, conn_id="p", base_url="http://127.0.0.1:1", api_key="pk")
    async with AsyncApiClient(settings, ClientOptions(retry=NO_RETRY)) as client:
        with pytest.raises(TransportError, match="ConnectError") as info:
            await client.send(GET)
        assert info.value.reached_server is False


@pytest.mark.parametrize(("small", "streamed"), [(lean.SMALL_BODY_BYTES, 0), (10, 3)])
async def test_a_small_body_that_follows_its_head_still_comes_back_whole(
    monkeypatch: pytest.MonkeyPatch, small: int, streamed: int
) -> None:
    """A head read alone is followed by a small body in the same exchange: no streaming response for a poll.
    (With the limit below the body's size, each of the three polls takes the streamed path instead.)"""
    monkeypatch.setattr(lean, "SMALL_BODY_BYTES", small)
    reads: list[int] = []
    original = AsyncApiClient._read

    async def counted(self: AsyncApiClient, request: ApiRequest, response: httpx.Response) -> object:
        reads.append(response.status_code)
        return await original(self, request, response)

    monkeypatch.setattr(AsyncApiClient, "_read", counted)
    async with serve(lambda request, n: ok()) as server:
        server.split = 0.05
        async with client_for(server) as client:
            for _ in range(3):
                assert await client.send(GET) == {"runId": "run_1", "status": "running"}
        assert server.connections == 1
    assert len(reads) == streamed


async def test_a_body_that_never_follows_its_head_times_out_and_the_connection_is_not_reused() -> None:
    async with serve(lambda request, n: ok()) as server:
        server.split = 2.0
        async with client_for(server, timeout=httpx.Timeout(5.0, read=0.2)) as client:
            with pytest.raises(TransportError, match="ReadTimeout"):
                await client.send(GET)
            server.split = 0.0
            assert (await client.send(GET))["status"] == "running"
        assert server.connections == 2, "the connection left mid-body was dropped, not reused"


async def test_pool_limit_queues_then_times_out(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shared_transport, "SHARED_MAX_CONNECTIONS", 2)
    async with serve(lambda request, n: ok()) as server:
        server.delay = 0.1
        async with client_for(server) as client:
            results = await asyncio.gather(*(client.send(GET) for _ in range(6)))
            assert len(results) == 6
            assert server.connections == 2, "requests beyond the limit wait for a free connection"
        server.delay = 1.0
        async with client_for(server, timeout=httpx.Timeout(5.0, pool=0.2)) as client:
            outcomes = await asyncio.gather(*(client.send(GET) for _ in range(3)), return_exceptions=True)
            assert sum(isinstance(o, TransportError) and "PoolTimeout" in str(o) for o in outcomes) == 1


async def test_cancelled_poll_leaves_the_pool_usable() -> None:
    async with serve(lambda request, n: ok()) as server:
        server.delay = 0.3
        async with client_for(server) as client:
            task = asyncio.ensure_future(client.send(GET))
            await asyncio.sleep(0.05)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            server.delay = 0
            assert (await client.send(GET))["status"] == "running"


async def test_a_small_json_error_body_is_kept_on_the_error() -> None:
    """Vendor hints that need more than the message (GloriaMundo's spend-limit reset) read ``error.body``,
    on the async path as on the blocking one, without a second way of sending."""
    body = b'{"error": "spend_limit_exceeded", "resets_at": "2026-12-02T00:00:00Z"}'
    answer = b"HTTP/1.1 429 Too Many Requests\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
    async with serve(lambda request, n: answer % (len(body), body)) as server, client_for(server) as client:
        with pytest.raises(RateLimitedError) as caught:
            await client.send(GET)
    assert caught.value.body == {"error": "spend_limit_exceeded", "resets_at": "2026-12-02T00:00:00Z"}
    assert caught.value.detail == "spend_limit_exceeded"


async def test_handle_async_request_is_a_plain_httpx_transport() -> None:
    async with serve(lambda request, n: ok()) as server:
        transport = lean.LeanTransport()
        async with httpx.AsyncClient(transport=transport, base_url=f"http://127.0.0.1:{server.port}") as client:
            response = await client.get("/x", params={"a": "1"})
            assert response.json()["status"] == "running"
            assert response.http_version == "HTTP/1.1"
        assert server.requests[0].startswith(b"GET /x?a=1 HTTP/1.1\r\n")


async def test_base_url_path_is_kept() -> None:
    async with serve(lambda request, n: ok()) as server:
        settings = ConnectionSettings(
            vendor=PUFFLE, conn_id="p", base_url=f"http://127.0.0.1:{server.port}/api/v1", api_key="pk"
        )
        request = ApiRequest("GET", "/sessions/s1", "GET /sessions/{id}", params={"user_id": "u", "x": None})
        async with AsyncApiClient(settings, ClientOptions(retry=NO_RETRY)) as client:
            await client.send(request)
        assert server.requests[0].startswith(b"GET /api/v1/sessions/s1?user_id=u HTTP/1.1\r\n")


async def test_httpx_transport_when_lean_is_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shared_transport, "LEAN_TRANSPORT", False)
    async with serve(lambda request, n: ok()) as server, client_for(server) as client:
        assert isinstance(client._get_transport(), httpx.AsyncHTTPTransport)
        assert (await client.send(GET))["status"] == "running"


# -- TLS: every vendor is https in production --------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls_ca() -> trustme.CA:
    return trustme.CA()


def tls_server(ca: trustme.CA, hostname: str = "localhost") -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(hostname).configure_cert(context)
    return context


def https_client(server: Server, monkeypatch: pytest.MonkeyPatch, trusted: ssl.SSLContext | None) -> AsyncApiClient:
    """A client of ``https://localhost:<port>``; ``trusted`` (a context trusting the test CA) becomes the
    connection's ``verify`` CA bundle (None keeps certifi's roots, which do not know the test CA)."""
    extras: dict[str, str] = {"trust_env": "false"}  # the host's SSL_CERT_FILE must not decide
    if trusted is not None:
        bundle = tempfile.NamedTemporaryFile("w", suffix=".pem", delete=False)  # noqa: SIM115
        with bundle:
            bundle.write("".join(ssl.DER_cert_to_PEM_cert(der) for der in trusted.get_ca_certs(binary_form=True)))
        extras["verify"] = bundle.name
    settings = ConnectionSettings(
        vendor=PUFFLE, conn_id="p", base_url=f"https://localhost:{server.port}", api_key="pk_tls_secret", extras=extras
    )
    return AsyncApiClient(settings, ClientOptions(headers={"Authorization": "Bearer pk_tls_secret"}, retry=NO_RETRY))


async def test_https_polls_verify_the_server_and_reuse_one_tls_connection(
    tls_ca: trustme.CA, monkeypatch: pytest.MonkeyPatch
) -> None:
    trusted = ssl.create_default_context()
    tls_ca.configure_trust(trusted)
    async with serve(lambda request, n: ok(), tls=tls_server(tls_ca)) as server:
        async with https_client(server, monkeypatch, trusted) as client:
            assert isinstance(client._get_transport(), lean.LeanTransport)
            for _ in range(3):
                assert (await client.send(GET))["status"] == "running"
        assert server.connections == 1, "one TLS handshake, then keep-alive"
        assert server.requests[0].startswith(b"GET /api/agent/chat/run_1 HTTP/1.1\r\n")
        assert b"Host: localhost:" in server.requests[0]


@pytest.mark.parametrize(
    ("certificate_for", "trust_test_ca", "reason"),
    [
        ("localhost", False, "TLS certificate of localhost is not trusted"),  # a CA the process does not trust
        ("vendor.example", True, "does not match the host name"),  # a trusted CA, a certificate for another host
    ],
)
async def test_an_unverified_server_never_sees_the_request_or_the_key(
    tls_ca: trustme.CA, monkeypatch: pytest.MonkeyPatch, certificate_for: str, trust_test_ca: bool, reason: str
) -> None:
    trusted: ssl.SSLContext | None = None
    if trust_test_ca:
        trusted = ssl.create_default_context()
        tls_ca.configure_trust(trusted)
    async with serve(lambda request, n: ok(), tls=tls_server(tls_ca, certificate_for)) as server:
        async with https_client(server, monkeypatch, trusted) as client:
            with pytest.raises(TlsError) as info:
                await client.send(GET)
        assert reason in str(info.value)
        assert not info.value.transient, "a retry cannot fix a certificate"
        assert info.value.reached_server is False, "a failed handshake is a connect failure: safe to retry a start"
        assert server.requests == [], "nothing, the API key included, was sent to an unverified server"
        assert "pk_tls_secret" not in str(info.value)


async def test_a_connection_moves_only_along_its_state_table() -> None:
    """After an answer the pooled connection is IDLE again; a move outside the table is refused loudly."""
    async with serve(lambda request, n: ok()) as server, client_for(server) as client:
        await client.send(GET)
        transport = client._get_transport()
        assert isinstance(transport, lean.LeanTransport)
        (pool,) = transport._pools.values()
        (conn,) = pool.idle
        assert conn.state is lean.Exchange.IDLE and not conn.head_done and not conn.complete
        with pytest.raises(RuntimeError, match="idle -> body: not a valid move"):
            conn._to(lean.Exchange.BODY)
        await client.send(GET)
        assert pool.idle == [conn] and conn.state is lean.Exchange.IDLE, "reused, and idle again"
