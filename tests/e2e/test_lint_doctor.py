"""`mtls cert lint` and `mtls doctor` against real files: the tutorial's own
openssl-made certificates (flagged), `mtls init` output (clean), and broken
setups (swapped keys, an expired CA, a leaf as client CA, a world-readable
key, a CRL from the wrong CA, a revoked client, a busy port)."""
import datetime
import json
import os
import shutil
import socket
import subprocess

import pytest

from conftest import run_mtls
from pki_cli import ok, openssl
from pki_openssl import article_pki, expired_client
from pki_openssl import openssl as openssl_ok


def lint(*args, cwd=None):
    r = run_mtls("cert", "lint", "--json", *args, cwd=cwd)
    assert r.returncode in (0, 1, 3), f"cert lint {args}: {r.returncode} {r.stderr}"
    return r.returncode, json.loads(r.stdout)


def doctor(d, *args):
    """mtls doctor --json on folder d; the port is any free one unless args say otherwise."""
    if not any(a in ("--port", "--listen") for a in args):
        args = ("--listen", "127.0.0.1:0", *args)
    r = run_mtls("doctor", d, "--json", *args)
    assert r.returncode in (0, 1, 3), f"doctor {args}: {r.returncode} {r.stderr}"
    return r.returncode, json.loads(r.stdout)


def codes(report, file=None, severity=None):
    """The codes of the findings, for one file (its base name) and severity if given."""
    return sorted(f["code"] for f in report["findings"]
                  if (file is None or os.path.basename(f["file"]) == file)
                  and (severity is None or f["severity"] == severity))


def finding(report, code, file=None):
    found = [f for f in report["findings"] if f["code"] == code
             and (file is None or os.path.basename(f["file"]) == file)]
    assert len(found) == 1, (code, file, report["findings"])
    return found[0]


@pytest.fixture(scope="module")
def article(tmp_path_factory):
    d = tmp_path_factory.mktemp("article")
    article_pki(str(d), rsa=False)
    return d


@pytest.fixture(scope="module")
def init_pki(tmp_path_factory):
    d = tmp_path_factory.mktemp("init")
    ok("init", "--dir", d)
    return d


@pytest.fixture
def setup(init_pki, tmp_path):
    """A fresh copy of the `mtls init` folder to break."""
    d = tmp_path / "setup"
    shutil.copytree(init_pki, d)
    return d


def openssl_makes_v1(article):
    """Whether this OpenSSL's `x509 -req` made the tutorial's leaves as version 1."""
    r = subprocess.run(["openssl", "x509", "-in", str(article / "client.crt"), "-noout", "-text"],
                       capture_output=True, text=True, check=True)
    return "Version: 1 (0x0)" in r.stdout


def assert_tutorial_leaves(report, article):
    """The tutorial's leaves: v1 (OpenSSL <= 3.1), or v3 without key usage and EKU (later)."""
    if openssl_makes_v1(article):
        assert codes(report, "server.crt", "error") == ["no-san", "v1-certificate"]
        assert codes(report, "client.crt", "error") == ["v1-certificate"]
    else:
        assert codes(report, "server.crt", "error") == ["no-san"]
        assert codes(report, "server.crt", "warning") == ["no-eku", "no-key-usage"]
        assert codes(report, "client.crt", "warning") == ["no-eku", "no-key-usage"]
        assert codes(report, "client.crt", "error") == []


# ---- cert lint ------------------------------------------------------------------------------

def test_lint_flags_the_tutorials_openssl_certificates(article):
    code, report = lint(*(article / n for n in ("server.crt", "client.crt", "serverca.crt",
                                                "clientca.crt")))
    assert code == 1 and report["exit_code"] == 1 and report["certificates"] == 4
    # `openssl x509 -req` without -extfile: the server's name only in its CN, and version 1 up
    # to OpenSSL 3.1; later ones add key identifiers (v3) but still no key usage or EKU.
    assert_tutorial_leaves(report, article)
    # `openssl req -x509` CAs lack key usage, which Python 3.13's strict default refuses.
    assert codes(report, "serverca.crt") == ["ca-no-key-usage"]
    if openssl_makes_v1(article):
        assert report["errors"] == 3 and report["warnings"] == 2
    else:
        assert report["errors"] == 1 and report["warnings"] == 6
    no_san = finding(report, "no-san", "server.crt")
    assert no_san["subject"] == "CN=localhost" and "only in the CN" in no_san["message"]
    assert "--san" in no_san["fix"]
    # The same in words: each finding with its fix, and a summary.
    r = run_mtls("cert", "lint", article / "server.crt")
    assert r.returncode == 1, r.stderr
    if openssl_makes_v1(article):
        assert "error [v1-certificate]" in r.stdout and "fix: reissue it as X.509 v3" in r.stdout
        assert "2 errors, 0 warnings, 0 notes in 1 certificate" in r.stdout, r.stdout
    else:
        assert "error [no-san]" in r.stdout and "fix: reissue it with the host names" in r.stdout
        assert "1 error, 2 warnings, 0 notes in 1 certificate" in r.stdout, r.stdout


