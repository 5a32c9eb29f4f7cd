"""Whatever a client sends, `mtls serve` keeps answering: oversized and
malformed requests, slow headers, garbage and plain HTTP before the handshake,
connections that never speak, many connections at once, the connection cap;
plus keep-alive, pipelining and the idle timeout over real TLS."""
import asyncio
import os
import select
import socket
import ssl
import struct
import time

import pytest

from serve_helpers import *  # noqa: F401,F403 (fixtures)
from serve_helpers import SLOW, server_dir


def still_serving(s, d):
    assert b"Hello mtls" in tls_request(s.port, d)


def open_tls(port, d, cert="client.crt", key="client.key"):
    ctx = ssl.create_default_context(cafile=os.path.join(d, "serverca.crt"))
    ctx.load_cert_chain(os.path.join(d, cert), os.path.join(d, key))
    raw = socket.create_connection(("127.0.0.1", port), timeout=10 * SLOW)
    return ctx.wrap_socket(raw, server_hostname="localhost")


def read_response(s):
    """One response (headers + Content-Length body) from an SSL socket."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    length = int([l.split(b":")[1] for l in head.split(b"\r\n")
                  if l.lower().startswith(b"content-length:")][0])
    while len(body) < length:
        body += s.recv(65536)
    return head + b"\r\n\r\n" + body


def test_oversized_and_malformed_requests(init_pki, serve, tmp_path):
    d = server_dir(init_pki, tmp_path)
    s = serve(d)
    big_header = b"GET /test HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n"
    assert tls_request(s.port, d, big_header).startswith(b"HTTP/1.1 431 ")
    long_url = b"GET /" + b"u" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"
    assert tls_request(s.port, d, long_url).startswith(b"HTTP/1.1 414 ")
    huge_body = b"GET /test HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000\r\n\r\n"
    assert tls_request(s.port, d, huge_body).startswith(b"HTTP/1.1 413 ")
    for junk in (b"\x00\x01\x02\r\n\r\n", b"GET / HTTP/9.9\r\n\r\n",
                 b"GET /test HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                 b"Content-Length: 3\r\n\r\nabc"):
        assert tls_request(s.port, d, junk).startswith(b"HTTP/1.1 400 Bad Request"), junk
    small_body = (b"GET /test HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
                  b"GET /test HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert tls_request(s.port, d, small_body).count(b"200 OK") == 2
    assert '" 431 ' in wait_for_text(s.access_log, '" 400 ')
    still_serving(s, d)


def test_keep_alive_and_pipelining(init_pki, serve, tmp_path):
    d = server_dir(init_pki, tmp_path)
    s = serve(d)
    with open_tls(s.port, d) as c:
        for _ in range(3):
            c.sendall(b"GET /test HTTP/1.1\r\nHost: x\r\n\r\n")
            assert read_response(c).startswith(b"HTTP/1.1 200 OK")
        c.sendall(b"GET /test HTTP/1.1\r\nHost: x\r\n\r\n" * 50 +
                  b"GET /whoami HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while True:
            chunk = c.recv(65536)
            if not chunk:
                break
            data += chunk
        assert data.count(b"HTTP/1.1 200 OK") == 51
        assert data.endswith(b"}") and b'"subject":"CN=localclient"' in data


def test_slow_headers_get_408_and_close(init_pki, serve, tmp_path):
    d = server_dir(init_pki, tmp_path)
    s = serve(d, "--header-timeout", "1")
    data = b""
    with open_tls(s.port, d) as slow:
        start = time.monotonic()
        slow.sendall(b"GET /test HTTP/1.1\r\n")
        try:
            while time.monotonic() - start < 10 * SLOW:
                slow.sendall(b"X-Drip: 1\r\n")  # a slowloris never finishes its headers
                r, _, _ = select.select([slow], [], [], 0.2)
                if r:
                    break
            slow.settimeout(5 * SLOW)
            while True:
                chunk = slow.recv(65536)
                if not chunk:
                    break
                data += chunk
        except (ssl.SSLError, OSError):
            pass
        elapsed = time.monotonic() - start
    assert elapsed < 6 * SLOW, elapsed
    assert data.startswith(b"HTTP/1.1 408 Request Timeout"), data
    wait_for_text(s.system_log, "request headers not received in time")
    still_serving(s, d)


def test_idle_keep_alive_connections_are_closed(init_pki, serve, tmp_path):
    d = server_dir(init_pki, tmp_path)
    s = serve(d, "--idle-timeout", "0.5")
    with open_tls(s.port, d) as c:
        c.sendall(b"GET /test HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_response(c).startswith(b"HTTP/1.1 200")
        start = time.monotonic()
        c.settimeout(10 * SLOW)
        assert c.recv(100) == b""  # close_notify, then EOF
        assert time.monotonic() - start < 5 * SLOW


def test_garbage_and_plain_http_before_the_handshake(init_pki, serve, tmp_path):
    d = server_dir(init_pki, tmp_path)
    s = serve(d)
    answer = b""
    with socket.create_connection(("127.0.0.1", s.port)) as plain:
        plain.sendall(b"GET /test HTTP/1.1\r\nHost: x\r\n\r\n")
        plain.settimeout(10 * SLOW)
        try:
            while True:
                chunk = plain.recv(4096)
                if not chunk:
                    break
                answer += chunk
        except ConnectionError:
            pass
    # As nginx does, plain HTTP gets a page that says what is wrong.
    assert answer.startswith(b"HTTP/1.1 400 Bad Request\r\n"), answer
    assert answer.endswith(b"use https://\"}"), answer
    wait_for_text(s.system_log, "the client sent plain HTTP to the HTTPS port")
    with socket.create_connection(("127.0.0.1", s.port)) as junk:
        junk.sendall(os.urandom(3000))
        junk.settimeout(10 * SLOW)
        try:
            while junk.recv(4096):
                pass
        except ConnectionError:
            pass
    wait_for_text(s.system_log, "the client did not speak TLS")
    # Bytes then a reset: what came before the reset is still read and logged.
    for _ in range(5):
        rst = socket.create_connection(("127.0.0.1", s.port))
        rst.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        rst.sendall(b"POST /reset HTTP/1.1\r\n\r\n")
        rst.close()
    wait_until(lambda: read_text(s.system_log).count("plain HTTP") == 6, timeout=10 * SLOW,
               what="a log line for each plain-HTTP connection that was reset")
    with socket.create_connection(("127.0.0.1", s.port)) as bad:
        # A ClientHello header that promises more than it sends, then silence.
        bad.sendall(b"\x16\x03\x01\x40\x00\x01\x00\x3f\xfc\x03\x03")
        still_serving(s, d)
    still_serving(s, d)


def test_connections_that_never_speak_time_out(init_pki, serve, tmp_path):
    d = server_dir(init_pki, tmp_path)
    s = serve(d, "--handshake-timeout", "0.5")
    quiet = [socket.create_connection(("127.0.0.1", s.port)) for _ in range(20)]
    try:
        still_serving(s, d)
        for q in quiet:
            q.settimeout(10 * SLOW)
            try:
                assert q.recv(10) == b""
            except ConnectionError:
                pass
        wait_for_text(s.system_log, "did not complete the handshake in time")
    finally:
        for q in quiet:
            q.close()
    still_serving(s, d)


def test_connection_cap(init_pki, serve, tmp_path):
    d = server_dir(init_pki, tmp_path)
    s = serve(d, "--max-connections", "2")
    a, b = open_tls(s.port, d), open_tls(s.port, d)
    try:
        raw = socket.create_connection(("127.0.0.1", s.port), timeout=10 * SLOW)
        ctx = ssl.create_default_context(cafile=os.path.join(d, "serverca.crt"))
        ctx.load_cert_chain(os.path.join(d, "client.crt"), os.path.join(d, "client.key"))
        third = ctx.wrap_socket(raw, server_hostname="localhost", do_handshake_on_connect=False)
        third.settimeout(0.5)
        with pytest.raises((socket.timeout, ssl.SSLError, OSError)):
            third.do_handshake()  # waits in the kernel's queue
        a.close()
        third.settimeout(10 * SLOW)
        third.sendall(b"GET /test HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert b"Hello mtls" in read_response(third)
        third.close()
    finally:
        a.close()
        b.close()


async def _one_request(port, ctx, start):
    await start.wait()
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx,
                                                   server_hostname="localhost")
    writer.write(b"GET /test HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    data = await reader.read()
    writer.close()
    try:
        await writer.wait_closed()
    except (ssl.SSLError, ConnectionError):
        pass
    return data


async def _many(port, d, n):
    ctx = ssl.create_default_context(cafile=os.path.join(d, "serverca.crt"))
    ctx.load_cert_chain(os.path.join(d, "client.crt"), os.path.join(d, "client.key"))
    # n connections start at once; each does an mTLS handshake and a request.
    start = asyncio.Event()
    tasks = [asyncio.ensure_future(_one_request(port, ctx, start)) for _ in range(n)]
    start.set()
    return await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 120 * SLOW)


def test_a_thousand_concurrent_connections(init_pki, serve, tmp_path):
    d = server_dir(init_pki, tmp_path)
    s = serve(d, workers=2)
    results = asyncio.run(_many(s.port, d, 1000))
    ok = sum(1 for r in results if isinstance(r, bytes) and b"Hello mtls" in r)
    errors = [r for r in results if not isinstance(r, bytes)][:3]
    assert ok == 1000, (ok, errors)
    still_serving(s, d)
