"""`mtls probe` against openssl s_server (a peer nobody here wrote) and small
raw peers: every failure case of issue 4, its diagnosis and its exit code."""
import json

import pytest

from conftest import free_port, run_mtls
from probe_pki import (make_pki, never_answer, plain_http_answer, start_s_server,
                       start_thread_server)

OK, FAIL, USAGE, WE_REFUSED, THEY_REFUSED, NETWORK = 0, 1, 2, 3, 4, 5


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("probe-pki"))


@pytest.fixture
def peers():
    started = []
    yield started
    for p in started:
        p.stop()


@pytest.fixture
def server13(pki, peers):
    peers.append(start_s_server(pki))
    return peers[-1]


@pytest.fixture
def server12(pki, peers):
    peers.append(start_s_server(pki, "-tls1_2"))
    return peers[-1]


def probe(pki, port, *args, host="localhost", path="/"):
    return run_mtls("probe", f"https://{host}:{port}{path}", *args, cwd=pki, timeout=30)


CLIENT = ("--cert", "client.crt", "--key", "client.key")


def test_success_shows_chain_request_and_answer(pki, server13):
    r = probe(pki, server13.port, "--cacert", "serverca.crt", *CLIENT)
    assert r.returncode == OK, r.stdout + r.stderr
    out = r.stdout
    assert "TLSv1.3" in out
    assert "0 subject   CN=localhost" in out and "issuer    CN=server-example-ca" in out
    assert "SANs      DNS:localhost, IP:127.0.0.1" in out
    assert "verify       ok" in out
    assert "the server accepts certificates issued by CN=client-example-ca" in out
    assert "its issuer is one the server accepts" in out
    assert "response     200" in out
    assert out.rstrip().splitlines()[-1].startswith("ok: mutual TLS works")


def test_without_cacert_we_refuse_the_server(pki, server13):
    r = probe(pki, server13.port, *CLIENT)
    assert r.returncode == WE_REFUSED, r.stdout + r.stderr
    assert ("the server's certificate is signed by CN=server-example-ca, which you do not "
            "trust: pass --cacert serverca.crt") in r.stdout
    assert "alert sent   unknown_ca (48)" in r.stdout


def test_wrong_cacert_names_the_missing_ca(pki, server13):
    r = probe(pki, server13.port, "--cacert", "otherca.crt", *CLIENT)
    assert r.returncode == WE_REFUSED
    assert ("signed by CN=server-example-ca, which is not in your --cacert 'otherca.crt'"
            in r.stdout)


@pytest.mark.parametrize("tls", ["server13", "server12"])
def test_no_client_certificate_the_server_refuses_us(pki, tls, request):
    server = request.getfixturevalue(tls)
    r = probe(pki, server.port, "--cacert", "serverca.crt")
    assert r.returncode == THEY_REFUSED, r.stdout + r.stderr
    assert ("the server requires a client certificate and you sent none; it accepts "
            "certificates issued by CN=client-example-ca: pass --cert FILE --key FILE"
            in r.stdout)
    if tls == "server13":
        # TLS 1.3: the verdict arrives after our handshake is complete.
        assert "certificate_required (116), after our handshake completed" in r.stdout
    else:
        assert "TLSv1.3" not in r.stdout


@pytest.mark.parametrize("tls", ["server13", "server12"])
def test_certificate_from_another_ca_is_refused(pki, tls, request):
    server = request.getfixturevalue(tls)
    r = probe(pki, server.port, "--cacert", "serverca.crt", "--cert", "stranger.crt",
              "--key", "stranger.key")
    assert r.returncode == THEY_REFUSED, r.stdout + r.stderr
    assert ("your certificate is issued by CN=other-ca, which this server does not accept "
            "(it accepts CN=client-example-ca)") in r.stdout


def test_expired_client_certificate(pki, server13):
    r = probe(pki, server13.port, "--cacert", "serverca.crt", "--cert", "expired.crt",
              "--key", "expired.key")
    assert r.returncode == THEY_REFUSED, r.stdout + r.stderr
    assert "the server rejected your certificate: certificate_expired (yours ended on 20" \
        in r.stdout


