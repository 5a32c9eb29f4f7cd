"""Issue 5, server side: CRLs (--crl, certificate_revoked with the serial in
the log, expired CRLs refused, the one-week warning), SIGHUP reload that is
checked first and keeps open connections, client chains through an
intermediate CA."""
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import time

import pytest

import pki_openssl
from conftest import MTLS, assert_no_sanitizer_report, run_mtls
from serve_helpers import *  # noqa: F401,F403 (fixtures)
from serve_helpers import SLOW, server_dir


def mtls_ok(*args, cwd):
    r = run_mtls(*args, cwd=cwd)
    assert r.returncode == 0, (args, r.stderr)
    return r


def serial_of(d, cert):
    r = subprocess.run(["openssl", "x509", "-in", cert, "-noout", "-serial"], cwd=d,
                       capture_output=True, text=True, check=True)
    return r.stdout.strip().split("=", 1)[1].upper()


def open_tls(port, d, cert, key):
    ctx = ssl.create_default_context(cafile=os.path.join(d, "serverca.crt"))
    ctx.load_cert_chain(os.path.join(d, cert), os.path.join(d, key))
    raw = socket.create_connection(("127.0.0.1", port), timeout=10 * SLOW)
    return ctx.wrap_socket(raw, server_hostname="localhost")


def get(c):
    c.sendall(b"GET /test HTTP/1.1\r\nHost: x\r\n\r\n")
    data = b""
    while not data.endswith(b"}"):
        chunk = c.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def refused(port, d, cert, key):
    return tls_error(port, d, cert=cert, key=key) != ""


@pytest.fixture
def pki(tmp_path):
    """A fresh `mtls init` PKI (the CA inventory changes in these tests) plus client 'bob'."""
    mtls_ok("init", "--dir", tmp_path, cwd=tmp_path)
    mtls_ok("cert", "issue", "--ca", "clientca", "--profile", "client", "--cn", "bob", "--out",
            "bob", cwd=tmp_path)
    mtls_ok("crl", "create", "--ca", "clientca", "--out", "clients.crl", cwd=tmp_path)
    return tmp_path


@pytest.mark.parametrize("model", ["process", "thread"])
def test_revoke_then_sighup_refuses_that_client_only(model, pki, serve):
    d = pki
    s = serve(d, "--crl", "clients.crl", "--worker-model", model, workers=2)
    early = open_tls(s.port, d, "bob.crt", "bob.key")  # keep-alive, opened before the reload
    assert b"Hello mtls" in get(early)
    mtls_ok("ca", "revoke", "--ca", "clientca", "bob.crt", "--reason", "keyCompromise", cwd=d)
    mtls_ok("crl", "create", "--ca", "clientca", "--out", "clients.crl", "--force", cwd=d)
    s.proc.send_signal(signal.SIGHUP)
    s.wait_reloaded()
    # Workers load the checked files right after; new handshakes use them.
    wait_until(lambda: refused(s.port, d, "bob.crt", "bob.key"), timeout=10 * SLOW,
               what="bob refused after the reload")
    assert "certificate revoked" in tls_error(s.port, d, cert="bob.crt", key="bob.key")
    r = curl("--cacert", "serverca.crt", "--cert", "bob.crt", "--key", "bob.key",
             f"https://localhost:{s.port}/test", cwd=d)
    assert r.returncode in (35, 56), r
    serial = serial_of(d, "bob.crt")
    log = wait_for_text(s.system_log, f"client certificate 'CN=bob' (serial {serial}) was revoked by "
                        "its CA 'CN=client-example-ca' on ")
    assert "(keyCompromise)" in log
    assert "(alert certificate_revoked)" in log
    assert b"Hello mtls" in tls_request(s.port, d)  # another client still gets 200
    assert b"Hello mtls" in get(early)               # the open connection goes on
    early.close()