def test_lint_finds_nothing_in_mtls_init_output(init_pki):
    files = sorted(p for p in init_pki.iterdir() if p.suffix == ".crt")
    assert len(files) == 4
    code, report = lint(*files)
    assert code == 0 and report["findings"] == [] and report["certificates"] == 4
    r = run_mtls("cert", "lint", *files)
    assert r.returncode == 0 and "no problems found in 4 certificates" in r.stdout, r.stdout


def test_lint_warnings_alone_exit_3(article):
    code, report = lint(article / "clientca.crt")
    assert code == 3 and report["errors"] == 0 and report["warnings"] == 1


def _ext(d, name, text):
    (d / name).write_text(text)
    return str(d / name)


def test_lint_weak_and_odd_certificates(init_pki, tmp_path):
    d = tmp_path
    # An old-style RSA-1024 leaf signed with SHA-1, two roles, 800 days, serial 5, no key usage.
    openssl_ok("req", "-new", "-nodes", "-newkey", "rsa:1024", "-subj", "/CN=www.example.com",
               "-keyout", "weak.key", "-out", "weak.csr", cwd=d)
    openssl_ok("x509", "-req", "-sha1", "-in", "weak.csr", "-CA", init_pki / "serverca.crt",
               "-CAkey", init_pki / "serverca.key", "-set_serial", "5", "-days", "800",
               "-extfile", _ext(d, "weak.ext", "basicConstraints=CA:FALSE\n"
                                "extendedKeyUsage=serverAuth,clientAuth\n"
                                "subjectAltName=DNS:other.example.com\n"),
               "-out", "weak.crt", cwd=d)
    code, report = lint(d / "weak.crt")
    assert code == 1
    assert codes(report, severity="error") == ["rsa-key-too-small", "weak-signature"]
    assert codes(report, severity="warning") == ["cn-not-in-san", "dual-use-eku", "no-key-usage",
                                                 "serial-short", "validity-too-long"]
    assert "other.example.com" in finding(report, "cn-not-in-san")["message"]
    # A CA with basicConstraints not critical and a key usage without keyCertSign.
    openssl_ok("req", "-new", "-x509", "-nodes", "-newkey", "ec", "-pkeyopt",
               "ec_paramgen_curve:P-256", "-subj", "/CN=odd-ca", "-days", "30", "-keyout",
               "odd.key", "-out", "odd.crt", "-addext", "basicConstraints=CA:TRUE",
               "-addext", "keyUsage=digitalSignature", cwd=d)
    code, report = lint(d / "odd.crt")
    assert code == 1
    assert codes(report) == ["ca-basic-constraints-not-critical", "ca-no-key-cert-sign",
                             "expires-soon"]
    # A key on a curve TLS does not use for certificates, and a serial of zero.
    openssl_ok("req", "-new", "-x509", "-nodes", "-newkey", "ec", "-pkeyopt",
               "ec_paramgen_curve:secp256k1", "-subj", "/CN=k1", "-keyout", "k1.key", "-out",
               "k1.crt", cwd=d)
    code, report = lint(d / "k1.crt")
    assert code == 1 and "weak-curve" in codes(report, severity="error")
    assert "secp256k1" in finding(report, "weak-curve")["message"]
    openssl_ok("x509", "-req", "-in", "weak.csr", "-CA", init_pki / "clientca.crt", "-CAkey",
               init_pki / "clientca.key", "-set_serial", "0", "-days", "30", "-extfile",
               _ext(d, "zero.ext", "extendedKeyUsage=clientAuth\nkeyUsage=digitalSignature\n"),
               "-out", "zero.crt", cwd=d)
    code, report = lint("--profile", "client", d / "zero.crt")
    assert code == 1 and "serial-not-positive" in codes(report, severity="error")
    # An expired client certificate; and one checked for the wrong role.
    shutil.copy(init_pki / "clientca.crt", d)
    shutil.copy(init_pki / "clientca.key", d)
    cert, _ = expired_client(str(d))
    code, report = lint(cert)
    assert code == 1 and "expired" in codes(report, severity="error")
    assert "ago" in finding(report, "expired")["message"]
    code, report = lint("--profile", "server", init_pki / "client.crt")
    assert code == 1 and codes(report) == ["no-san", "wrong-purpose"]
    assert "TLS Web Client Authentication" in finding(report, "wrong-purpose")["message"]
    code, report = lint("--profile", "ca", init_pki / "client.crt")
    assert code == 1 and codes(report) == ["not-a-ca"]