def test_client_certificate_with_the_wrong_purpose(pki, server13):
    r = probe(pki, server13.port, "--cacert", "serverca.crt", "--cert", "serverish.crt",
              "--key", "serverish.key")
    assert r.returncode == THEY_REFUSED, r.stdout + r.stderr
    assert ("the server rejected your certificate: unsupported_certificate (is it a client "
            "certificate? its extended key usage is TLS Web Server Authentication)") in r.stdout


def test_key_not_matching_certificate_is_found_before_connecting(pki):
    # Nothing listens on the port: a connection attempt would say so.
    r = probe(pki, free_port(), "--cacert", "serverca.crt", "--cert", "client.crt",
              "--key", "stranger.key")
    assert r.returncode == FAIL
    assert "your key 'stranger.key' does not match your certificate 'client.crt'" in r.stderr
    assert r.stdout == ""


def test_host_name_mismatch(pki, server13):
    r = probe(pki, server13.port, "--cacert", "serverca.crt", "--servername", "wrong.example",
              *CLIENT, host="127.0.0.1")
    assert r.returncode == WE_REFUSED
    assert ("the server's certificate is for DNS:localhost, IP:127.0.0.1, not 'wrong.example'"
            in r.stdout)
    assert "--servername NAME" in r.stdout


def test_ip_address_url_verifies_against_ip_san(pki, server13):
    r = probe(pki, server13.port, "--cacert", "serverca.crt", *CLIENT, host="127.0.0.1")
    assert r.returncode == OK, r.stdout


def test_expired_server_certificate(pki, peers):
    peers.append(start_s_server(pki, cert="oldserver"))
    r = probe(pki, peers[-1].port, "--cacert", "serverca.crt", *CLIENT)
    assert r.returncode == WE_REFUSED
    assert "the server's certificate (CN=localhost) expired on 20" in r.stdout
    # The verify row words it as cert verify and the server's log do (one table of reasons).
    assert "failed: the server's certificate (CN=localhost) expired on 20" in r.stdout


def test_server_chain_with_an_intermediate(pki, peers):
    peers.append(start_s_server(pki, "-cert_chain", "serverint.crt", cert="chained"))
    r = probe(pki, peers[-1].port, "--cacert", "serverca.crt", *CLIENT)
    assert r.returncode == OK, r.stdout + r.stderr
    assert "server chain (2 certificates, as sent)" in r.stdout
    assert "1 subject   CN=server-intermediate" in r.stdout
    r = probe(pki, peers[-1].port, "--cacert", "otherca.crt", *CLIENT)
    assert r.returncode == WE_REFUSED
    assert ("the server's chain leads through CN=server-intermediate to CN=server-example-ca, "
            "which you do not trust") in r.stdout


def test_server_without_client_auth(pki, peers):
    peers.append(start_s_server(pki, require_client=False))
    r = probe(pki, peers[-1].port, "--cacert", "serverca.crt", *CLIENT)
    assert r.returncode == OK
    assert "client cert  not requested by the server" in r.stdout
    assert "the server did not ask for a client certificate" in r.stdout


def test_connection_refused(pki):
    r = probe(pki, free_port(), "--cacert", "serverca.crt")
    assert r.returncode == NETWORK
    assert "connection refused: nothing listens on localhost:" in r.stdout


def test_dns_failure(pki):
    r = run_mtls("probe", "https://no-such-host.invalid/", cwd=pki, timeout=60)
    assert r.returncode == NETWORK
    assert "DNS failure: cannot resolve 'no-such-host.invalid'" in r.stdout


def test_timeout(pki, peers):
    peers.append(start_thread_server(never_answer))
    r = probe(pki, peers[-1].port, "--timeout", "1")
    assert r.returncode == NETWORK
    assert "timeout: the TLS handshake with 127.0.0.1:" in r.stdout


def test_plain_http_server_is_not_tls(pki, peers):
    peers.append(start_thread_server(plain_http_answer))
    r = probe(pki, peers[-1].port)
    assert r.returncode == NETWORK
    assert ("does not speak TLS: it answered 'HTTP/1.1 400 Bad Request' (a plain HTTP server"
            in r.stdout)


