"""mtls serve --upstream: requests and bodies reach the application and back,
hop-by-hop headers stay behind, forwarding headers are added, and a dead,
dying or slow upstream gives 502 or 504 with a reason and a log line."""
import hashlib
import shutil
import re
import socket
import threading

import pytest

from proxy_helpers import *  # noqa: F401,F403


def echo(body):
    return json.loads(body)


def header(headers, name):
    """Every value of name in [[name, value]...], in order."""
    return [v for n, v in headers if n.lower() == name.lower()]


def test_request_and_response_pass_through(serve, tmp_path, init_pki, upstream):
    s = proxy(serve, tmp_path, init_pki, upstream.url)
    c = Conn(s.port, init_pki)
    status, headers, body = c.request("GET", "/hello/world?x=1&y=%20", headers=[
        ("X-Forwarded-For", "203.0.113.9"),
        ("Forwarded", "for=203.0.113.9"),
        ("X-Forwarded-Proto", "http"),
        ("Connection", "keep-alive, X-Secret-Hop"),
        ("X-Secret-Hop", "1"),
        ("Keep-Alive", "timeout=5"),
        ("TE", "trailers"),
        ("Proxy-Connection", "keep-alive"),
        ("Upgrade", "h2c"),
        ("X-App", "kept"),
    ])
    assert status == 200
    e = echo(body)
    assert e["method"] == "GET" and e["path"] == "/hello/world?x=1&y=%20"
    h = e["headers"]
    assert header(h, "Host") == ["localhost"]
    assert header(h, "X-App") == ["kept"]
    # Appended to what the client said, so the last entry is the one mtls saw.
    assert header(h, "X-Forwarded-For") == ["203.0.113.9, 127.0.0.1"]
    assert header(h, "Forwarded") == ["for=203.0.113.9, for=127.0.0.1;proto=https"]
    assert header(h, "X-Forwarded-Proto") == ["https"]
    for hop in ("Connection", "X-Secret-Hop", "Keep-Alive", "TE", "Proxy-Connection", "Upgrade"):
        assert header(h, hop) == [], hop
    # The upstream's answer as is, less its own hop-by-hop headers.
    names = [n.lower() for n, _ in headers]
    assert ("X-Upstream", "echo") in headers
    assert "x-hop" not in names and "connection" not in names
    assert names.count("date") == 1 and names.count("server") == 1
    # Built-in routes stay ours.
    status, _, body = c.request("GET", "/test")
    assert status == 200 and body == b'{"message":"Hello mtls"}'
    status, _, body = c.request("POST", "/test", body=b"x")
    assert status == 200 and echo(body)["path"] == "/test"  # other methods: the app's
    c.close()
    log = wait_for_text(s.access_log, '"GET /hello/world')
    assert re.search(r'"GET /hello/world\S* HTTP/1.1" 200 \d+ .* upstream=200 upstream_time=\d+\.\d{3}',
                     log), log
    assert re.search(r'"GET /test HTTP/1.1" 200 24 "-" "-"\n', log), log


def test_prefix_and_keepalive_pool(serve, tmp_path, init_pki, upstream):
    s = proxy(serve, tmp_path, init_pki, upstream.url + "/base/")
    ports = set()
    for _ in range(3):
        c = Conn(s.port, init_pki)
        for path in ("/a", "/b?q"):
            status, _, body = c.request("GET", path)
            assert status == 200
            assert echo(body)["path"] == "/base" + path
            ports.add(echo(body)["client_port"])
        c.close()
    # Six requests over three client connections, one upstream connection.
    assert len(ports) == 1, ports
    assert upstream.stats["requests"] == 6