def test_lint_usage_and_unreadable_files(tmp_path, init_pki):
    # DER is read as well as PEM.
    openssl_ok("x509", "-in", init_pki / "server.crt", "-outform", "DER", "-out", "s.der",
               cwd=tmp_path)
    code, report = lint(tmp_path / "s.der")
    assert code == 0 and report["certificates"] == 1 and report["findings"] == []
    (tmp_path / "k.pem").write_text((init_pki / "server.key").read_text())
    r = run_mtls("cert", "lint", tmp_path / "k.pem")
    assert r.returncode == 2 and "private key, not a certificate" in r.stderr, r.stderr
    r = run_mtls("cert", "lint", tmp_path / "missing.crt")
    assert r.returncode == 2 and "missing.crt" in r.stderr, r.stderr
    r = run_mtls("cert", "lint", "--profile", "robot", init_pki / "server.crt")
    assert r.returncode == 2 and "--profile must be client, server or ca" in r.stderr
    r = run_mtls("cert", "lint")
    assert r.returncode == 2 and "try 'mtls cert lint --help'" in r.stderr
    r = run_mtls("cert", "lint", "--help")
    assert r.returncode == 0
    for word in ("--profile", "--json", "3  warnings, but no error", "v1"):
        assert word in r.stdout, r.stdout
    assert "cert lint" in run_mtls("cert", "--help").stdout


# ---- doctor ---------------------------------------------------------------------------------

def test_doctor_mtls_init_folder_is_healthy(init_pki):
    code, report = doctor(init_pki)
    assert code == 0, report
    # Only notes: the two CA keys beside the server's files.
    assert codes(report) == ["ca-key-here", "ca-key-here"]
    assert report["hosts"] == ["localhost", "127.0.0.1"] and report["listen"] == "127.0.0.1:0"
    r = run_mtls("doctor", "--listen", "127.0.0.1:0", cwd=init_pki)
    assert r.returncode == 0 and "0 errors, 0 warnings, 2 notes" in r.stdout, r.stdout


def test_doctor_finds_the_tutorials_weak_certificates(article):
    code, report = doctor(article)
    assert code == 1
    assert_tutorial_leaves(report, article)
    # The chains themselves are fine, and so are the keys.
    assert not {"server-chain", "client-chain", "key-mismatch"} & set(codes(report))


def test_doctor_finds_swapped_keys(setup):
    os.rename(setup / "server.key", setup / "tmp.key")
    os.rename(setup / "client.key", setup / "server.key")
    os.rename(setup / "tmp.key", setup / "client.key")
    code, report = doctor(setup)
    assert code == 1
    server = finding(report, "key-mismatch", "server.key")
    assert "is not the private key of" in server["message"]
    assert "it is the key of" in server["message"] and "client.crt" in server["message"]
    assert "server cannot start" in server["message"]
    assert "client.crt" in finding(report, "key-mismatch", "client.key")["fix"]
    r = run_mtls("doctor", setup, "--listen", "127.0.0.1:0")
    assert r.returncode == 1 and "error [key-mismatch]" in r.stdout, r.stdout


