"""Issue 14, item 1: every worker resumes every worker's sessions (the shared
session cache), with the client's identity intact, a revoked client never
resumed after the CRL reload, and a reload emptying the cache."""
import json
import os
import signal
import socket
import ssl

import pytest

from conftest import run_mtls
from serve_helpers import *  # noqa: F401,F403 (fixtures)
from serve_helpers import SLOW


def mtls_ok(*args, cwd):
    r = run_mtls(*args, cwd=cwd)
    assert r.returncode == 0, (args, r.stderr)
    return r


@pytest.fixture
def pki(tmp_path):
    """A fresh `mtls init` PKI (bob gets revoked in one test) plus client 'bob'."""
    mtls_ok("init", "--dir", tmp_path, cwd=tmp_path)
    mtls_ok("cert", "issue", "--ca", "clientca", "--profile", "client", "--cn", "bob", "--out",
            "bob", cwd=tmp_path)
    mtls_ok("crl", "create", "--ca", "clientca", "--out", "clients.crl", cwd=tmp_path)
    return str(tmp_path)


def client_ctx(d, name="client", version=None):
    # Python resumes a session only through the SSLContext that made it.
    ctx = ssl.create_default_context(cafile=os.path.join(d, "serverca.crt"))
    ctx.load_cert_chain(os.path.join(d, f"{name}.crt"), os.path.join(d, f"{name}.key"))
    if version is not None:
        ctx.maximum_version = version
    return ctx