def test_verbose_traces_handshake_messages(pki, server12):
    r = probe(pki, server12.port, "-v", "--cacert", "serverca.crt", *CLIENT)
    assert r.returncode == OK
    for line in ["(OUT), TLS handshake, Client hello (1):",
                 "* TLSv1.2 (IN), TLS handshake, Certificate (11):",
                 "* TLSv1.2 (IN), TLS handshake, Request CERT (13):",
                 "* TLSv1.2 (OUT), TLS handshake, CERT verify (15):",
                 "* TLSv1.2 (IN), TLS handshake, Finished (20):",
                 "> GET / HTTP/1.1", "< HTTP/1.0 200 ok"]:
        assert line in r.stderr, r.stderr


def test_json_is_one_object_with_the_whole_finding(pki, server13):
    r = probe(pki, server13.port, "--json", "--cacert", "serverca.crt")
    assert r.returncode == THEY_REFUSED
    o = json.loads(r.stdout)
    assert o["outcome"] == "they_refused" and o["exit_code"] == THEY_REFUSED
    assert o["verdict"] == "the server refused us"
    assert "requires a client certificate and you sent none" in o["diagnosis"]
    assert o["protocol"] == "TLSv1.3" and o["port"] == server13.port
    assert o["chain"][0]["subject"] == "CN=localhost"
    assert o["chain"][0]["sans"] == [{"type": "DNS", "value": "localhost"},
                                     {"type": "IP", "value": "127.0.0.1"}]
    assert o["verify"]["ok"] is True
    assert o["certificate_request"] == {"received": True, "ca_names": ["CN=client-example-ca"]}
    assert o["client_certificate"] is None
    assert o["alert_received"]["name"] == "certificate_required"
    assert o["http"] is None


def test_json_success_has_http(pki, server13):
    r = probe(pki, server13.port, "--json", "--cacert", "serverca.crt", *CLIENT)
    o = json.loads(r.stdout)
    assert r.returncode == OK and o["outcome"] == "ok"
    assert o["http"]["status"] == 200
    assert o["client_certificate"]["sent"] is True
    assert o["client_certificate"]["issuer_accepted"] is True
    assert o["client_certificate"]["certificate"]["subject"] == "CN=localclient"


@pytest.mark.parametrize("args,message", [
    (["http://localhost:1/"], "plain http"),
    (["https://localhost:99999/"], "bad port"),
    (["https://localhost/", "--cert", "client.crt"], "--cert needs --key"),
    (["https://localhost/", "--servername", ""], "--servername needs a name"),
    ([], "missing argument"),
])
def test_usage_errors(pki, args, message):
    r = run_mtls("probe", *args, cwd=pki)
    assert r.returncode == USAGE
    assert message in r.stderr


def test_missing_cacert_file(pki):
    r = probe(pki, free_port(), "--cacert", "nope.crt")
    assert r.returncode == FAIL
    assert "nope.crt" in r.stderr


def test_files_as_the_pki_commands_read_them(pki, server13, tmp_path):
    """DER certificates work, an encrypted key takes --password-file, and a file of
    the wrong kind says what it holds (as every other command does)."""
    import subprocess

    def conv(*args):
        subprocess.run(["openssl", *[str(a) for a in args]], check=True, capture_output=True)

    conv("x509", "-in", pki / "serverca.crt", "-outform", "DER", "-out", tmp_path / "ca.der")
    conv("x509", "-in", pki / "client.crt", "-outform", "DER", "-out", tmp_path / "c.der")
    conv("pkey", "-in", pki / "client.key", "-aes256", "-passout", "pass:s3cret", "-out",
         tmp_path / "enc.key")
    (tmp_path / "pw").write_text("s3cret\n")
    r = probe(pki, server13.port, "--cacert", tmp_path / "ca.der", "--cert", tmp_path / "c.der",
              "--key", "client.key")
    assert r.returncode == OK, r.stdout + r.stderr
    enc = ("--cacert", "serverca.crt", "--cert", "client.crt", "--key", tmp_path / "enc.key")
    r = probe(pki, server13.port, *enc)
    assert r.returncode == FAIL and "is encrypted: pass its password with --password-file" in r.stderr
    r = probe(pki, server13.port, *enc, "--password-file", tmp_path / "pw")
    assert r.returncode == OK, r.stdout + r.stderr
    assert "s3cret" not in r.stdout + r.stderr
    r = probe(pki, server13.port, "--cacert", "client.key")
    assert r.returncode == FAIL
    assert "'client.key' holds a private key, not a certificate: --cacert needs" in r.stderr
    r = probe(pki, server13.port, "--cacert", "serverca.crt", "--cert", "client.key", "--key",
              "client.key")
    assert r.returncode == FAIL and "'client.key' holds a private key, not a certificate" in r.stderr


