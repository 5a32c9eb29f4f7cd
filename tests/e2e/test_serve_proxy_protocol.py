"""`mtls serve --proxy-protocol` on loopback, with a PROXY protocol v2 header
written by hand (tests/e2e/test_replicas.py has HAProxy write it): the address
it names is the one both logs and the upstream's X-Forwarded-For and Forwarded
show; LOCAL keeps the connection's own; a header in pieces is fine; a
connection without a valid header is refused and named in the system log; a
header that never completes meets the handshake timeout."""
import ipaddress
import json
import os
import socket
import ssl
import struct
import time

from proxy_helpers import upstream  # noqa: F401 (fixture)
from serve_helpers import *  # noqa: F401,F403 (fixtures)
from serve_helpers import SLOW, server_dir

SIG = b"\r\n\r\n\x00\r\nQUIT\n"


def pp2(src, sport, dport=443, command=1, tlvs=b""):
    """A PROXY protocol v2 header for TCP from src:sport (IPv4 or IPv6)."""
    s = ipaddress.ip_address(src)
    d = ipaddress.ip_address("198.51.100.1" if s.version == 4 else "2001:db8::1")
    fam = 0x11 if s.version == 4 else 0x21
    body = s.packed + d.packed + struct.pack("!HH", sport, dport) + tlvs
    return SIG + bytes([0x20 | command, fam]) + struct.pack("!H", len(body)) + body


def local_header():
    return SIG + b"\x20\x00\x00\x00"


def request_after(port, d, header, pieces=1, path="/test"):
    """Sends header (in pieces), then an mTLS GET; returns the response bytes."""
    ctx = ssl.create_default_context(cafile=os.path.join(d, "serverca.crt"))
    ctx.load_cert_chain(os.path.join(d, "client.crt"), os.path.join(d, "client.key"))
    with socket.create_connection(("127.0.0.1", port), timeout=10 * SLOW) as raw:
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        step = max(1, len(header) // pieces)
        for i in range(0, len(header), step):
            raw.sendall(header[i:i + step])
            if pieces > 1:
                time.sleep(0.02)  # separate segments, so the server reads it in pieces
        with ctx.wrap_socket(raw, server_hostname="localhost") as s:
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
                      .encode())
            data = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    return data
                data += chunk


def json_lines(path):
    return [json.loads(l) for l in read_text(path).splitlines() if l.strip()]


def wait_access_lines(s, n):
    wait_until(lambda: len(json_lines(s.access_log)) >= n, timeout=10 * SLOW,
               what=f"{n} access-log lines")
    return json_lines(s.access_log)


def test_the_header_address_is_the_client(init_pki, serve, tmp_path):
    d = server_dir(init_pki, tmp_path)
    s = serve(d, "--proxy-protocol", "--log-format", "json")
    assert "PROXY protocol v2 required" in read_text(s.system_log)
    assert request_after(s.port, d, pp2("203.0.113.9", 40000)).startswith(b"HTTP/1.1 200 ")
    assert request_after(s.port, d, pp2("2001:db8::9", 40001)).startswith(b"HTTP/1.1 200 ")
    # In pieces (a byte at a time for the fixed part), with TLVs after the addresses.
    tlvs = b"\x04\x00\x02xy" + b"\x05\x00\x03abc"
    assert request_after(s.port, d, pp2("192.0.2.33", 40002, tlvs=tlvs),
                         pieces=40).startswith(b"HTTP/1.1 200 ")
    lines = wait_access_lines(s, 3)
    assert [l["remote_addr"] for l in lines] == ["203.0.113.9", "2001:db8::9", "192.0.2.33"]


def test_system_log_names_the_client(init_pki, serve, tmp_path):
    d = server_dir(init_pki, tmp_path)
    s = serve(d, "--proxy-protocol", "--log-format", "json")
    # A client without a certificate, behind the balancer: refused, named by its own address.
    ctx = ssl.create_default_context(cafile=os.path.join(d, "serverca.crt"))
    with socket.create_connection(("127.0.0.1", s.port), timeout=10 * SLOW) as raw:
        raw.sendall(pp2("203.0.113.50", 41000))
        try:
            with ctx.wrap_socket(raw, server_hostname="localhost") as t:
                t.sendall(b"GET /test HTTP/1.1\r\nHost: x\r\n\r\n")
                t.recv(100)
        except (ssl.SSLError, OSError):
            pass
    wait_for_text(s.system_log, "handshake_rejected")
    rejected = [l for l in json_lines(s.system_log) if l["event"] == "handshake_rejected"]
    assert rejected[0]["peer"] == "203.0.113.50:41000", rejected


