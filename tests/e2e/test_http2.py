"""HTTP/2: ALPN offers h2 and http/1.1; curl --http2 and nghttp get every route
over h2 with the client certificate; the protocol's limits and known attacks
(concurrent streams, oversized header lists, CONTINUATION floods, rapid reset,
a window that never opens) are answered; a proxied h2 request reaches the
upstream as HTTP/1.1 with the identity headers. Python's h2 (Debian
python3-h2) drives the edge cases frame by frame."""
import shutil
import socket
import ssl
import struct
import subprocess
import time

import pytest

from proxy_helpers import *  # noqa: F401,F403
from conftest import run_mtls
from serve_helpers import SLOW, _context

h2 = pytest.importorskip("h2", reason="python3-h2 is not installed")
import h2.config  # noqa: E402
import h2.connection  # noqa: E402
import h2.errors  # noqa: E402
import h2.events  # noqa: E402
import h2.settings  # noqa: E402
import hpack  # noqa: E402


def start(serve, tmp_path, pki, *args):
    return serve(server_dir(pki, tmp_path), *args)


def curl_h2(port, d, *args):
    return curl("--http2", "--cacert", "serverca.crt", "--cert", "client.crt", "--key",
                "client.key", "-w", "\n%{http_version}\n", *args, cwd=d)


class H2:
    """One mTLS connection speaking HTTP/2 through Python's h2 state machine."""

    def __init__(self, port, pki, alpn=("h2",), settings=None):
        ctx = _context(str(pki))
        ctx.set_alpn_protocols(list(alpn))
        raw = socket.create_connection(("127.0.0.1", port), timeout=20 * SLOW)
        self.s = ctx.wrap_socket(raw, server_hostname="localhost")
        self.alpn = self.s.selected_alpn_protocol()
        cfg = h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
        self.c = h2.connection.H2Connection(config=cfg)
        self.c.initiate_connection()
        if settings:
            self.c.update_settings(settings)
        self.flush()
        self.closed = False
        self.error = None
        self.events = []

    def flush(self):
        data = self.c.data_to_send()
        if data:
            self.s.sendall(data)

    def headers(self, path, method="GET", extra=(), end=True):
        sid = self.c.get_next_available_stream_id()
        hs = [(":method", method), (":path", path), (":scheme", "https"),
              (":authority", "localhost"), *extra]
        self.c.send_headers(sid, hs, end_stream=end)
        return sid

    def pump(self):
        """Reads once; returns the events (empty when the server closed)."""
        try:
            data = self.s.recv(65536)
        except (ConnectionError, ssl.SSLError):
            data = b""
        if not data:
            self.closed = True
            return []
        try:
            evs = self.c.receive_data(data)
        except h2.exceptions.ProtocolError as e:
            self.error = e
            self.closed = True
            return []
        self.flush()
        self.events += evs
        return evs

    def until(self, predicate, what):
        deadline = time.monotonic() + 20 * SLOW
        while not predicate():
            assert not self.closed, \
                f"the server closed the connection before {what} ({self.error!r})"
            assert time.monotonic() < deadline, what
            self.pump()

    def responses(self, ids):
        """{stream id: (status, headers dict, body)} once every stream in ids ended."""
        out = {sid: [None, {}, b""] for sid in ids}
        done = set()
        seen = 0

        def collect():
            nonlocal seen
            for ev in self.events[seen:]:
                sid = getattr(ev, "stream_id", None)
                if sid not in out:
                    continue
                if isinstance(ev, h2.events.ResponseReceived):
                    out[sid][1] = dict(ev.headers)
                    out[sid][0] = int(out[sid][1][":status"])
                elif isinstance(ev, h2.events.DataReceived):
                    out[sid][2] += ev.data
                    self.c.acknowledge_received_data(ev.flow_controlled_length, sid)
                elif isinstance(ev, (h2.events.StreamEnded, h2.events.StreamReset)):
                    done.add(sid)
            seen = len(self.events)
            self.flush()
            return done >= set(ids)
        self.until(collect, f"answers on streams {sorted(set(ids) - done)}")
        return {sid: tuple(v) for sid, v in out.items()}

    def goaway(self):
        for ev in self.events:
            if isinstance(ev, h2.events.ConnectionTerminated):
                return ev
        return None

    def close(self):
        self.s.close()