def _openssl_ca(d, key, csr, out, days_from, days_to, section, ca_cert=None):
    """Signs csr into out with `openssl ca` (explicit dates, days from now; self-signed with
    key when ca_cert is None), with the extensions of section: v3ca or v3server."""
    now = datetime.datetime.now(datetime.timezone.utc)
    fmt = "%y%m%d%H%M%SZ"
    if not (d / "ossl-index.txt").exists():
        (d / "ossl-index.txt").write_text("")
        (d / "ossl-certs").mkdir()
    _ext(d, "ossl.cnf", "[ca]\ndefault_ca = ca_default\n[ca_default]\n"
         f"database = {d / 'ossl-index.txt'}\nnew_certs_dir = {d / 'ossl-certs'}\n"
         "rand_serial = yes\ndefault_md = sha256\nunique_subject = no\npolicy = any\n"
         "[any]\ncommonName = supplied\n"
         "[v3ca]\nbasicConstraints = critical,CA:TRUE\nkeyUsage = critical,keyCertSign,cRLSign\n"
         "subjectKeyIdentifier = hash\n"
         "[v3server]\nbasicConstraints = critical,CA:FALSE\nkeyUsage = digitalSignature\n"
         "extendedKeyUsage = serverAuth\nsubjectKeyIdentifier = hash\n"
         "authorityKeyIdentifier = keyid\nsubjectAltName = DNS:localhost,IP:127.0.0.1\n")
    signer = ["-selfsign", "-keyfile", key] if ca_cert is None else ["-cert", ca_cert,
                                                                        "-keyfile", key]
    openssl_ok("ca", "-batch", "-notext", "-config", "ossl.cnf", "-extensions", section, *signer,
               "-in", csr, "-out", out,
               "-startdate", (now + datetime.timedelta(days=days_from)).strftime(fmt),
               "-enddate", (now + datetime.timedelta(days=days_to)).strftime(fmt), cwd=d)
    return d / out


def _expired_self_signed(d, key, cn):
    """A self-signed CA certificate for key and CN=cn that expired yesterday."""
    openssl_ok("req", "-new", "-key", key, "-subj", f"/CN={cn}", "-out", "exp.csr", cwd=d)
    return _openssl_ca(d, key, "exp.csr", "exp.crt", -30, -1, "v3ca")


def test_doctor_says_an_expired_server_certificate_once(setup):
    # The server CA (same key and name) since 30 days, and a server certificate from it
    # that was valid from 20 days ago until yesterday: the chain itself links.
    openssl_ok("req", "-new", "-key", "serverca.key", "-subj", "/CN=server-example-ca", "-out",
               "sca.csr", cwd=setup)
    _openssl_ca(setup, "serverca.key", "sca.csr", "serverca.crt", -30, 300, "v3ca")
    _openssl_ca(setup, "serverca.key", "server.csr", "server.crt", -20, -1, "v3server",
                ca_cert="serverca.crt")
    code, report = doctor(setup)
    assert code == 1
    assert codes(report, "server.crt", "error") == ["expired"], report["findings"]
    assert codes(report, severity="error") == ["expired"]


def test_doctor_finds_an_expired_client_ca(setup):
    expired = _expired_self_signed(setup, "clientca.key", "client-example-ca")
    shutil.copy(expired, setup / "clientca.crt")
    code, report = doctor(setup)
    assert code == 1
    assert codes(report, "clientca.crt", "error") == ["expired"]
    assert "make a new CA" in finding(report, "expired", "clientca.crt")["fix"]
    # The chain links (same key and name) but there was never a moment when both were
    # valid, so the client's chain fails too, for that reason.
    assert "expired on" in finding(report, "client-chain", "client.crt")["message"]


def test_doctor_finds_a_client_ca_that_is_no_ca(setup):
    shutil.copy(setup / "client.crt", setup / "clientca.crt")
    code, report = doctor(setup)
    assert code == 1
    assert "not-a-ca" in codes(report, "clientca.crt", "error")
    chain = finding(report, "client-chain", "client.crt")
    assert "clientca.crt" in chain["message"]


def test_doctor_finds_readable_keys(setup):
    os.chmod(setup / "server.key", 0o644)
    code, report = doctor(setup)
    assert code == 1
    found = finding(report, "key-readable", "server.key")
    assert "0644" in found["message"] and found["fix"].startswith("chmod 600 ")
    os.chmod(setup / "server.key", 0o640)
    code, report = doctor(setup)
    assert code == 3 and codes(report, severity="warning") == ["key-group-readable"]
    os.chmod(setup / "server.key", 0o600)
    assert doctor(setup)[0] == 0


