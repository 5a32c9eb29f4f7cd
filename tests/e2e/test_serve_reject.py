"""`mtls serve` refuses bad client certificates at the TLS layer with the
right alert and logs why in plain words; `--verify-client optional` answers
403 instead; bad configuration stops it at start with one line and exit 2."""
import json
import os
import re
import shutil
import signal
import socket

import pytest

import pki_openssl
from conftest import run_mtls
from serve_helpers import *  # noqa: F401,F403 (fixtures)
from serve_helpers import server_dir

REJECTIONS = [
    # cert, key, alert the client sees, words of the system-log line
    ("mallory.crt", "mallory.key", "unknown ca",
     "issuer not trusted: client certificate 'CN=mallory' was issued by 'CN=other-ca', which is "
     "not a trusted CA (alert unknown_ca)"),
    ("expired.crt", "expired.key", "certificate expired",
     "client certificate 'CN=expired-client' expired on "),
    ("serveronly.crt", "serveronly.key", "unsupported certificate",
     "wrong purpose: client certificate 'CN=www-as-client' is not for TLS client authentication "
     "(its extended key usage: TLS Web Server Authentication) (alert unsupported_certificate)"),
    ("fakeca.crt", "fakeca.key", "unknown ca",
     "issuer not trusted: client certificate 'CN=client-example-ca' is self-signed and not a "
     "trusted CA"),
]


@pytest.mark.parametrize("cert,key,alert,logged", REJECTIONS,
                         ids=["other-ca", "expired", "server-cert", "fake-ca-copy"])
def test_bad_client_certificates_are_refused_and_logged(cert, key, alert, logged, init_pki, serve,
                                                        tmp_path):
    d = server_dir(init_pki, tmp_path)
    s = serve(d)
    err = tls_error(s.port, d, cert=cert, key=key)
    assert err, "the handshake should fail"
    assert alert in err, err
    r = curl("--cacert", "serverca.crt", "--cert", cert, "--key", key,
             f"https://localhost:{s.port}/test", cwd=d)
    assert r.returncode in (35, 56), (r.returncode, r.stdout)
    log = wait_for_text(s.system_log, logged)
    line = [l for l in log.splitlines() if logged in l][0]
    assert re.match(r"\[[0-9T:.-]+Z\] \[WARN\] 127\.0\.0\.1:\d+ - handshake rejected: ", line), line
    assert "(alert %s)" % alert.replace(" ", "_") in line, line
    # Still serving.
    assert b"Hello mtls" in tls_request(s.port, d)


def test_a_client_certificate_with_extensions_is_accepted(init_pki, serve, tmp_path):
    d = server_dir(init_pki, tmp_path)
    s = serve(d)
    assert b"Hello mtls" in tls_request(s.port, d, cert="ekuclient.crt", key="ekuclient.key")


def test_optional_mode_answers_403_with_the_reason(init_pki, serve, tmp_path):
    d = server_dir(init_pki, tmp_path)
    s = serve(d, "--verify-client", "optional")
    data = tls_request(s.port, d, cert=None)
    head, body = data.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 403 Forbidden")
    assert json.loads(body) == {"error": "client certificate required",
                                "reason": "no client certificate was sent"}
    data = tls_request(s.port, d, cert="mallory.crt", key="mallory.key")
    assert b"403 Forbidden" in data and b"was issued by 'CN=other-ca', which is not a trusted CA" in data
    assert b"Hello mtls" in tls_request(s.port, d)
    wait_for_text(s.system_log, "client not verified")


def start_fails(d, *args):
    r = run_mtls("serve", "--listen", f"127.0.0.1:{free_port()}", "--workers", "1", *args, cwd=d,
                 timeout=30)
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    lines = [l for l in r.stderr.splitlines() if l.strip() and not l.startswith("try 'mtls")]
    assert len(lines) == 1, r.stderr
    assert r.stdout == ""
    return lines[0]


def test_bad_configuration_fails_at_start_with_one_line(init_pki, tmp_path):
    d = server_dir(init_pki, tmp_path)
    assert "cannot read 'nope.crt': no such file" in start_fails(d, "--cert", "nope.crt")
    assert "does not match" in start_fails(d, "--key", "client.key")
    assert "'client.key'" in start_fails(d, "--client-ca", "client.key")
    with open(os.path.join(d, "empty.pem"), "w") as f:
        f.write("")
    assert "client CA file: 'empty.pem' is empty" in start_fails(d, "--client-ca", "empty.pem")
    assert ("client CA file: 'client.key' holds a private key, not a certificate"
            in start_fails(d, "--client-ca", "client.key"))
    os.chmod(os.path.join(d, "server.key"), 0)
    if os.geteuid() != 0:
        assert "server.key" in start_fails(d)
    os.chmod(os.path.join(d, "server.key"), 0o600)
    assert "--workers" in start_fails(d, "--workers", "0")
    assert "--verify-client" in start_fails(d, "--verify-client", "maybe")
    assert "--listen" in start_fails(d, "--listen", "127.0.0.1:99999")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        line = start_fails(d, "--listen", f"127.0.0.1:{port}")
        assert "the port is in use" in line, line


def test_expired_server_certificate_warns(init_pki, serve, tmp_path):
    d = server_dir(init_pki, tmp_path)
    crt, key = pki_openssl.expired_server(str(d))
    s = serve(d, "--cert", crt, "--key", key)
    assert "warning: server certificate" in read_text(s.err) and "expired on" in read_text(s.err)
    assert "expired on" in read_text(s.system_log)
    crt, key = pki_openssl.server_cert_as_client(str(d), ca="serverca", cn="x")
    shutil.copy(os.path.join(d, "client.crt"), os.path.join(d, "c2.crt"))
    s2 = serve(d, "--cert", "c2.crt", "--key", "client.key")
    assert "not meant for TLS servers" in read_text(s2.err)


def test_an_encrypted_server_key_needs_its_password(init_pki, serve, tmp_path):
    d = server_dir(init_pki, tmp_path)
    with open(os.path.join(d, "pw"), "w") as f:
        f.write("s3cret words\n")
    pki_openssl.openssl("pkey", "-in", "server.key", "-aes256", "-passout", "file:pw", "-out",
                        "server.enc.key", cwd=str(d))
    line = start_fails(d, "--key", "server.enc.key")
    assert "'server.enc.key' is encrypted" in line and "--password-file" in line, line
    with open(os.path.join(d, "bad"), "w") as f:
        f.write("wrong\n")
    assert "wrong password" in start_fails(d, "--key", "server.enc.key", "--password-file", "bad")
    s = serve(d, "--key", "server.enc.key", "--password-file", "pw")
    assert b"Hello mtls" in tls_request(s.port, d)
    s.proc.send_signal(signal.SIGHUP)  # a reload reads the encrypted key again
    wait_for_text(s.system_log, "SIGHUP: reloaded")
    assert b"Hello mtls" in tls_request(s.port, d)