def test_curl_http2_gets_hello_with_the_client_certificate(serve, tmp_path, init_pki):
    s = start(serve, tmp_path, init_pki)
    r = curl_h2(s.port, s.dir, f"https://localhost:{s.port}/test",
                f"https://localhost:{s.port}/whoami")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.split("\n")
    assert lines[0] == '{"message":"Hello mtls"}'
    assert lines[1] == "2"
    assert '"subject":"CN=localclient"' in lines[2] and lines[3] == "2"
    log = wait_for_text(s.access_log, "/whoami HTTP/2.0")
    assert '"GET /test HTTP/2.0" 200 24' in log and "CN=localclient" in log


def test_head_over_h2_has_the_length_and_no_body(serve, tmp_path, init_pki):
    s = start(serve, tmp_path, init_pki)
    r = curl_h2(s.port, s.dir, "-I", f"https://localhost:{s.port}/test")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("HTTP/2 200") and "content-length: 24" in r.stdout, r.stdout
    assert r.stdout.endswith("\n2\n")


def test_a_client_without_h2_gets_http_1_1(serve, tmp_path, init_pki):
    s = start(serve, tmp_path, init_pki)
    r = curl("--http1.1", "--cacert", "serverca.crt", "--cert", "client.crt", "--key",
             "client.key", "-w", "\n%{http_version}", f"https://localhost:{s.port}/test", cwd=s.dir)
    assert r.returncode == 0 and r.stdout.split("\n") == ['{"message":"Hello mtls"}', "1.1"]
    # No ALPN at all: HTTP/1.1 as before.
    assert b'{"message":"Hello mtls"}' in tls_request(s.port, init_pki)
    c = H2(s.port, init_pki, alpn=("http/1.1",))
    assert c.alpn == "http/1.1"
    c.close()


def test_nghttp_succeeds(serve, tmp_path, init_pki):
    if shutil.which("nghttp") is None:
        pytest.skip("nghttp (Debian nghttp2-client) is not installed")
    s = start(serve, tmp_path, init_pki)
    r = subprocess.run(["nghttp", "--cert", "client.crt", "--key", "client.key",
                        f"https://127.0.0.1:{s.port}/test"], cwd=s.dir, capture_output=True,
                       text=True, timeout=30 * SLOW)
    assert r.returncode == 0, r.stderr
    assert r.stdout == '{"message":"Hello mtls"}'


def test_optional_mode_without_certificate_gets_403_over_h2(serve, tmp_path, init_pki):
    s = start(serve, tmp_path, init_pki, "--verify-client", "optional")
    r = curl("--http2", "--cacert", "serverca.crt", "-w", "\n%{http_version}",
             f"https://localhost:{s.port}/test", cwd=s.dir)
    body, version = r.stdout.split("\n")
    assert version == "2" and '"error":"client certificate required"' in body


def test_many_concurrent_streams_on_one_connection(serve, tmp_path, init_pki):
    s = start(serve, tmp_path, init_pki)
    c = H2(s.port, init_pki)
    c.until(lambda: c.c.remote_settings.max_concurrent_streams == 100, "the server's SETTINGS")
    ids = [c.headers("/test" if i % 2 else "/whoami") for i in range(100)]
    c.flush()
    got = c.responses(ids)
    assert all(st == 200 for st, _, _ in got.values())
    assert got[ids[1]][2] == b'{"message":"Hello mtls"}'
    assert b"CN=localclient" in got[ids[0]][2]
    c.close()