def test_pipelined_requests_are_answered_in_order(serve, tmp_path, init_pki, upstream):
    s = proxy(serve, tmp_path, init_pki, upstream.url)
    c = Conn(s.port, init_pki)
    c.send(b"GET /one HTTP/1.1\r\nHost: a\r\n\r\n"
           b"POST /two HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello"
           b"GET /test HTTP/1.1\r\nHost: a\r\n\r\n"
           b"HEAD /four HTTP/1.1\r\nHost: a\r\n\r\n"
           b"GET /status/404 HTTP/1.1\r\nHost: a\r\n\r\n")
    st, _, body = c.response()
    assert st == 200 and echo(body)["path"] == "/one"
    st, _, body = c.response()
    assert st == 200 and echo(body)["path"] == "/two" and echo(body)["body_len"] == 5
    st, _, body = c.response()
    assert st == 200 and body == b'{"message":"Hello mtls"}'
    st, headers, body = c.response(head=True)
    assert st == 200 and body == b""
    assert int(dict(headers)["Content-Length"]) > 0  # HEAD keeps the upstream's length
    st, _, body = c.response()
    assert st == 404 and echo(body) == {"status": 404}
    c.close()


def test_bodies_stream_both_ways(serve, tmp_path, init_pki, upstream):
    s = proxy(serve, tmp_path, init_pki, upstream.url)
    c = Conn(s.port, init_pki)
    # A chunked request body is passed on chunked.
    c.send(b"POST /up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
           b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
    st, _, body = c.response()
    e = echo(body)
    assert st == 200 and e["body_len"] == 11
    assert e["body_sha256"] == hashlib.sha256(b"hello world").hexdigest()
    assert header(e["headers"], "Transfer-Encoding") == ["chunked"]
    # A chunked response of 20 MB.
    st, headers, body = c.request("GET", "/stream/20000000")
    assert st == 200 and ("Transfer-Encoding", "chunked") in headers
    assert len(body) == 20000000 and body == pattern_bytes(20000000)
    c.close()


def test_expect_100_continue(serve, tmp_path, init_pki, upstream):
    s = proxy(serve, tmp_path, init_pki, upstream.url)
    c = Conn(s.port, init_pki)
    c.send(b"PUT /put HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n")
    st, _, _ = c.response()
    assert st == 100
    c.send(b"data")
    st, _, body = c.response()
    e = echo(body)
    assert st == 200 and e["body_len"] == 4 and header(e["headers"], "Expect") == []
    c.close()


def rss_peak_kb(pid):
    """VmHWM (peak resident memory) of pid and of its child processes, in KiB."""
    pids = [pid]
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            pids += [int(p) for p in f.read().split()]
    except OSError:
        pass
    peak = 0
    for p in pids:
        with open(f"/proc/{p}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    peak = max(peak, int(line.split()[1]))
    return peak


def test_a_100_mb_upload_is_streamed_not_buffered(serve, tmp_path, init_pki, upstream):
    s = proxy(serve, tmp_path, init_pki, upstream.url)
    before = rss_peak_kb(s.proc.pid)
    total = 100 * 1024 * 1024
    piece = bytes(range(256)) * 256  # 64 KiB
    c = Conn(s.port, init_pki)
    c.send(b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % total)
    h = hashlib.sha256()
    for _ in range(total // len(piece)):
        c.send(piece)
        h.update(piece)
    st, _, body = c.response()
    e = echo(body)
    assert st == 200 and e["body_len"] == total and e["body_sha256"] == h.hexdigest()
    c.close()
    grown = rss_peak_kb(s.proc.pid) - before
    # Buffered whole, 100 MB would show; streamed, the server holds a few windows.
    # (ASan keeps freed memory in quarantine: there RSS says nothing about it.)
    if not SANITIZED:
        assert grown < 40 * 1024, f"server peak RSS grew by {grown} KiB"


def test_dead_upstream_is_502_with_a_reason(serve, tmp_path, init_pki):
    port = free_port()  # nothing listens there
    s = proxy(serve, tmp_path, init_pki, f"http://127.0.0.1:{port}")
    c = Conn(s.port, init_pki)
    st, _, body = c.request("GET", "/x")
    assert st == 502
    reason = json.loads(body)["reason"]
    assert reason == f"cannot connect to the upstream 127.0.0.1:{port} (connection refused)", reason
    st, _, _ = c.request("GET", "/test")  # the connection goes on
    assert st == 200
    c.close()
    log = wait_for_text(s.system_log, "answered 502")
    assert f"GET /x answered 502: cannot connect to the upstream 127.0.0.1:{port}" in log
    assert re.search(r'"GET /x HTTP/1.1" 502 \d+ .* upstream=- upstream_time=',
                     read_text(s.access_log))


def test_upstream_dying_mid_response_cuts_the_response(serve, tmp_path, init_pki, upstream):
    s = proxy(serve, tmp_path, init_pki, upstream.url)
    c = Conn(s.port, init_pki)
    c.send(b"GET /die HTTP/1.1\r\nHost: a\r\n\r\n")
    try:
        c.response()
        assert False, "a cut response must not look whole"
    except EOFError:
        pass
    wait_for_text(s.system_log, "the upstream 127.0.0.1:%d closed the connection in the middle "
                  "of its response" % upstream.port)
    # An upstream that closes before answering is a 502.
    lone = socket.socket()
    lone.bind(("127.0.0.1", 0))
    lone.listen(1)

    def close_at_once():
        conn, _ = lone.accept()
        conn.recv(65536)
        conn.close()
    t = threading.Thread(target=close_at_once, daemon=True)
    t.start()
    s2 = proxy(serve, tmp_path / "x", init_pki, "http://127.0.0.1:%d" % lone.getsockname()[1]) \
        if (tmp_path / "x").mkdir() is None else None
    c2 = Conn(s2.port, init_pki)
    st, _, body = c2.request("GET", "/y")
    assert st == 502 and "closed the connection without answering" in json.loads(body)["reason"]
    c2.close()
    lone.close()


def test_slow_upstream_is_504(serve, tmp_path, init_pki, upstream):
    s = proxy(serve, tmp_path, init_pki, upstream.url, "--upstream-timeout", "0.5")
    c = Conn(s.port, init_pki)
    st, _, body = c.request("GET", "/slow/3")
    assert st == 504
    assert json.loads(body)["reason"] == \
        f"the upstream 127.0.0.1:{upstream.port} did not answer within 0.5 s"
    c.close()
    wait_for_text(s.system_log, "GET /slow/3 answered 504")


def test_bad_upstream_urls_are_usage_errors(tmp_path, init_pki):
    from conftest import run_mtls
    from serve_helpers import server_dir
    d = server_dir(init_pki, tmp_path)
    for url, why in [("ftp://x:1", "unknown scheme"), ("http://127.0.0.1", "the port is missing"),
                     ("http://127.0.0.1:99999", "the port must be"),
                     ("unix:relative", "absolute path"),
                     ("https://127.0.0.1:1", "https to the upstream is not supported")]:
        r = run_mtls("serve", "--listen", "127.0.0.1:0", "--upstream", url, cwd=d)
        assert r.returncode == 2, (url, r.stderr)
        assert f"upstream '{url}'" in r.stderr and why in r.stderr, r.stderr


def test_websocket_upgrade_is_tunnelled_after_the_101(serve, tmp_path, init_pki):
    lone = socket.socket()
    lone.bind(("127.0.0.1", 0))
    lone.listen(1)
    seen = {}

    def ws_upstream():
        conn, _ = lone.accept()
        head = b""
        while b"\r\n\r\n" not in head:
            head += conn.recv(65536)
        seen["head"] = head
        conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                     b"Connection: Upgrade\r\nSec-WebSocket-Accept: abc=\r\n\r\nhi!")
        while True:
            data = conn.recv(65536)
            if not data:
                break
            conn.sendall(data.upper())
        conn.close()
    t = threading.Thread(target=ws_upstream, daemon=True)
    t.start()
    s = proxy(serve, tmp_path, init_pki, "http://127.0.0.1:%d" % lone.getsockname()[1])
    c = Conn(s.port, init_pki)
    c.send(b"GET /chat HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
    st, headers, _ = c.response()
    assert st == 101
    names = {n.lower(): v for n, v in headers}
    assert names["upgrade"] == "websocket" and names["connection"].lower() == "upgrade"
    assert names["sec-websocket-accept"] == "abc="
    assert c._take(3) == b"hi!"  # bytes that came with the 101
    for word in (b"hello", b"x" * 100000):
        c.send(word)
        assert c._take(len(word)) == word.upper()
    head = seen["head"].decode().lower()
    assert "upgrade: websocket\r\n" in head and "connection: upgrade\r\n" in head
    assert "sec-websocket-key: dghlihnhbxbszsbub25jzq==\r\n" in head
    c.close()
    t.join(timeout=10)
    assert not t.is_alive(), "the upstream saw the client's close"
    lone.close()


def test_upgrade_refused_by_the_upstream_is_an_ordinary_answer(serve, tmp_path, init_pki,
                                                                upstream):
    s = proxy(serve, tmp_path, init_pki, upstream.url)
    c = Conn(s.port, init_pki)
    c.send(b"GET /chat HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
    st, _, body = c.response()
    assert st == 200 and echo(body)["path"] == "/chat"
    assert header(echo(body)["headers"], "Upgrade") == ["websocket"]
    c.close()


@pytest.mark.parametrize("model", ["process", "thread"])
def test_sigterm_lets_a_proxied_request_finish(serve, tmp_path, init_pki, upstream, model):
    import signal
    s = proxy(serve, tmp_path, init_pki, upstream.url, "--worker-model", model)
    c = Conn(s.port, init_pki)
    assert c.request("GET", "/warm")[0] == 200
    c.send(b"GET /slow/1 HTTP/1.1\r\nHost: a\r\n\r\n")
    wait_until(lambda: upstream.stats["requests"] == 2, what="the slow request upstream")
    s.send_signal(signal.SIGTERM)  # it exits 0 once drained
    st, headers, body = c.response()
    assert st == 200 and echo(body)["path"] == "/slow/1"
    assert ("Connection", "close") in headers
    c.close()
    # It exits by itself once drained (a second SIGTERM from stop() could race its exit).
    assert s.proc.wait(timeout=20) == 0


def test_a_pooled_connection_closed_by_the_upstream_is_retried(serve, tmp_path, init_pki):
    """The upstream answers once, then closes that connection when the next request
    comes (as one whose keep-alive timeout ran out just then): mtls sends the request
    again on a new connection instead of answering 502."""
    lone = socket.socket()
    lone.bind(("127.0.0.1", 0))
    lone.listen(4)
    accepted = []

    def upstream():
        for n in range(2):
            conn, _ = lone.accept()
            accepted.append(conn)
            for answered in range(2):
                head = b""
                while b"\r\n\r\n" not in head:
                    data = conn.recv(65536)
                    if not data:
                        break
                    head += data
                if not head or (n == 0 and answered == 1):
                    conn.close()  # the second request on the first connection: gone
                    break
                body = b"conn %d" % n
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body),
                                                                                    body))
    t = threading.Thread(target=upstream, daemon=True)
    t.start()
    s = proxy(serve, tmp_path, init_pki, "http://127.0.0.1:%d" % lone.getsockname()[1])
    c = Conn(s.port, init_pki)
    st, _, body = c.request("GET", "/a")
    assert st == 200 and body == b"conn 0"
    st, _, body = c.request("GET", "/b")
    assert st == 200 and body == b"conn 1"
    c.close()
    assert len(accepted) == 2
    wait_for_text(s.system_log, "GET /b: the upstream 127.0.0.1:%d had closed a pooled "
                  "connection; sent again on a new one" % lone.getsockname()[1])
    lone.close()


def test_a_slow_reader_holds_the_upstream_back(serve, tmp_path, init_pki, upstream):
    import time
    s = proxy(serve, tmp_path, init_pki, upstream.url)
    before = rss_peak_kb(s.proc.pid)
    total = 100 * 1024 * 1024
    c = Conn(s.port, init_pki)
    # HTTP/1.0: the body comes unframed until the close, so it can be counted as it streams.
    c.send(b"GET /stream/%d HTTP/1.0\r\n\r\n" % total)
    time.sleep(1)  # the client reads nothing: mtls must stop reading the upstream
    data = b""
    while b"\r\n\r\n" not in data:
        data += c.s.recv(65536)
    head, rest = data.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    h = hashlib.sha256(rest)
    n = len(rest)
    while True:
        chunk = c.s.recv(1 << 20)
        if not chunk:
            break
        h.update(chunk)
        n += len(chunk)
    assert n == total and h.hexdigest() == hashlib.sha256(pattern_bytes(total)).hexdigest()
    c.close()
    grown = rss_peak_kb(s.proc.pid) - before
    if not SANITIZED:
        assert grown < 40 * 1024, f"server peak RSS grew by {grown} KiB"


def test_http10_client_gets_the_body_until_close(serve, tmp_path, init_pki, upstream):
    s = proxy(serve, tmp_path, init_pki, upstream.url)
    data = tls_request(s.port, init_pki, b"GET /stream/100000 HTTP/1.0\r\n\r\n")
    head, body = data.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"Transfer-Encoding" not in head and b"Connection: close" in head
    assert body == pattern_bytes(100000)


def test_a_client_that_leaves_mid_request_frees_its_upstream(serve, tmp_path, init_pki,
                                                             upstream):
    s = proxy(serve, tmp_path, init_pki, upstream.url)
    for path in (b"/slow/1", b"/stream/50000000"):
        c = Conn(s.port, init_pki)
        c.send(b"GET " + path + b" HTTP/1.1\r\nHost: a\r\n\r\n")
        wait_until(lambda: upstream.stats["requests"] >= 1, what="the request upstream")
        c.s.close()  # gone before (or while) the answer comes
    c = Conn(s.port, init_pki)
    st, _, body = c.request("GET", "/after")
    assert st == 200 and echo(body)["path"] == "/after"
    c.close()
    assert s.proc.poll() is None


def test_json_logs_carry_the_upstream_fields(serve, tmp_path, init_pki, upstream):
    s = proxy(serve, tmp_path, init_pki, upstream.url, "--upstream-timeout", "0.3",
              "--log-format", "json")
    c = Conn(s.port, init_pki)
    assert c.request("GET", "/slow/1")[0] == 504
    assert c.request("GET", "/fast")[0] == 200
    c.close()
    wait_for_text(s.access_log, '"/fast"')
    event = [json.loads(l) for l in read_text(s.system_log).splitlines()
             if '"upstream_timeout"' in l][0]
    assert event["request"] == "GET /slow/1" and event["upstream"] == f"127.0.0.1:{upstream.port}"
    assert event["level"] == "warn" and "did not answer within 0.3 s" in event["message"]
    lines = [json.loads(l) for l in read_text(s.access_log).splitlines()]
    assert lines[0]["status"] == 504 and lines[0]["upstream_status"] is None
    assert lines[0]["upstream_ms"] >= 300
    assert lines[1]["status"] == 200 and lines[1]["upstream_status"] == 200


@pytest.mark.skipif(shutil.which("strace") is None, reason="strace is not installed")
def test_a_proxied_keepalive_request_costs_no_epoll_ctl(tmp_path, init_pki, upstream):
    """The client's poll stays while the upstream answers, and upstream writes
    go out at once: no epoll_ctl per request (there were 4; docs/PERFORMANCE.md)."""
    import signal
    import subprocess
    from conftest import MTLS
    from serve_helpers import read_text, server_dir, wait_until
    d = server_dir(init_pki, tmp_path)
    trace = os.path.join(d, "trace")
    out = open(os.path.join(d, "out"), "w")
    p = subprocess.Popen(["strace", "-f", "-e", "trace=epoll_ctl", "-o", trace, MTLS, "serve",
                          "--listen", "127.0.0.1:0", "--workers", "1", "--worker-model", "thread",
                          "--upstream", upstream.url], cwd=d, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: "HTTPS listening on" in read_text(os.path.join(d, "out")),
                   timeout=30, what="mtls serve under strace")
        port = int(re.search(r"127\.0\.0\.1:(\d+)", read_text(os.path.join(d, "out"))).group(1))
        c = Conn(port, init_pki)
        for _ in range(3):  # the handshake and the first upstream connection
            assert c.request("GET", "/app")[0] == 200
        before = read_text(trace).count("epoll_ctl(")
        for _ in range(100):
            assert c.request("GET", "/app")[0] == 200
        after = read_text(trace).count("epoll_ctl(")
        c.close()
        assert after - before < 10, f"{after - before} epoll_ctl calls for 100 proxied requests"
    finally:
        # mtls stops on SIGTERM; strace, which would only detach, then exits with it.
        with open(f"/proc/{p.pid}/task/{p.pid}/children") as f:
            for pid in f.read().split():
                os.kill(int(pid), signal.SIGTERM)
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        out.close()