def test_doctor_checks_crls(setup):
    # A CRL from a CA that is neither of the setup's.
    ok("ca", "create", "--out", setup / "other", "--cn", "other-ca")
    ok("crl", "create", "--ca", setup / "other", "--out", setup / "other.crl")
    code, report = doctor(setup)
    assert code == 1
    wrong = finding(report, "crl-wrong-issuer", "other.crl")
    assert "CN=other-ca" in wrong["message"] and "clientca" in wrong["fix"]
    os.unlink(setup / "other.crl")
    # The client CA's own CRL, revoking client.crt; and the server CA's, about to expire.
    ok("ca", "revoke", "--ca", setup / "clientca", setup / "client.crt")
    ok("crl", "create", "--ca", setup / "clientca", "--out", setup / "clientca.crl")
    ok("crl", "create", "--ca", setup / "serverca", "--out", setup / "serverca.crl", "--days", "3")
    code, report = doctor(setup)
    assert code == 1
    revoked = finding(report, "revoked", "client.crt")
    assert "revoked" in revoked["message"]
    assert codes(report, "serverca.crl") == ["crl-expires-soon", "crl-server-ca"]
    assert "clientca.crl" not in {os.path.basename(f["file"]) for f in report["findings"]}
    # The same CRL as DER: mtls reads it, but 'serve --crl' takes PEM only.
    openssl_ok("crl", "-in", "clientca.crl", "-outform", "DER", "-out", "clientca.crl",
               cwd=setup)
    code, report = doctor(setup)
    assert "openssl crl -inform DER" in finding(report, "crl-not-pem", "clientca.crl")["fix"]
    assert finding(report, "revoked", "client.crt")
    os.unlink(setup / "clientca.crl")
    # A CRL passed by --crl is checked like those of the folder.
    elsewhere = setup.parent / "elsewhere.crl"
    ok("crl", "create", "--ca", setup / "other", "--out", elsewhere)
    code, report = doctor(setup, "--crl", elsewhere)
    assert finding(report, "crl-wrong-issuer")["file"] == str(elsewhere)


def test_doctor_checks_host_names(setup):
    code, report = doctor(setup, "--host", "localhost", "--host", "www.example.com")
    assert code == 1
    host = finding(report, "host-not-covered", "server.crt")
    assert "'www.example.com'" in host["message"] and "DNS:localhost" in host["message"]
    assert "--san www.example.com" in host["fix"]
    assert doctor(setup, "--host", "127.0.0.1")[0] == 0


def test_doctor_reports_a_busy_port(setup):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        for args in (("--port", str(port)), ("--listen", f"127.0.0.1:{port}")):
            code, report = doctor(setup, *args)
            assert code == 1, report
            busy = finding(report, "port-in-use")
            assert "in use" in busy["message"] and str(port) in busy["message"]
    r = run_mtls("doctor", setup, "--port", "1", "--listen", "127.0.0.1:0")
    assert r.returncode == 2 and "not both" in r.stderr


def test_doctor_missing_files_and_bad_folder(tmp_path):
    code, report = doctor(tmp_path)
    assert code == 1
    assert codes(report, severity="error") == ["missing-file"] * 3
    assert {os.path.basename(f["file"]) for f in report["findings"]
            if f["code"] == "missing-file"} == {"server.crt", "server.key", "clientca.crt"}
    assert codes(report, severity="info") == ["not-checked", "not-checked"]
    r = run_mtls("doctor", tmp_path / "nope")
    assert r.returncode == 2 and "is not a folder" in r.stderr, r.stderr
    r = run_mtls("doctor", "--help")
    assert r.returncode == 0
    for word in ("--host", "--port", "--listen", "--crl", "--password-file", "--json"):
        assert word in r.stdout
    assert "doctor" in run_mtls("--help").stdout


def test_doctor_checks_the_server_chain_with_an_intermediate(setup):
    ok("ca", "create", "--out", setup / "inter", "--cn", "Issuing CA", "--parent",
       setup / "serverca")
    ok("cert", "issue", "--ca", setup / "inter", "--profile", "server", "--cn", "localhost",
       "--san", "localhost", "--san", "127.0.0.1", "--out", setup / "srv")
    shutil.copy(setup / "srv.key", setup / "server.key")
    # The leaf alone: clients cannot link it to serverca.crt.
    shutil.copy(setup / "srv.crt", setup / "server.crt")
    code, report = doctor(setup)
    assert code == 1
    chain = finding(report, "server-chain", "server.crt")
    assert "'CN=Issuing CA'" in chain["message"] and "append the intermediate" in chain["fix"]
    # The chain file (leaf, then the intermediate) is what the server must send.
    shutil.copy(setup / "srv.chain.crt", setup / "server.crt")
    assert doctor(setup)[0] == 0
    # The root in between: the certificates do not link in that order.
    (setup / "server.crt").write_text((setup / "srv.crt").read_text() +
                                      (setup / "serverca.crt").read_text() +
                                      (setup / "inter.crt").read_text())
    code, report = doctor(setup)
    assert code == 1 and "chain does not link" in finding(report, "chain-order")["message"]
