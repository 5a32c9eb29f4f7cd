"""Helpers for the reverse-proxy tests (test_proxy_*.py): an echoing upstream
per test, a PKI with clients that carry O, OU and SANs, and an HTTP/1.1
client over mTLS that keeps its connection (for keep-alive and pipelining).

Import with `from proxy_helpers import *` so that pytest sees the fixtures.
"""
import json
import os
import socket
import ssl

import pytest

import pki_openssl
from serve_helpers import *  # noqa: F401,F403 (fixtures and helpers)
from serve_helpers import SLOW, _context
from upstream_echo import Upstream, pattern_bytes

__all__ = ["upstream", "proxy_pki", "Conn", "proxy", "pattern_bytes", "json", "os"] + \
    [n for n in __import__("serve_helpers").__all__]


@pytest.fixture
def upstream():
    u = Upstream()
    yield u
    u.close()


def _client(d, name, subj, san=None):
    """An EC client certificate signed by mtls init's client CA."""
    pki_openssl.openssl("req", "-new", "-nodes", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:P-256", "-subj", subj, "-keyout", f"{name}.key",
                        "-out", f"{name}.csr", cwd=d)
    ext = "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=clientAuth\n"
    if san:
        ext += f"subjectAltName={san}\n"
    pki_openssl._sign(d, name, "clientca", ext=ext)


@pytest.fixture(scope="session")
def proxy_pki(init_pki):
    """mtls init's PKI plus alice (O, OU, DNS/URI/email SANs) and bob (a deeper SPIFFE ID)."""
    d = str(init_pki)
    if not os.path.exists(os.path.join(d, "alice.crt")):
        _client(d, "alice", "/O=Example/OU=eng/CN=alice",
                "DNS:alice.example.org,URI:spiffe://example.org/ns/prod/sa/web,"
                "email:alice@example.org")
        _client(d, "bob", "/O=Other/CN=bob", "URI:spiffe://example.org/ns/prod/sa/web/extra")
    return init_pki


def proxy(serve, tmp_path, pki, upstream_url, *args):
    """mtls serve in a copy of pki's folder with --upstream upstream_url."""
    from serve_helpers import server_dir
    d = server_dir(pki, tmp_path)
    return serve(d, "--upstream", upstream_url, *args)


class Conn:
    """One mTLS connection to the server, kept open; send() raw bytes, response() one answer."""

    def __init__(self, port, pki, cert="client.crt", key="client.key"):
        ctx = _context(str(pki), cert, key)
        raw = socket.create_connection(("127.0.0.1", port), timeout=20 * SLOW)
        self.s = ctx.wrap_socket(raw, server_hostname="localhost")
        self.buf = b""

    def send(self, data):
        self.s.sendall(data)

    def _fill(self):
        chunk = self.s.recv(65536)
        if not chunk:
            raise EOFError("the server closed the connection")
        self.buf += chunk

    def _line(self):
        while b"\r\n" not in self.buf:
            self._fill()
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _take(self, n):
        while len(self.buf) < n:
            self._fill()
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def response(self, head=False):
        """(status, [(name, value)], body) of the next response."""
        status = int(self._line().split(b" ")[1])
        headers = []
        while True:
            line = self._line()
            if not line:
                break
            name, value = line.decode("latin-1").split(":", 1)
            headers.append((name, value.strip()))
        names = {n.lower(): v for n, v in headers}
        body = b""
        if head or status in (204, 304) or 100 <= status < 200:
            pass
        elif names.get("transfer-encoding", "").lower() == "chunked":
            while True:
                size = int(self._line().split(b";")[0], 16)
                if size == 0:
                    self._line()
                    break
                body += self._take(size)
                self._take(2)
        elif "content-length" in names:
            body = self._take(int(names["content-length"]))
        else:
            try:
                while True:
                    self._fill()
            except EOFError:
                body, self.buf = self.buf, b""
        return status, headers, body

    def request(self, method, path, headers=(), body=None):
        lines = [f"{method} {path} HTTP/1.1", "Host: localhost"]
        lines += [f"{n}: {v}" for n, v in headers]
        if body is not None:
            lines.append(f"Content-Length: {len(body)}")
        data = ("\r\n".join(lines) + "\r\n\r\n").encode() + (body or b"")
        self.send(data)
        return self.response(head=method == "HEAD")

    def close(self):
        self.s.close()
