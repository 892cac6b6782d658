"""Transport limits (app/transport.py) on the real server, `python -m app`: a huge header is refused
fast, connections that send nothing or trickle are closed within the configured timeouts, and
connections beyond the cap are refused while the server keeps answering."""

from __future__ import annotations

import http.client
import json
import socket
import time
import urllib.request
from collections.abc import Iterator

import pytest

from bench import REPO
from bench.servers import Server, start_server

LIMITS = {
    "SENTIMENT_WARMUP": "false",
    "SENTIMENT_ACCESS_LOG": "false",
    "SENTIMENT_HEADER_TIMEOUT_S": "1",
    "SENTIMENT_BODY_TIMEOUT_S": "1.5",
    "SENTIMENT_MAX_HEADER_BYTES": "8192",
    "SENTIMENT_MAX_CONNECTIONS": "24",
    "SENTIMENT_API_KEY": "transport-test-key",
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    # The shipped model: these tests need a server, not a particular model (no training step).
    s = start_server(
        REPO / "models" / "default", tmp_path_factory.mktemp("transport") / "server.log", env=LIMITS
    )
    yield s
    s.stop()
    assert "Traceback" not in s.log_text(), s.log_text()[-3000:]


def _connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _read_until_closed(sock: socket.socket, timeout: float = 10) -> tuple[bytes, float]:
    """Everything the server sends until it closes (b"" for a reset), and when it closed."""
    sock.settimeout(timeout)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass
    return data, time.perf_counter()


def _health(port: int) -> float:
    t0 = time.perf_counter()
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as r:
        assert r.status == 200
    return time.perf_counter() - t0


@pytest.mark.slow
def test_a_1_mb_header_is_refused_fast(server: Server) -> None:
    sock = _connect(server.port)
    t0 = time.perf_counter()
    sent = 0
    try:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: ")
        for _ in range(64):  # 1 MiB in 16 KiB writes; the server stops reading long before the end
            sock.sendall(b"a" * 16384)
            sent += 16384
    except (BrokenPipeError, ConnectionResetError):
        pass
    data, closed = _read_until_closed(sock)
    sock.close()
    assert data.startswith(b"HTTP/1.1 431 "), data[:200]
    assert b"SENTIMENT_MAX_HEADER_BYTES" in data
    assert closed - t0 < 3, closed - t0
    assert _health(server.port) < 1  # the server is fine


@pytest.mark.slow
def test_a_connection_that_sends_nothing_is_closed_at_the_header_timeout(server: Server) -> None:
    sock = _connect(server.port)
    t0 = time.perf_counter()
    data, closed = _read_until_closed(sock)
    sock.close()
    assert 0.9 <= closed - t0 < 3, closed - t0  # SENTIMENT_HEADER_TIMEOUT_S=1
    assert data.startswith(b"HTTP/1.1 408 ") and b"SENTIMENT_HEADER_TIMEOUT_S" in data, data


@pytest.mark.slow
def test_trickled_headers_and_body_are_cut_at_their_timeouts(server: Server) -> None:
    head = sock = _connect(server.port)
    t0 = time.perf_counter()
    try:
        for c in b"POST /predict HTTP/1.1\r\nHost: x\r\n":  # a byte every 0.1 s: too slow for 1 s
            head.sendall(bytes([c]))
            time.sleep(0.1)
    except (BrokenPipeError, ConnectionResetError):
        pass
    data, closed = _read_until_closed(head)
    head.close()
    assert 0.9 <= closed - t0 < 3 and data.startswith(b"HTTP/1.1 408 "), (closed - t0, data)

    sock = _connect(server.port)
    body = b'{"text": "a fine film"}'
    sock.sendall(
        b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body[:5]
    )
    t0 = time.perf_counter()
    data, closed = _read_until_closed(sock)  # the rest never comes
    sock.close()
    assert 1.4 <= closed - t0 < 4, closed - t0  # SENTIMENT_BODY_TIMEOUT_S=1.5
    assert data.startswith(b"HTTP/1.1 408 ") and b"SENTIMENT_BODY_TIMEOUT_S" in data, data
    assert _health(server.port) < 1


@pytest.mark.slow
def test_connections_beyond_the_cap_are_refused_and_the_server_keeps_answering(server: Server) -> None:
    idle = [_connect(server.port) for _ in range(24)]  # SENTIMENT_MAX_CONNECTIONS=24
    try:
        time.sleep(0.2)
        extra = _connect(server.port)
        extra.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        data, _ = _read_until_closed(extra)
        extra.close()
        assert data.startswith(b"HTTP/1.1 503 ") and b"retry-after: 1" in data.lower(), data
    finally:
        for sock in idle:
            sock.close()
    time.sleep(0.2)
    assert _health(server.port) < 1  # room again once they are gone


@pytest.mark.slow
def test_a_bad_model_dir_is_a_422_and_the_connection_keeps_working(server: Server) -> None:
    """NUL or an over-long path part in /admin/reload's model_dir was a 500 that reset the keep-alive
    connection: now a 422, and the next request on the same connection is answered."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    headers = {"Authorization": "Bearer transport-test-key", "Content-Type": "application/json"}
    try:
        for model_dir in ("\u0000", "a" * 300, "v1/" + "b" * 300):
            conn.request("POST", "/admin/reload", body=json.dumps({"model_dir": model_dir}), headers=headers)
            r = conn.getresponse()
            body = json.loads(r.read())
            assert r.status == 422 and body["error"]["code"] == "validation_error", body
            conn.request("GET", "/health")  # the same connection
            r = conn.getresponse()
            assert r.status == 200 and json.loads(r.read()) == {"status": "ok"}
    finally:
        conn.close()
