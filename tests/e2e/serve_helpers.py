"""Helpers and fixtures for the `mtls serve` end-to-end tests (test_serve_*.py):
a server process that is always stopped, PKIs made by `mtls init` and by the
openssl CLI, and clients (curl, Python ssl) that report what happened.

Import with `from serve_helpers import *` so that pytest sees the fixtures.
"""
import os
import re
import signal
import socket
import ssl
import subprocess
import time

import pytest

import pki_openssl
from conftest import MTLS, SANITIZED, assert_no_sanitizer_report, free_port, run_mtls, wait_until

__all__ = ["Server", "serve", "init_pki", "openssl_pki", "curl", "tls_request", "tls_error",
           "read_text", "wait_for_text", "free_port", "wait_until", "SANITIZED"]

# Sanitized builds are several times slower; waits scale with them.
SLOW = 4 if SANITIZED else 1


def read_text(path):
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except FileNotFoundError:
        return ""


def wait_for_text(path, text, timeout=10):
    wait_until(lambda: text in read_text(path), timeout=timeout * SLOW,
               what=f"{text!r} in {os.path.basename(path)}:\n{read_text(path)[-3000:]}")
    return read_text(path)


class Server:
    """`mtls serve` in folder d, started and stopped by the tests.

    It listens on 127.0.0.1 port 0 (the kernel picks a free port, no race with other
    processes) and .port is the port it printed, once wait_ready() returns; port=N asks
    for that port instead."""

    _count = 0

    def __init__(self, d, *args, workers=1, port=None, listen=True):
        self.dir = str(d)
        self.port = port
        Server._count += 1
        self.out = os.path.join(self.dir, f"serve-{os.getpid()}-{Server._count}.out")
        self.err = os.path.join(self.dir, f"serve-{os.getpid()}-{Server._count}.err")
        self.system_log = os.path.join(self.dir, "system.log")
        self.access_log = os.path.join(self.dir, "access.log")
        self.args = [str(a) for a in args]
        self.workers = workers
        cmd = [MTLS, "serve"]
        if listen:
            cmd += ["--listen", f"127.0.0.1:{port or 0}"]
        if workers is not None:
            cmd += ["--workers", str(workers)]
        cmd += [str(a) for a in args]
        env = dict(os.environ, NO_COLOR="1")
        with open(self.out, "w") as out, open(self.err, "w") as err:
            self.proc = subprocess.Popen(cmd, cwd=self.dir, stdout=out, stderr=err, env=env)
        self.returncode = None

    def wait_ready(self):
        def ready():
            if self.proc.poll() is not None:
                raise AssertionError(f"mtls serve exited {self.proc.returncode}:\n"
                                     f"{read_text(self.err)}")
            return "HTTPS listening on" in read_text(self.out)
        wait_until(ready, timeout=15 * SLOW, what="HTTPS listening")
        # "HTTPS listening on 127.0.0.1:PORT...." (or "on PORT...." for every address).
        m = re.search(r"HTTPS listening on (?:\S*:)?(\d+)[ .]", read_text(self.out))
        assert m, read_text(self.out)
        self.port = int(m.group(1))
        return self

    def wait_reloaded(self, count=1):
        """Waits for the count-th "SIGHUP: reloaded" of the main process and, with process
        workers that reload themselves (not thread workers, not --user's new generations),
        for each worker to say it uses the new certificates: only then do all new
        handshakes use them."""
        wait_until(lambda: read_text(self.system_log).count("SIGHUP: reloaded") >= count,
                   timeout=10 * SLOW, what=f"reload {count} in {self.system_log}")
        threads = "thread" in self.args or "threads" in self.args
        if threads or "--user" in self.args or "--config" in self.args:
            return read_text(self.system_log)
        n = count * (self.workers or 1)
        wait_until(lambda: read_text(self.system_log).count("now uses the new certificates") >= n,
                   timeout=10 * SLOW, what=f"{n} worker reloads in {self.system_log}")
        return read_text(self.system_log)

    def stop(self, sig=signal.SIGTERM, timeout=20):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout * SLOW)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError("mtls serve did not stop after SIGTERM")
        self.returncode = self.proc.returncode
        assert_no_sanitizer_report(read_text(self.err), "mtls serve")
        assert self.returncode != 86, f"sanitizer exit code:\n{read_text(self.err)}"
        return self.returncode

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def serve():
    """serve(dir, *args, workers=1) -> a running Server; every one is stopped at teardown."""
    started = []

    def start(d, *args, **kw):
        s = Server(d, *args, **kw)
        started.append(s)
        return s.wait_ready()
    yield start
    errors = []
    for s in started:
        try:
            if s.proc.poll() is None:
                rc = s.stop()
                if rc != 0:
                    errors.append(f"mtls serve exited {rc} after SIGTERM:\n{read_text(s.err)}")
            else:
                assert_no_sanitizer_report(read_text(s.err), "mtls serve")
        except AssertionError as e:
            errors.append(str(e))
        finally:
            s.kill()
    assert not errors, "\n".join(errors)