@pytest.mark.parametrize("model", ["process", "thread"])
def test_a_bad_reload_keeps_the_old_set(model, pki, serve):
    d = pki
    s = serve(d, "--crl", "clients.crl", "--worker-model", model, workers=2)
    shutil.copy(os.path.join(d, "server.key"), os.path.join(d, "server.key.good"))
    shutil.copy(os.path.join(d, "client.key"), os.path.join(d, "server.key"))  # wrong key
    s.proc.send_signal(signal.SIGHUP)
    log = wait_for_text(s.system_log, "reload refused")
    assert "the old certificates stay in force" in log and "does not match" in log
    assert b"Hello mtls" in tls_request(s.port, d)
    shutil.copy(os.path.join(d, "server.key.good"), os.path.join(d, "server.key"))
    # An expired CRL (openssl-made, nextUpdate one second ahead) is refused too.
    crl = pki_openssl.openssl_crl(str(d), crlsec=1, out="clients.crl")
    wait_until(lambda: time.time() > os.path.getmtime(crl) + 2, timeout=10,
               what="the CRL to expire")
    s.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: read_text(s.system_log).count("reload refused") == 2, timeout=10 * SLOW,
               what="a second refusal")
    assert re.search(r"CRL 'clients.crl' from CN=client-example-ca expired on ",
                     read_text(s.system_log))
    assert b"Hello mtls" in tls_request(s.port, d)