def test_streams_beyond_the_limit_are_refused(serve, tmp_path, init_pki):
    s = start(serve, tmp_path, init_pki)
    c = H2(s.port, init_pki)
    c.until(lambda: c.c.remote_settings.max_concurrent_streams == 100, "the server's SETTINGS")
    # Pretend the server allows more, then open 110 streams that stay open (no END_STREAM).
    c.c.remote_settings = h2.settings.Settings(client=False, initial_values={
        h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 1000})
    ids = [c.headers("/test", method="POST", end=False) for _ in range(110)]
    c.flush()

    def refused():
        return {e.stream_id for e in c.events if isinstance(e, h2.events.StreamReset)
                and e.error_code == h2.errors.ErrorCodes.REFUSED_STREAM}
    # nghttp2 refuses the excess (REFUSED_STREAM before the SETTINGS ack, a
    # connection error after it): either way no stream past the 100th is served.
    c.until(lambda: c.closed or c.goaway() is not None or len(refused()) >= 10,
            "the excess refused")
    while not c.closed:
        c.pump()
    answered = {e.stream_id for e in c.events if isinstance(e, h2.events.ResponseReceived)}
    assert not answered & set(ids[100:])
    assert answered | refused() >= set(ids[:100]) or c.goaway() is not None
    if c.goaway() is not None:
        assert c.goaway().error_code == h2.errors.ErrorCodes.PROTOCOL_ERROR
    else:
        assert refused() == set(ids[100:])
    c.close()


def test_oversized_header_list_gets_431(serve, tmp_path, init_pki):
    s = start(serve, tmp_path, init_pki)
    c = H2(s.port, init_pki)
    big = c.headers("/test", extra=[("x-big", "a" * 12000), ("x-big2", "b" * 12000)])
    many = c.headers("/test", extra=[(f"x-h{i}", "v") for i in range(150)])
    ok = c.headers("/test")
    long_target = c.headers("/test?" + "q" * 9000)
    c.flush()
    got = c.responses([big, many, ok, long_target])
    assert got[long_target][0] == 414
    assert got[big][0] == 431 and got[many][0] == 431
    assert json.loads(got[big][2]) == {"error": "request headers too large"}
    assert got[ok][0] == 200  # the connection goes on
    assert '"GET /test HTTP/2.0" 431' in wait_for_text(s.access_log, " 431 ")
    c.close()


def frame(ftype, flags, sid, payload):
    return struct.pack(">I", len(payload))[1:] + bytes([ftype, flags]) + \
        struct.pack(">I", sid) + payload


def test_continuation_flood_ends_the_session(serve, tmp_path, init_pki):
    s = start(serve, tmp_path, init_pki)
    c = H2(s.port, init_pki)
    enc = hpack.Encoder()
    block = enc.encode([(":method", "GET"), (":path", "/test"), (":scheme", "https"),
                        (":authority", "localhost")])
    piece = enc.encode([("x-a", "b" * 50)])
    data = frame(0x1, 0x0, 1, block)  # HEADERS without END_HEADERS
    data += b"".join(frame(0x9, 0x0, 1, piece) for _ in range(1000))
    try:
        c.s.sendall(data)
    except (ConnectionError, ssl.SSLError):
        pass
    c.until(lambda: c.goaway() is not None, "GOAWAY")
    assert c.goaway().error_code != h2.errors.ErrorCodes.NO_ERROR
    c.until(lambda: False if not c.closed else True, "the close")
    assert "localclient" not in read_text(s.access_log)  # no request reached a handler
    c.close()


def test_rapid_reset_flood_gets_goaway(serve, tmp_path, init_pki):
    s = start(serve, tmp_path, init_pki)
    c = H2(s.port, init_pki)
    for _ in range(400):
        sid = c.headers("/test")
        c.c.reset_stream(sid, h2.errors.ErrorCodes.CANCEL)
    try:
        c.flush()
    except (ConnectionError, ssl.SSLError):
        pass
    c.until(lambda: c.goaway() is not None, "GOAWAY")
    assert c.goaway().error_code == h2.errors.ErrorCodes.ENHANCE_YOUR_CALM
    c.close()
    # Others are served.
    r = curl_h2(s.port, s.dir, f"https://localhost:{s.port}/test")
    assert r.stdout.endswith("\n2\n")


def test_a_window_that_never_opens_is_closed_by_the_idle_timeout(serve, tmp_path, init_pki,
                                                                  upstream):
    s = start(serve, tmp_path, init_pki, "--upstream", upstream.url, "--idle-timeout", "1")
    c = H2(s.port, init_pki, settings={h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 0})
    sid = c.headers("/stream/200000")
    c.flush()
    t0 = time.monotonic()
    c.until(lambda: any(isinstance(e, h2.events.ResponseReceived) for e in c.events), "headers")
    c.until(lambda: c.closed or c.goaway() is not None, "the close")
    assert time.monotonic() - t0 < 15 * SLOW
    assert not any(isinstance(e, h2.events.DataReceived) and e.stream_id == sid and e.data
                   for e in c.events)
    c.close()