def whoami(ctx, port, session=None, raw_body=False):
    """One connection, GET /whoami: (resumed?, the session to offer next, the JSON or None)."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=10 * SLOW)
    with ctx.wrap_socket(raw, server_hostname="localhost", session=session) as c:
        c.sendall(b"GET /whoami HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while True:
            chunk = c.recv(65536)
            if not chunk:
                break
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        if raw_body:
            return c.session_reused, c.session, head.split(b"\r\n")[0] + b" " + body
        ok = head.startswith(b"HTTP/1.1 200 ")
        return c.session_reused, c.session, json.loads(body)["client"] if ok else None


def serial_of(d, cert):
    r = run_mtls("cert", "show", "--json", cert, cwd=d)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)["serial"]


def resumed_share(ctx, port, session, n):
    """Offers session on n new connections; returns how many resumed and the identities seen."""
    resumed, seen = 0, set()
    for _ in range(n):
        reused, _, who = whoami(ctx, port, session)
        resumed += reused
        assert who is not None, "a resumed connection must be answered 200"
        seen.add((who["subject"], who["serial"]))
    return resumed, seen


@pytest.mark.parametrize("workers,model", [(2, "process"), (8, "process"), (2, "thread")])
def test_every_worker_resumes_with_the_identity(workers, model, pki, serve):
    d = pki
    s = serve(d, "--worker-model", model, workers=workers)
    ctx = client_ctx(d)
    reused, session, who = whoami(ctx, s.port)
    assert not reused and who["subject"] == "CN=localclient"
    # SO_REUSEPORT spreads these connections over the workers by their source port:
    # with a cache per worker only about 1 in N would resume.
    resumed, seen = resumed_share(ctx, s.port, session, 100)
    assert resumed >= 99, f"{resumed} of 100 resumed with {workers} workers"
    assert seen == {("CN=localclient", serial_of(d, "client.crt"))}


def test_tls12_sessions_resume_on_every_worker(pki, serve):
    d = pki
    s = serve(d, workers=4)
    ctx = client_ctx(d, version=ssl.TLSVersion.TLSv1_2)
    reused, session, who = whoami(ctx, s.port)
    assert not reused and who["subject"] == "CN=localclient"
    # TLS 1.2 resumes by session id, the same session every time.
    resumed, seen = resumed_share(ctx, s.port, session, 50)
    assert resumed >= 49, f"{resumed} of 50 resumed"
    assert seen == {("CN=localclient", serial_of(d, "client.crt"))}


def test_an_unverified_client_stays_unverified_when_resumed(pki, serve):
    """verify-client optional: a client the server does not trust gets 403 on every worker,
    resumed or not; the session carries the verification result, not just the certificate."""
    d = pki
    mtls_ok("init", "--dir", os.path.join(d, "other"), cwd=d)  # a CA the server does not trust
    for f in ("client.crt", "client.key"):
        os.rename(os.path.join(d, "other", f), os.path.join(d, "stranger." + f.split(".")[1]))
    s = serve(d, "--verify-client", "optional", workers=4)
    ctx = client_ctx(d, "stranger")
    reused, session, first = whoami(ctx, s.port, raw_body=True)
    assert not reused and first.startswith(b"HTTP/1.1 403 ")
    assert b"CN=client-example-ca" in first and b"trusted" in first  # the reason names the CA
    resumed = 0
    for _ in range(30):
        reused, _, answer = whoami(ctx, s.port, session, raw_body=True)
        resumed += reused
        # The reason's wording may be shorter on a resumed connection (no verify note then).
        assert answer.startswith(b"HTTP/1.1 403 "), answer
        assert b"CN=client-example-ca" in answer and b"trusted" in answer, answer
    assert resumed >= 29


@pytest.mark.parametrize("workers,tickets", [(2, False), (8, False), (2, True)])
def test_bench_resumes_on_every_worker(workers, tickets, pki, serve):
    d = pki
    # With --ticket-keys each TLS 1.3 resumption must hand out a new ticket: bench uses each once.
    s = serve(d, *(["--ticket-keys", key_file(d, "t.key")] if tickets else []), workers=workers)
    r = run_mtls("bench", f"https://127.0.0.1:{s.port}/test", "--cacert", "serverca.crt",
                 "--cert", "client.crt", "--key", "client.key", "-c", "2", "-n", "400",
                 "--requests-per-conn", "1", "--resume", "--json", cwd=d)
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert rep["errors"]["total"] == 0, rep["errors"]
    # Each of the 2 connections' first handshake is a full one; every later one offers a ticket.
    assert rep["handshakes"] >= 390
    assert rep["handshakes_resumed"] >= 0.99 * rep["handshakes"], rep


def test_a_revoked_client_never_resumes_after_the_reload(pki, serve):
    d = pki
    s = serve(d, "--crl", "clients.crl", workers=2)
    bob = client_ctx(d, "bob")
    _, session, who = whoami(bob, s.port)
    assert who["subject"] == "CN=bob"
    resumed, _ = resumed_share(bob, s.port, session, 10)
    assert resumed == 10
    mtls_ok("ca", "revoke", "--ca", "clientca", "bob.crt", "--reason", "keyCompromise", cwd=d)
    mtls_ok("crl", "create", "--ca", "clientca", "--out", "clients.crl", "--force", cwd=d)
    s.proc.send_signal(signal.SIGHUP)
    s.wait_reloaded()
    # From the moment the reload is logged, no worker resumes a session from before it;
    # a worker that has not loaded the new CRL yet may still do a full handshake.
    wait_until(lambda: tls_error(s.port, d, cert="bob.crt", key="bob.key") != "",
               timeout=10 * SLOW, what="bob refused after the reload")
    for _ in range(20):
        try:
            reused, _, who = whoami(bob, s.port, session)
        except (ssl.SSLError, ConnectionError):
            continue  # refused: revoked
        assert not reused, "a revoked client's session resumed after the reload"
        assert who is None, "a revoked client was answered 200"


@pytest.mark.parametrize("model", ["process", "thread"])
def test_a_reload_empties_the_cache_for_every_worker(model, pki, serve):
    d = pki
    s = serve(d, "--worker-model", model, workers=2)
    ctx = client_ctx(d)
    _, old, _ = whoami(ctx, s.port)
    assert resumed_share(ctx, s.port, old, 10)[0] == 10
    s.proc.send_signal(signal.SIGHUP)
    s.wait_reloaded()
    for _ in range(20):
        reused, _, who = whoami(ctx, s.port, old)
        assert not reused, "a session from before the reload resumed"
        assert who["subject"] == "CN=localclient"

    # Sessions made after the reload resume on every worker again (once each has its new context).
    def fresh_sessions_resume():
        _, new, _ = whoami(ctx, s.port)
        return resumed_share(ctx, s.port, new, 20)[0] == 20
    wait_until(fresh_sessions_resume, timeout=10 * SLOW, what="new sessions to resume")


# ---- item 2: --ticket-keys, resumption across replicas --------------------------------------

def key_file(d, name, keys=1):
    path = os.path.join(d, name)
    with open(path, "wb") as f:
        f.write(os.urandom(80 * keys))
    return name


def test_replicas_with_the_same_ticket_keys_resume_each_other(pki, serve):
    d = pki
    k = key_file(d, "ticket.key")
    a = serve(d, "--ticket-keys", k, workers=2)
    b = serve(d, "--ticket-keys", k, workers=2)
    other = serve(d, "--ticket-keys", key_file(d, "other.key"), workers=1)
    ctx = client_ctx(d)
    reused, session, who = whoami(ctx, a.port)
    assert not reused and who["subject"] == "CN=localclient"
    serial = serial_of(d, "client.crt")
    # A ticket from replica a resumes on replica b (on either worker), identity intact.
    for _ in range(10):
        reused, _, who = whoami(ctx, b.port, session)
        assert reused, "a's ticket must resume on b"
        assert (who["subject"], who["serial"]) == ("CN=localclient", serial)
    # A server without the key makes a full handshake.
    reused, _, who = whoami(ctx, other.port, session)
    assert not reused and who["subject"] == "CN=localclient"
    # TLS 1.2 tickets too.
    ctx12 = client_ctx(d, version=ssl.TLSVersion.TLSv1_2)
    _, session12, _ = whoami(ctx12, a.port)
    reused, _, who = whoami(ctx12, b.port, session12)
    assert reused and who["subject"] == "CN=localclient"
    # Without --ticket-keys, two servers do not share sessions.
    c = serve(d, workers=1)
    reused, _, _ = whoami(ctx, c.port, session)
    assert not reused


def test_ticket_keys_rotate_on_sighup(pki, serve):
    d = pki
    with open(os.path.join(d, "old.key"), "wb") as f:
        old_key = os.urandom(80)
        f.write(old_key)
    with open(os.path.join(d, "ticket.key"), "wb") as f:
        f.write(old_key)
    s = serve(d, "--ticket-keys", "ticket.key", workers=2)
    old_only = serve(d, "--ticket-keys", "old.key", workers=1)
    ctx = client_ctx(d)
    _, old_ticket, _ = whoami(ctx, s.port)
    # Rotation: a new key first (it encrypts), the old one after it (it still decrypts).
    with open(os.path.join(d, "ticket.key"), "wb") as f:
        f.write(os.urandom(80) + old_key)
    s.proc.send_signal(signal.SIGHUP)
    s.wait_reloaded()
    reused, renewed, who = whoami(ctx, s.port, old_ticket)
    assert reused and who["subject"] == "CN=localclient"
    # The ticket it issued now is under the new key, which old_only does not hold.
    wait_until(lambda: not whoami(ctx, old_only.port, whoami(ctx, s.port)[1])[0],
               timeout=10 * SLOW, what="new tickets under the new key")
    # The old key dropped: its tickets no longer resume.
    with open(os.path.join(d, "ticket.key"), "wb") as f:
        f.write(os.urandom(80))
    s.proc.send_signal(signal.SIGHUP)
    s.wait_reloaded(2)
    wait_until(lambda: not whoami(ctx, s.port, old_ticket)[0], timeout=10 * SLOW,
               what="the old key's tickets refused")


def test_a_revoked_clients_ticket_does_not_resume_after_the_crl_reload(pki, serve):
    d = pki
    k = key_file(d, "ticket.key")
    s = serve(d, "--crl", "clients.crl", "--ticket-keys", k, workers=2)
    bob = client_ctx(d, "bob")
    _, ticket, who = whoami(bob, s.port)
    assert who["subject"] == "CN=bob"
    assert whoami(bob, s.port, ticket)[0]
    mtls_ok("ca", "revoke", "--ca", "clientca", "bob.crt", "--reason", "keyCompromise", cwd=d)
    mtls_ok("crl", "create", "--ca", "clientca", "--out", "clients.crl", "--force", cwd=d)
    s.proc.send_signal(signal.SIGHUP)
    s.wait_reloaded()
    # The ticket still decrypts (same key), but it was verified under the old CRL.
    wait_until(lambda: tls_error(s.port, d, cert="bob.crt", key="bob.key") != "",
               timeout=10 * SLOW, what="bob refused after the reload")
    for _ in range(10):
        try:
            reused, _, who = whoami(bob, s.port, ticket)
        except (ssl.SSLError, ConnectionError):
            continue
        raise AssertionError(f"bob's old ticket was accepted (resumed: {reused}, {who})")


def test_bad_ticket_key_files_are_refused(pki, serve):
    d = pki
    with open(os.path.join(d, "short.key"), "wb") as f:
        f.write(os.urandom(48))
    r = run_mtls("serve", "--listen", "127.0.0.1:0", "--workers", "1", "--ticket-keys",
                 "short.key", cwd=d, timeout=30)
    assert r.returncode == 2, r
    assert "ticket key file 'short.key' holds 48 bytes, not 80-byte keys" in r.stderr
    r = run_mtls("serve", "--listen", "127.0.0.1:0", "--workers", "1", "--ticket-keys",
                 "missing.key", cwd=d, timeout=30)
    assert r.returncode == 2 and "cannot read 'missing.key'" in r.stderr, r
    k = key_file(d, "ticket.key")
    s = serve(d, "--ticket-keys", k, workers=2)
    with open(os.path.join(d, k), "wb") as f:
        f.write(b"x" * 81)
    s.proc.send_signal(signal.SIGHUP)
    log = wait_for_text(s.system_log, "reload refused")
    assert "ticket key file 'ticket.key' holds 81 bytes" in log
    assert whoami(client_ctx(d), s.port)[2]["subject"] == "CN=localclient"


def test_whoami_says_whether_the_session_was_resumed(pki, serve):
    s = serve(pki)
    ctx = client_ctx(pki)
    reused, session, first = whoami(ctx, s.port, raw_body=True)
    assert not reused and json.loads(first.split(b" ", 3)[3])["tls"]["resumed"] is False
    reused, _, again = whoami(ctx, s.port, session, raw_body=True)
    assert reused and json.loads(again.split(b" ", 3)[3])["tls"]["resumed"] is True, again