def test_thread_workers_read_no_file_once_it_says_it_listens(pki):
    """The thread workers' SSL_CTXs are loaded before the 'listening' line: a key replaced the
    moment it appears is the business of the SIGHUP that follows (refused here), not of the
    start. (Loaded after that line, worker 1 read the new key, could not start, and the server
    exited with the SIGHUP unanswered: twice on a fresh Debian 12 under ASan.)"""
    d = str(pki)
    key, good, new = (os.path.join(d, n) for n in ("server.key", "server.key.good", "new.key"))
    shutil.copy(key, good)
    for i in range(3):
        shutil.copy(os.path.join(d, "client.key"), new)  # the wrong key, ready to move in
        p = subprocess.Popen([MTLS, "serve", "--listen", "127.0.0.1:0", "--worker-model",
                              "thread", "--workers", "4", "--crl", "clients.crl"], cwd=d,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            line = p.stdout.readline()
            assert "HTTPS listening on" in line, p.stderr.read()
            os.replace(new, key)
            p.send_signal(signal.SIGHUP)
            log = os.path.join(d, "system.log")
            wait_until(lambda: read_text(log).count("reload refused") > i or p.poll() is not None,
                       timeout=10 * SLOW, what="the SIGHUP's answer")
            assert p.poll() is None, f"run {i}: mtls serve exited {p.returncode}: {p.stderr.read()}"
            assert "the old certificates stay in force" in read_text(log)
        finally:
            shutil.copy(good, key)
            p.send_signal(signal.SIGTERM)
            _, err = p.communicate(timeout=20 * SLOW)
        assert p.returncode == 0, err
        assert_no_sanitizer_report(err, "mtls serve")


def test_crl_problems_at_start(pki, tmp_path):
    d = pki
    crl = pki_openssl.openssl_crl(str(d), crlsec=1, out="old.crl")
    wait_until(lambda: time.time() > os.path.getmtime(crl) + 2, timeout=10,
               what="the CRL to expire")
    r = run_mtls("serve", "--listen", f"127.0.0.1:{free_port()}", "--crl", "old.crl", cwd=d)
    assert r.returncode == 2 and "CRL 'old.crl'" in r.stderr and "expired on" in r.stderr, r.stderr
    r = run_mtls("serve", "--listen", f"127.0.0.1:{free_port()}", "--crl", "client.crt", cwd=d)
    assert r.returncode == 2 and "holds no PEM CRL" in r.stderr, r.stderr


def test_a_crl_that_expires_within_a_week_is_warned_about(pki, serve):
    d = pki
    pki_openssl.openssl_crl(str(d), revoke=[os.path.join(d, "bob.crt")], crldays=3,
                            out="soon.crl")
    s = serve(d, "--crl", "soon.crl")
    assert "make a fresh one before then" in read_text(s.err)
    assert "make a fresh one before then" in read_text(s.system_log)
    assert "unknown ca" not in tls_error(s.port, d, cert="bob.crt", key="bob.key")
    assert "certificate revoked" in tls_error(s.port, d, cert="bob.crt", key="bob.key")
    assert b"Hello mtls" in tls_request(s.port, d)


def test_client_chains_through_an_intermediate(pki, serve):
    d = pki
    mtls_ok("ca", "create", "--out", "inter", "--cn", "client-intermediate", "--parent",
            "clientca", cwd=d)
    mtls_ok("cert", "issue", "--ca", "inter", "--profile", "client", "--cn", "carol", "--out",
            "carol", cwd=d)
    assert os.path.exists(os.path.join(d, "carol.chain.crt"))
    s = serve(d)  # trusts clientca.crt (the root) only
    r = curl("--cacert", "serverca.crt", "--cert", "carol.chain.crt", "--key", "carol.key",
             f"https://localhost:{s.port}/whoami", cwd=d)
    assert r.returncode == 0, r.stderr
    who = json.loads(r.stdout)["client"]
    assert who["subject"] == "CN=carol" and who["issuer"] == "CN=client-intermediate"
    err = tls_error(s.port, d, cert="carol.crt", key="carol.key")  # leaf without its chain
    assert "unknown ca" in err, err
    wait_for_text(s.system_log,
                  "issuer not trusted: client certificate 'CN=carol' was issued by "
                  "'CN=client-intermediate', which is not a trusted CA")


def _resume_once(port, d, session):
    ctx = _resume_ctx(d)
    raw = socket.create_connection(("127.0.0.1", port), timeout=10 * SLOW)
    with ctx.wrap_socket(raw, server_hostname="localhost", session=session) as c:
        c.sendall(b"GET /whoami HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while True:
            chunk = c.recv(65536)
            if not chunk:
                break
            data += chunk
        return c.session_reused, c.session, data


_ctx_cache = {}


def _resume_ctx(d):
    # Sessions resume only through the SSLContext that made them.
    if d not in _ctx_cache:
        ctx = ssl.create_default_context(cafile=os.path.join(d, "serverca.crt"))
        ctx.load_cert_chain(os.path.join(d, "client.crt"), os.path.join(d, "client.key"))
        _ctx_cache[d] = ctx
    return _ctx_cache[d]


@pytest.mark.parametrize("model", ["process", "thread"])
def test_resumed_sessions_keep_the_identity_until_a_reload(model, pki, serve):
    d = str(pki)
    # One worker here; tests/e2e/test_serve_resume.py resumes across 2 and 8.
    s = serve(d, "--worker-model", model, workers=1)
    reused, session, data = _resume_once(s.port, d, None)
    assert not reused and b'"subject":"CN=localclient"' in data
    for _ in range(6):
        reused, _, data = _resume_once(s.port, d, session)
        assert reused, "the session must resume from the cache"
        assert b'"subject":"CN=localclient"' in data and b"HTTP/1.1 200 OK" in data
    wait_until(lambda: read_text(s.access_log).count("127.0.0.1 - CN=localclient [") == 7,
               what="7 access-log lines with the client's subject")
    s.proc.send_signal(signal.SIGHUP)
    s.wait_reloaded()
    # A new context, an empty cache: the old session no longer resumes (a full handshake).
    wait_until(lambda: not _resume_once(s.port, d, session)[0], timeout=10 * SLOW,
               what="the old ticket to be refused")
    reused, _, data = _resume_once(s.port, d, session)
    assert not reused and b"HTTP/1.1 200 OK" in data


def test_a_crl_that_expires_while_serving_is_reported(pki, serve):
    d = pki
    crl = pki_openssl.openssl_crl(str(d), crlsec=3, out="short.crl")
    s = serve(d, "--crl", "short.crl")
    assert b"Hello mtls" in tls_request(s.port, d)
    wait_for_text(s.system_log, "every client certificate of that CA is refused", timeout=15)
    assert "the CRL from CN=client-example-ca expired on" in read_text(s.system_log)
    assert tls_error(s.port, d), "a client checked against an expired CRL is refused"
    wait_for_text(s.system_log, "the CRL of 'CN=client-example-ca' expired on ")
    assert "so client certificate 'CN=localclient' cannot be checked" in read_text(s.system_log)
    assert os.path.exists(crl)