def test_a_stalled_stream_is_closed_even_while_the_client_pings(serve, tmp_path, init_pki,
                                                                upstream):
    s = start(serve, tmp_path, init_pki, "--upstream", upstream.url, "--idle-timeout", "1")
    c = H2(s.port, init_pki, settings={h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 0})
    c.headers("/stream/200000")
    c.flush()
    c.until(lambda: any(isinstance(e, h2.events.ResponseReceived) for e in c.events), "headers")
    t0 = time.monotonic()
    c.s.settimeout(0.3)
    while not c.closed and c.goaway() is None:
        assert time.monotonic() - t0 < 15 * SLOW, "still open after 15 s of PINGs"
        c.c.ping(b"12345678")
        try:
            c.flush()
            c.pump()
        except socket.timeout:
            pass
        except (ConnectionError, ssl.SSLError):
            break
    assert time.monotonic() - t0 >= 0.5
    c.close()


def test_proxied_request_reaches_the_upstream_as_http_1_1_with_identity(serve, tmp_path,
                                                                        init_pki, upstream):
    s = start(serve, tmp_path, init_pki, "--upstream", upstream.url, "--identity-headers",
              "rfc9440,plain")
    c = H2(s.port, init_pki)
    get = c.headers("/app/x?y=1", extra=[("x-app", "kept"), ("x-client-subject", "CN=admin"),
                                         ("cookie", "a=1"), ("x-mid", "m"), ("cookie", "b=2")])
    post = c.headers("/upload", method="POST", end=False)
    body = pattern_bytes(150000)
    sent = 0
    big = c.headers("/stream/300000")
    c.flush()
    # The request body goes as the window allows.
    while sent < len(body):
        room = min(c.c.local_flow_control_window(post), c.c.max_outbound_frame_size,
                   len(body) - sent)
        if room > 0:
            c.c.send_data(post, body[sent:sent + room])
            sent += room
            c.flush()
        else:
            c.pump()
    c.c.end_stream(post)
    c.flush()
    got = c.responses([get, post, big])
    assert got[get][0] == 200
    e = json.loads(got[get][2])
    assert e["method"] == "GET" and e["path"] == "/app/x?y=1"
    h = [(n.lower(), v) for n, v in e["headers"]]
    hd = dict(h)
    assert hd["host"] == "localhost" and hd["x-app"] == "kept"
    # Cookie crumbs become one HTTP/1.1 line (RFC 9113 8.2.3).
    assert [v for n, v in h if n == "cookie"] == ["a=1; b=2"]
    assert hd["x-client-subject"] == "CN=localclient"  # the spoofed copy is gone
    assert [v for n, v in h if n == "x-client-subject"] == ["CN=localclient"]
    assert hd["client-cert"].startswith(":") and len(hd["client-cert"]) > 100
    p = json.loads(got[post][2])
    assert got[post][0] == 200 and p["method"] == "POST" and p["body_len"] == len(body)
    assert got[big][0] == 200 and got[big][2] == pattern_bytes(300000)
    log = wait_for_text(s.access_log, "/stream/300000 HTTP/2.0")
    assert '"GET /app/x?y=1 HTTP/2.0" 200' in log and "upstream=200" in log
    c.close()


def test_bench_http2_keeps_streams_in_flight_on_one_connection(serve, tmp_path, init_pki):
    s = start(serve, tmp_path, init_pki)
    r = run_mtls("bench", f"https://localhost:{s.port}/test", "--cacert", "serverca.crt",
                 "--cert", "client.crt", "--key", "client.key", "--http2", "--streams", "8",
                 "--connections", "1", "--requests", "200", "--json", cwd=s.dir, timeout=60)
    assert r.returncode == 0, r.stderr
    j = json.loads(r.stdout)
    assert j["http2"] is True and j["streams"] == 8 and j["mode"] == "HTTP/2 streams"
    assert j["requests"] == 200 and j["handshakes"] == 1, j
    log = wait_for_text(s.access_log, "HTTP/2.0")
    wait_until(lambda: read_text(s.access_log).count('"GET /test HTTP/2.0" 200') == 200,
               what="200 access-log lines")
    assert "mtls-bench" in log