def test_a_hostile_answer_does_not_reach_the_terminal_raw(pki, peers):
    """A TLS server (Python ssl, not ours) answers 403 with an escape sequence in its
    reason phrase and body: the one-line diagnosis stays one line and no ESC is printed."""
    import ssl

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(pki / "server.crt", pki / "server.key")

    def answer(conn):
        try:
            with ctx.wrap_socket(conn, server_side=True) as tls:
                tls.recv(4096)
                body = b"no\x1b]0;owned\x07\nway\x1b[2J\n"
                tls.sendall(b"HTTP/1.1 403 Go\x1b[31maway\r\nContent-Length: %d\r\n"
                            b"Connection: close\r\n\r\n" % len(body) + body)
        except (ssl.SSLError, OSError):
            pass

    peers.append(start_thread_server(answer))
    r = probe(pki, peers[-1].port, "--cacert", "serverca.crt", "-v")
    assert r.returncode == THEY_REFUSED, r.stdout + r.stderr
    assert "\x1b" not in r.stdout + r.stderr and "\x07" not in r.stdout
    assert "* < HTTP/1.1 403 Go\\x1B[31maway" in r.stderr  # the -v trace too
    assert "response     403 Go\\x1B[31maway" in r.stdout
    assert "no\\x1B]0;owned\\x07\nway\\x1B[2J\n" in r.stdout
    last = r.stdout.rstrip("\n").splitlines()[-1]
    assert last.endswith("answered 403 Go\\x1B[31maway: no\\x1B]0;owned\\x07\\x0Away\\x1B[2J"), last


@pytest.mark.parametrize("status, body, code, words", [
    # nginx's own codes for a client certificate that did not verify / was not sent
    (b"495 SSL Certificate Error", b"bad", THEY_REFUSED, "the server rejected your certificate"),
    (b"496 SSL Certificate Required", b"none", THEY_REFUSED,
     "the server requires a client certificate and you sent none"),
    # a 4xx that names no certificate is an answer like any other
    (b"404 Not Found", b"no such page", OK, "mutual TLS works"),
    # a 403 that names none is still a refusal, in plain words
    (b"403 Forbidden", b"go away", THEY_REFUSED, "the handshake succeeded, but the server answered"),
])
def test_http_answers_that_refuse_the_certificate(pki, peers, status, body, code, words):
    """A TLS server (Python ssl) that asks for a certificate, takes any, and answers
    over a chunked body: the probe reads it with the llhttp parser and judges it."""
    import ssl

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(pki / "server.crt", pki / "server.key")
    ctx.load_verify_locations(pki / "clientca.crt")
    ctx.verify_mode = ssl.CERT_OPTIONAL

    def answer(conn):
        try:
            with ctx.wrap_socket(conn, server_side=True) as tls:
                tls.recv(4096)
                half = len(body) // 2
                tls.sendall(b"HTTP/1.1 " + status + b"\r\nTransfer-Encoding: chunked\r\n"
                            b"Connection: close\r\n\r\n" +
                            b"%x\r\n%s\r\n%x\r\n%s\r\n0\r\n\r\n" % (half, body[:half],
                                                                   len(body) - half, body[half:]))
        except (ssl.SSLError, OSError):
            pass

    peers.append(start_thread_server(answer))
    sends = () if b"Required" in status else CLIENT
    r = probe(pki, peers[-1].port, "--cacert", "serverca.crt", *sends, "--json")
    out = json.loads(r.stdout)
    assert r.returncode == code, r.stdout
    assert out["http"]["body"] == body.decode()
    assert out["http"]["refuses_certificate"] is (status[:3] in (b"495", b"496"))
    assert words in out["diagnosis"], out["diagnosis"]
