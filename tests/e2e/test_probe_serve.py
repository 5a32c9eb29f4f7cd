"""`mtls probe` against `mtls serve` (with a PKI from `mtls init`), in each
failure case of issue 4: the diagnosis and the exit code."""
import contextlib
import json

import pytest

from conftest import run_mtls
from probe_pki import make_ca, make_leaf, openssl
from serve_helpers import Server, finish

OK, FAIL, WE_REFUSED, THEY_REFUSED = 0, 1, 3, 4


@contextlib.contextmanager
def served(d, *extra):
    """`mtls serve` in d on 127.0.0.1 port 0 with one worker; yields the port. Stopped and
    checked on the way out as the serve fixture does (serve_helpers): an exit of its own fails."""
    s = Server(d, *extra)
    try:
        yield s.wait_ready().port
    finally:
        finish([s])


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = tmp_path_factory.mktemp("probe-serve")
    r = run_mtls("init", "--dir", d)
    assert r.returncode == 0, r.stderr
    # Certificates the server must refuse, made by the openssl CLI.
    make_ca(d, "otherca", "other-ca")
    make_leaf(d, "stranger", "stranger", "otherca", "clientAuth")
    make_leaf(d, "expired", "localclient", "clientca", "clientAuth", days=-1)
    return d


@pytest.fixture(scope="module")
def serve(pki):
    with served(pki) as port:
        yield port


def probe(pki, port, *args):
    return run_mtls("probe", f"https://localhost:{port}/test", *args, cwd=pki, timeout=30)


CLIENT = ("--cert", "client.crt", "--key", "client.key")


def test_success(pki, serve):
    r = probe(pki, serve, "--cacert", "serverca.crt", *CLIENT)
    assert r.returncode == OK, r.stdout + r.stderr
    assert "response     200" in r.stdout
    assert '{"message":"Hello mtls"}' in r.stdout
    assert "the server accepts certificates issued by CN=client-example-ca" in r.stdout
    assert "ok: mutual TLS works" in r.stdout


def test_without_server_ca(pki, serve):
    r = probe(pki, serve, *CLIENT)
    assert r.returncode == WE_REFUSED, r.stdout
    assert ("the server's certificate is signed by CN=server-example-ca, which you do not "
            "trust: pass --cacert serverca.crt") in r.stdout


def test_without_client_certificate(pki, serve):
    r = probe(pki, serve, "--cacert", "serverca.crt")
    assert r.returncode == THEY_REFUSED, r.stdout
    assert ("the server requires a client certificate and you sent none; it accepts "
            "certificates issued by CN=client-example-ca: pass --cert FILE --key FILE"
            in r.stdout)


def test_certificate_from_another_ca(pki, serve):
    r = probe(pki, serve, "--cacert", "serverca.crt", "--cert", "stranger.crt",
              "--key", "stranger.key")
    assert r.returncode == THEY_REFUSED, r.stdout
    assert ("your certificate is issued by CN=other-ca, which this server does not accept "
            "(it accepts CN=client-example-ca)") in r.stdout


def test_expired_client_certificate(pki, serve):
    r = probe(pki, serve, "--cacert", "serverca.crt", "--cert", "expired.crt",
              "--key", "expired.key")
    assert r.returncode == THEY_REFUSED, r.stdout
    assert "the server rejected your certificate: certificate_expired (yours ended on 20" \
        in r.stdout


def test_key_not_matching_certificate(pki, serve):
    r = probe(pki, serve, "--cacert", "serverca.crt", "--cert", "client.crt",
              "--key", "stranger.key")
    assert r.returncode == FAIL
    assert "your key 'stranger.key' does not match your certificate 'client.crt'" in r.stderr


def test_json_against_serve(pki, serve):
    r = probe(pki, serve, "--json", "--cacert", "serverca.crt", *CLIENT)
    o = json.loads(r.stdout)
    assert r.returncode == OK and o["outcome"] == "ok"
    assert o["http"]["status"] == 200
    assert json.loads(o["http"]["body"]) == {"message": "Hello mtls"}
    assert o["certificate_request"]["ca_names"] == ["CN=client-example-ca"]


def test_revoked_client_certificate(tmp_path):
    d = tmp_path
    r = run_mtls("init", "--dir", d)
    assert r.returncode == 0, r.stderr
    # openssl ca works on the CA folder mtls keeps (clientca.index, clientca.certs/).
    (d / "ca.cnf").write_text(
        "[ca]\ndefault_ca = c\n[c]\ndatabase = clientca.index\nnew_certs_dir = clientca.certs\n"
        "certificate = clientca.crt\nprivate_key = clientca.key\ndefault_md = sha256\n"
        "default_crl_days = 30\n")
    openssl("ca", "-config", "ca.cnf", "-revoke", "client.crt", cwd=d)
    openssl("ca", "-config", "ca.cnf", "-gencrl", "-out", "clientca.crl", cwd=d)
    with served(d, "--crl", "clientca.crl") as port:
        r = probe(d, port, "--cacert", "serverca.crt", *CLIENT)
    assert r.returncode == THEY_REFUSED, r.stdout
    assert "the server rejected your certificate: certificate_revoked (serial " in r.stdout


def test_optional_mode_answers_403(pki):
    with served(pki, "--verify-client", "optional", "--access-log", "opt-access.log",
                "--system-log", "opt-system.log") as port:
        r = probe(pki, port, "--cacert", "serverca.crt")
    assert r.returncode == THEY_REFUSED, r.stdout
    # The 403's body names the missing certificate: the advice is to send one.
    assert ("the server requires a client certificate and you sent none (it answered 403"
            in r.stdout), r.stdout
    assert "pass --cert FILE --key FILE" in r.stdout