@pytest.fixture(scope="session")
def init_pki(tmp_path_factory):
    """The PKI of `mtls init` (EC P-256, SANs localhost and 127.0.0.1), plus bad certificates."""
    d = tmp_path_factory.mktemp("init-pki")
    r = run_mtls("init", "--dir", d)
    assert r.returncode == 0, r.stderr
    pki_openssl.other_ca_client(str(d))
    pki_openssl.expired_client(str(d))
    pki_openssl.server_cert_as_client(str(d))
    pki_openssl.fake_ca_copy(str(d))
    pki_openssl.client_with_eku(str(d))
    return d


@pytest.fixture(scope="session")
def openssl_pki(tmp_path_factory):
    """The article's PKI made with its own openssl commands (RSA, no extensions)."""
    d = tmp_path_factory.mktemp("openssl-pki")
    pki_openssl.article_pki(str(d))
    return d


def server_dir(pki, tmp_path):
    """A fresh folder holding the PKI's files (the server reads them from its cwd)."""
    for name in os.listdir(pki):
        src = os.path.join(pki, name)
        if os.path.isfile(src):
            with open(src, "rb") as f, open(os.path.join(tmp_path, name), "wb") as g:
                g.write(f.read())
    return tmp_path


__all__.append("server_dir")


def curl(*args, cwd, timeout=30):
    """Runs curl -s ARGS in cwd; returns the CompletedProcess."""
    return subprocess.run(["curl", "-s", "-S", *[str(a) for a in args]], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout * SLOW)


def _context(pki, cert="client.crt", key="client.key", version=None, cafile="serverca.crt"):
    ctx = ssl.create_default_context(cafile=os.path.join(pki, cafile))
    if cert:
        ctx.load_cert_chain(os.path.join(pki, cert), os.path.join(pki, key))
    if version is not None:
        ctx.minimum_version = ctx.maximum_version = version
    return ctx


def tls_request(port, pki, request=None, cert="client.crt", key="client.key", version=None,
                timeout=10):
    """Sends request over mTLS (Python ssl) and returns every byte until the server closes."""
    if request is None:
        request = b"GET /test HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    ctx = _context(pki, cert, key, version)
    with socket.create_connection(("127.0.0.1", port), timeout=timeout * SLOW) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as s:
            s.sendall(request)
            data = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    return data
                data += chunk


def tls_error(port, pki, cert="client.crt", key="client.key", version=None):
    """The ssl error text (lower case, '_' as ' ') a rejected client sees, or '' if none."""
    try:
        tls_request(port, pki, cert=cert, key=key, version=version)
    except (ssl.SSLError, ConnectionError, OSError) as e:
        return str(e).lower().replace("_", " ")
    return ""