def test_the_upstream_sees_the_client_address(init_pki, serve, tmp_path, upstream):
    d = server_dir(init_pki, tmp_path)
    with open(os.path.join(d, "pp.yaml"), "w") as f:
        f.write(f"upstream: {upstream.url}\nproxy_protocol: true\n")
    s = serve(d, "--config", "pp.yaml")  # the flag's key in the configuration file
    answer = request_after(s.port, d, pp2("203.0.113.9", 40000), path="/app")
    assert answer.startswith(b"HTTP/1.1 200 "), answer[:200]
    headers = json.loads(answer.split(b"\r\n\r\n", 1)[1])["headers"]
    assert ["X-Forwarded-For", "203.0.113.9"] in headers, headers
    assert ["Forwarded", "for=203.0.113.9;proto=https"] in headers, headers
    answer = request_after(s.port, d, pp2("2001:db8::9", 40001), path="/app")
    headers = json.loads(answer.split(b"\r\n\r\n", 1)[1])["headers"]
    assert ["Forwarded", 'for="[2001:db8::9]";proto=https'] in headers, headers


def test_local_keeps_the_connection_address(init_pki, serve, tmp_path):
    d = server_dir(init_pki, tmp_path)
    s = serve(d, "--proxy-protocol", "--log-format", "json")
    assert request_after(s.port, d, local_header()).startswith(b"HTTP/1.1 200 ")
    # LOCAL with an address block anyway: skipped, not used.
    hdr = pp2("203.0.113.9", 40000, command=0)
    assert request_after(s.port, d, hdr).startswith(b"HTTP/1.1 200 ")
    assert [l["remote_addr"] for l in wait_access_lines(s, 2)] == ["127.0.0.1", "127.0.0.1"]


def refused(port, payload, close=False):
    """Sends payload; returns what the server sent back before it closed (b'' or an error)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10 * SLOW) as raw:
        raw.sendall(payload)
        if close:
            raw.shutdown(socket.SHUT_WR)
        try:
            return raw.recv(100)
        except ConnectionResetError:
            return b""


def test_without_a_valid_header_refused(init_pki, serve, tmp_path):
    d = server_dir(init_pki, tmp_path)
    s = serve(d, "--proxy-protocol", "--log-format", "json")
    # A TLS client that skips the balancer.
    assert tls_error(s.port, d) != ""
    wait_for_text(s.system_log, "proxy_header_rejected")
    # Version 1 text, a bad length, a truncated header.
    assert refused(s.port, b"PROXY TCP4 192.0.2.1 192.0.2.2 1000 443\r\n") == b""
    bad_len = SIG + b"\x21\x11\x00\x08" + b"\x00" * 8
    assert refused(s.port, bad_len) == b""
    assert refused(s.port, pp2("203.0.113.9", 40000)[:20], close=True) == b""

    def events():
        return [l for l in json_lines(s.system_log) if l["event"] == "proxy_header_rejected"]
    wait_until(lambda: len(events()) >= 4, timeout=10 * SLOW, what="4 refusals logged")
    ev = events()
    assert all(e["peer"].startswith("127.0.0.1:") for e in ev), ev
    assert "TLS handshake" in ev[0]["message"] and ev[0]["level"] == "warn", ev[0]
    assert "only v2 is accepted" in ev[1]["message"], ev[1]
    assert "too short for its IPv4 addresses" in ev[2]["message"], ev[2]
    assert "closed after 20 bytes" in ev[3]["message"] and ev[3]["level"] == "info", ev[3]
    # Still serving.
    assert request_after(s.port, d, pp2("203.0.113.9", 40000)).startswith(b"HTTP/1.1 200 ")


def test_header_that_never_completes_times_out(init_pki, serve, tmp_path):
    d = server_dir(init_pki, tmp_path)
    s = serve(d, "--proxy-protocol", "--handshake-timeout", "300ms")
    with socket.create_connection(("127.0.0.1", s.port), timeout=10 * SLOW) as raw:
        raw.sendall(pp2("203.0.113.9", 40000)[:10])
        started = time.monotonic()
        assert raw.recv(100) == b""  # the server closes it
        assert time.monotonic() - started < 5 * SLOW
    text = wait_for_text(s.system_log, "no whole PROXY protocol header in time")
    assert "127.0.0.1:" in text
