"""The step-by-step PKI commands: ca create, key create, csr create,
cert sign, cert issue, cert show, cert verify; interop with the openssl CLI
both ways, and every refusal (clear one-line error, nothing written)."""
import base64
import json
import os
import re
import stat
import subprocess

import pytest

from conftest import run_mtls
from pki_cli import fails, ok, openssl


def listing(d):
    return sorted(str(p.relative_to(d)) for p in d.rglob("*"))


@pytest.fixture(scope="module")
def ca(tmp_path_factory):
    d = tmp_path_factory.mktemp("ca")
    ok("ca", "create", "--out", d / "myca", "--cn", "My Test CA")
    return d


def test_ca_create_files_and_extensions(ca):
    for f in ["myca.crt", "myca.key", "myca.index", "myca.index.attr"]:
        assert (ca / f).exists(), f
    assert (ca / "myca.certs").is_dir()
    assert stat.S_IMODE(os.stat(ca / "myca.key").st_mode) == 0o600
    t = openssl("x509", "-in", ca / "myca.crt", "-noout", "-text").stdout
    assert "CA:TRUE" in t and "critical" in t and "Certificate Sign, CRL Sign" in t
    assert "Subject Key Identifier" in t
    # Ten years by default.
    end = openssl("x509", "-in", ca / "myca.crt", "-noout", "-enddate").stdout
    assert re.search(r"20(3[5-9]|4\d) GMT", end), end


def test_step_by_step_server_certificate(ca, tmp_path):
    ok("key", "create", "--out", tmp_path / "s.key")
    assert stat.S_IMODE(os.stat(tmp_path / "s.key").st_mode) == 0o600
    ok("csr", "create", "--key", tmp_path / "s.key", "--cn", "www.example.test", "--san",
       "www.example.test", "--san", "IP:192.0.2.1", "--out", tmp_path / "s.csr")
    r = ok("cert", "sign", "--csr", tmp_path / "s.csr", "--ca", ca / "myca", "--profile", "server",
           "--san", "api.example.test", "--out", tmp_path / "s.crt")
    assert "issued server certificate" in r.stdout
    t = openssl("x509", "-in", tmp_path / "s.crt", "-noout", "-text").stdout
    assert "DNS:www.example.test, IP Address:192.0.2.1, DNS:api.example.test" in t
    assert "TLS Web Server Authentication" in t
    v = openssl("verify", "-CAfile", ca / "myca.crt", "-purpose", "sslserver", tmp_path / "s.crt")
    assert v.returncode == 0, v.stdout + v.stderr
    # Recorded in the inventory, with a copy under its serial.
    serial = openssl("x509", "-in", tmp_path / "s.crt", "-noout", "-serial").stdout.split("=")[1].strip()
    index = (ca / "myca.index").read_text()
    assert re.search(rf"^V\t\d{{12}}Z\t\t{serial}\tunknown\t/CN=www.example.test$", index, re.M), index
    assert (ca / "myca.certs" / f"{serial}.pem").read_text() == (tmp_path / "s.crt").read_text()


def test_serials_are_128_random_bits_and_positive(ca, tmp_path):
    serials = set()
    for i in range(4):
        ok("cert", "issue", "--ca", ca / "myca", "--profile", "client", "--cn", f"c{i}", "--out",
           tmp_path / f"c{i}")
        s = openssl("x509", "-in", tmp_path / f"c{i}.crt", "-noout", "-serial").stdout.split("=")[1].strip()
        assert len(s) >= 24 and not s.startswith("-") and int(s, 16) < 2 ** 128, s
        serials.add(s)
    assert len(serials) == 4


def test_cert_issue_client_and_validity(ca, tmp_path):
    r = ok("cert", "issue", "--ca", ca / "myca", "--profile", "client", "--cn", "alice", "--out",
           tmp_path / "alice", "--days", "30")
    assert stat.S_IMODE(os.stat(tmp_path / "alice.key").st_mode) == 0o600
    j = json.loads(ok("cert", "show", tmp_path / "alice.crt", "--json").stdout)
    assert j["subject"] == "CN=alice" and j["issuer"] == "CN=My Test CA"
    assert j["extended_key_usage"] == ["TLS Web Client Authentication"]
    assert j["key_usage"] == ["Digital Signature"]
    assert j["is_ca"] is False and j["sans"] == [] and j["key_type"] == "EC"
    assert j["expires_in_days"] == 30
    # notBefore a few minutes back for clock skew.
    nb = openssl("x509", "-in", tmp_path / "alice.crt", "-noout", "-startdate").stdout
    assert "notBefore" in nb
    v = ok("cert", "verify", tmp_path / "alice.crt", "--ca", ca / "myca.crt", "--purpose", "client")
    assert v.stdout.startswith("valid: 'CN=alice'")


def test_leaf_never_outlives_its_ca(tmp_path):
    ok("ca", "create", "--out", tmp_path / "short", "--cn", "Short CA", "--days", "10")
    r = ok("cert", "issue", "--ca", tmp_path / "short", "--profile", "client", "--cn", "x", "--out",
           tmp_path / "x")
    assert "earlier than --days asked" in r.stderr
    ca_end = openssl("x509", "-in", tmp_path / "short.crt", "-noout", "-enddate").stdout
    leaf_end = openssl("x509", "-in", tmp_path / "x.crt", "-noout", "-enddate").stdout
    assert ca_end == leaf_end


def test_rsa_and_ed25519_keys(ca, tmp_path):
    ok("key", "create", "--out", tmp_path / "r.key", "--key-type", "rsa", "--bits", "3072")
    assert "3072 bit" in openssl("pkey", "-in", tmp_path / "r.key", "-noout", "-text").stdout
    ok("key", "create", "--out", tmp_path / "e.key", "--key-type", "ed25519")
    ok("csr", "create", "--key", tmp_path / "e.key", "--cn", "ed", "--out", tmp_path / "e.csr")
    ok("cert", "sign", "--csr", tmp_path / "e.csr", "--ca", ca / "myca", "--profile", "client",
       "--out", tmp_path / "e.crt")
    assert openssl("verify", "-CAfile", ca / "myca.crt", tmp_path / "e.crt").returncode == 0
    ok("cert", "issue", "--ca", ca / "myca", "--profile", "server", "--cn", "rsa.test", "--key-type",
       "rsa", "--out", tmp_path / "rs")
    t = openssl("x509", "-in", tmp_path / "rs.crt", "-noout", "-text").stdout
    assert "Digital Signature, Key Encipherment" in t and "DNS:rsa.test" in t


def test_sign_never_copies_ca_or_key_usage_from_the_csr(ca, tmp_path):
    r = openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                "-keyout", tmp_path / "evil.key", "-subj", "/CN=evil", "-out", tmp_path / "evil.csr",
                "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=keyCertSign,cRLSign",
                "-addext", "subjectAltName=DNS:evil.test")
    assert r.returncode == 0, r.stderr
    shown = ok("cert", "show", tmp_path / "evil.csr").stdout
    assert "asks for CA:TRUE" in shown and "DNS:evil.test" in shown
    ok("cert", "sign", "--csr", tmp_path / "evil.csr", "--ca", ca / "myca", "--profile", "client",
       "--out", tmp_path / "evil.crt")
    j = json.loads(ok("cert", "show", tmp_path / "evil.crt", "--json").stdout)
    assert j["is_ca"] is False
    assert j["key_usage"] == ["Digital Signature"]
    assert j["sans"] == [{"type": "DNS", "value": "evil.test"}]


def test_articles_openssl_files_work_with_mtls(tmp_path):
    """The article's own commands (section 3), then mtls reads and uses them."""
    cmds = [
        ["req", "-new", "-x509", "-nodes", "-days", "365", "-subj", "/CN=client-example-ca",
         "-keyout", "clientca.key", "-out", "clientca.crt"],
        ["genrsa", "-out", "client.key"],
        ["req", "-new", "-key", "client.key", "-subj", "/CN=localclient", "-out", "client.csr"],
        ["x509", "-req", "-in", "client.csr", "-CA", "clientca.crt", "-CAkey", "clientca.key",
         "-CAcreateserial", "-days", "365", "-out", "client.crt"],
    ]
    for c in cmds:
        r = openssl(*c, cwd=tmp_path)
        assert r.returncode == 0, r.stderr
    shown = ok("cert", "show", "client.crt", cwd=tmp_path).stdout
    assert "CN=localclient" in shown and "RSA 2048 bits" in shown
    # openssl x509 -req makes a v1 certificate up to OpenSSL 3.1 (no extensions, said so);
    # later versions add the key identifiers and so make v3. Compare with what openssl says.
    text = openssl("x509", "-in", "client.crt", "-noout", "-text", cwd=tmp_path).stdout
    version = int(re.search(r"Version: (\d)", text).group(1))
    no_ext_line = re.search(r"^  version      1 \(no extensions\)$", shown, re.M)
    assert bool(no_ext_line) == (version == 1), shown
    assert re.search(r"^  key usage    \(any\)$", shown, re.M) and "CA           no" in shown
    assert json.loads(ok("cert", "show", "client.crt", "--json", cwd=tmp_path).stdout)["version"] == version
    # A SHA-1 signature, where this OpenSSL still makes one, is named as such.
    r = openssl("x509", "-req", "-in", "client.csr", "-CA", "clientca.crt", "-CAkey", "clientca.key",
                "-CAcreateserial", "-days", "30", "-sha1", "-out", "sha1.crt", cwd=tmp_path)
    if r.returncode == 0:
        assert "sha1WithRSAEncryption" in ok("cert", "show", "sha1.crt", cwd=tmp_path).stdout
    assert "CN=localclient" in ok("cert", "show", "client.csr", cwd=tmp_path).stdout
    v = ok("cert", "verify", "client.crt", "--ca", "clientca.crt", cwd=tmp_path)
    assert "valid" in v.stdout
    # The article's CA can sign with mtls too (its inventory starts then).
    ok("cert", "sign", "--csr", "client.csr", "--ca", "clientca", "--profile", "client", "--out",
       "client2.crt", cwd=tmp_path)
    ok("cert", "verify", "client2.crt", "--ca", "clientca.crt", "--purpose", "client", cwd=tmp_path)
    assert "/CN=localclient" in (tmp_path / "clientca.index").read_text()


OPENSSL_CA_CNF = """
[ ca ]
default_ca = myca
[ myca ]
database = {d}/myca.index
new_certs_dir = {d}/myca.certs
certificate = {d}/myca.crt
private_key = {d}/myca.key
rand_serial = yes
default_md = sha256
policy = any
copy_extensions = none
[ any ]
commonName = supplied
"""


@pytest.fixture(scope="module")
def dated(ca, tmp_path_factory):
    """An expired and a not-yet-valid certificate, made by `openssl ca` from
    our CA folder: it reads and extends our inventory."""
    d = tmp_path_factory.mktemp("dated")
    cnf = d / "ca.cnf"
    cnf.write_text(OPENSSL_CA_CNF.format(d=ca))
    out = {}
    for name, start, end in [("expired", "20200101000000Z", "20210101000000Z"),
                             ("future", "20990101000000Z", "20991231000000Z")]:
        r = openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-keyout", d / f"{name}.key", "-subj", f"/CN={name}", "-out", d / f"{name}.csr")
        assert r.returncode == 0, r.stderr
        r = openssl("ca", "-config", cnf, "-batch", "-notext", "-startdate", start, "-enddate", end,
                    "-in", d / f"{name}.csr", "-out", d / f"{name}.crt")
        assert r.returncode == 0, r.stdout + r.stderr
        out[name] = d / f"{name}.crt"
    return out


def test_openssl_ca_shares_our_inventory(ca, dated, tmp_path):
    index = (ca / "myca.index").read_text()
    assert "/CN=expired" in index and "/CN=future" in index
    # ... and mtls keeps issuing from it afterwards.
    ok("cert", "issue", "--ca", ca / "myca", "--profile", "client", "--cn", "after", "--out",
       tmp_path / "after")
    assert "/CN=after" in (ca / "myca.index").read_text()


def test_verify_expired_and_not_yet_valid(ca, dated):
    r = fails(1, "expired on 2021-01-01 00:00:00 UTC", "cert", "verify", dated["expired"], "--ca",
              ca / "myca.crt")
    assert r.stderr.count("\n") == 1
    fails(1, "not valid yet: not until 2099-01-01 00:00:00 UTC", "cert", "verify", dated["future"],
          "--ca", ca / "myca.crt")
    j = json.loads(ok("cert", "show", dated["expired"], "--json").stdout)
    assert j["expired"] is True and j["expires_in_days"] < 0
    assert "expired" in ok("cert", "show", dated["expired"]).stdout


def test_verify_reasons(ca, tmp_path):
    ok("cert", "issue", "--ca", ca / "myca", "--profile", "server", "--cn", "srv", "--san", "srv.test",
       "--san", "127.0.0.1", "--out", tmp_path / "srv")
    crt = tmp_path / "srv.crt"
    ok("cert", "verify", crt, "--ca", ca / "myca.crt", "--purpose", "server", "--host", "srv.test")
    ok("cert", "verify", crt, "--ca", ca / "myca", "--host", "127.0.0.1")
    fails(1, "wrong purpose: certificate 'CN=srv' is not for TLS client authentication", "cert",
          "verify", crt, "--ca", ca / "myca.crt", "--purpose", "client")
    fails(1, "host name 'other.test' is not in the SANs of certificate 'CN=srv' (DNS:srv.test, "
             "IP:127.0.0.1)", "cert", "verify", crt, "--ca", ca / "myca.crt", "--host", "other.test")
    ok("ca", "create", "--out", tmp_path / "other", "--cn", "Other CA")
    fails(1, "issuer not trusted: certificate 'CN=srv' was issued by 'CN=My Test CA', which is not a "
             "trusted CA", "cert", "verify", crt, "--ca", tmp_path / "other.crt")
    # Same CA name, another key: said so.
    ok("ca", "create", "--out", tmp_path / "twin", "--cn", "My Test CA")
    fails(1, "same name, another key", "cert", "verify", crt, "--ca", tmp_path / "twin.crt")
    # A tampered signature.
    pem = crt.read_text().splitlines()
    der = bytearray(base64.b64decode("".join(pem[1:-1])))
    der[-5] ^= 0x01
    b64 = base64.b64encode(bytes(der)).decode()
    (tmp_path / "bad.crt").write_text("-----BEGIN CERTIFICATE-----\n" +
                                      "\n".join(b64[i:i + 64] for i in range(0, len(b64), 64)) +
                                      "\n-----END CERTIFICATE-----\n")
    fails(1, "signature invalid", "cert", "verify", tmp_path / "bad.crt", "--ca", ca / "myca.crt")
    fails(2, "--purpose: unknown profile 'admin'", "cert", "verify", crt, "--ca", ca / "myca.crt",
          "--purpose", "admin")
    fails(2, "cannot read", "cert", "verify", tmp_path / "nope.crt", "--ca", ca / "myca.crt")


def tampered_csr(src, dst):
    lines = src.read_text().splitlines()
    der = bytearray(base64.b64decode("".join(lines[1:-1])))
    # Flip a bit inside the subject's CN: the signature no longer matches.
    i = bytes(der).find(b"victim")
    der[i] ^= 0x01
    b64 = base64.b64encode(bytes(der)).decode()
    dst.write_text("-----BEGIN CERTIFICATE REQUEST-----\n" +
                   "\n".join(b64[i:i + 64] for i in range(0, len(b64), 64)) +
                   "\n-----END CERTIFICATE REQUEST-----\n")


def test_bad_input_each_one_clear_line_nothing_written(ca, tmp_path):
    work = tmp_path / "w"
    work.mkdir()
    ok("key", "create", "--out", work / "k.key")
    ok("csr", "create", "--key", work / "k.key", "--cn", "victim", "--out", work / "k.csr")
    tampered_csr(work / "k.csr", work / "bad.csr")
    (work / "notpem.txt").write_text("hello\n")
    before = listing(work)
    index_before = (ca / "myca.index").read_text()
    cases = [
        # missing file
        (1, "cannot read", ["cert", "show", work / "missing.crt"]),
        (1, "cannot read", ["cert", "sign", "--csr", work / "missing.csr", "--ca", ca / "myca",
                            "--profile", "client", "--out", work / "o.crt"]),
        (1, "no such file (--ca takes the CA's PREFIX", ["cert", "issue", "--ca", work / "noca",
                                                         "--profile", "client", "--cn", "x", "--out",
                                                         work / "o"]),
        # not PEM
        (1, "is not a PEM certificate", ["cert", "show", work / "notpem.txt"]),
        (1, "holds a private key, not a certificate request", [
            "cert", "sign", "--csr", work / "k.key", "--ca", ca / "myca", "--profile", "client",
            "--out", work / "o.crt"]),
        (1, "is not a PEM private key", ["csr", "create", "--key", work / "notpem.txt", "--cn", "x",
                                         "--out", work / "o.csr"]),
        # a CSR with a bad signature
        (1, f"CSR '{work / 'bad.csr'}' has a bad signature", [
            "cert", "sign", "--csr", work / "bad.csr", "--ca", ca / "myca", "--profile", "client",
            "--out", work / "o.crt"]),
        # unknown profile
        (2, "unknown profile 'admin': use client or server", [
            "cert", "issue", "--ca", ca / "myca", "--profile", "admin", "--cn", "x", "--out", work / "o"]),
        # --days 0
        (2, "--days must be between 1 and", ["cert", "issue", "--ca", ca / "myca", "--profile",
                                             "client", "--cn", "x", "--days", "0", "--out", work / "o"]),
        (2, "--days must be between 1 and", ["ca", "create", "--out", work / "c", "--cn", "c",
                                             "--days", "0"]),
        # overwriting without --force
        (1, "already exists: pass --force", ["key", "create", "--out", work / "k.key"]),
        (1, "already exists: pass --force", ["csr", "create", "--key", work / "k.key", "--cn", "x",
                                             "--out", work / "k.csr"]),
        (1, "already exists: pass --force", ["ca", "create", "--out", ca / "myca", "--cn", "x"]),
        (2, "unknown key type 'dsa'", ["key", "create", "--out", work / "o.key", "--key-type", "dsa"]),
        (2, "RSA keys need 2048", ["key", "create", "--out", work / "o.key", "--key-type", "rsa",
                                   "--bits", "1024"]),
        (2, "not a valid host name", ["csr", "create", "--key", work / "k.key", "--cn", "x", "--san",
                                      "bad name", "--out", work / "o.csr"]),
    ]
    for code, needle, args in cases:
        r = fails(code, needle, *args)
        assert len(r.stderr.strip().splitlines()) <= 2, r.stderr  # one line (+ usage hint)
    assert listing(work) == before
    assert (ca / "myca.index").read_text() == index_before


def test_outputs_that_cannot_be_written_are_named_before_anything_is_made(ca, tmp_path):
    work = tmp_path / "w"
    (work / "adir").mkdir(parents=True)
    ok("key", "create", "--out", work / "k.key")
    (work / "plain").write_text("x\n")
    (work / "empty.pem").write_text("")
    before = listing(work)
    index_before = (ca / "myca.index").read_text()
    folder = f"'{work / 'nope'}' does not exist: create it first"
    cases = [
        # a folder where the file should go, even with --force
        (f"cannot write '{work / 'adir'}': it is a folder", ["key", "create", "--out", work / "adir"]),
        (f"cannot write '{work / 'adir'}': it is a folder", ["key", "create", "--out", work / "adir",
                                                            "--force"]),
        (f"cannot write '{work / 'adir'}': it is a folder", [
            "csr", "create", "--key", work / "k.key", "--cn", "x", "--out", work / "adir"]),
        # a folder that is not there, or a file in its place
        (folder, ["key", "create", "--out", work / "nope" / "k.key"]),
        (folder, ["cert", "issue", "--ca", ca / "myca", "--profile", "client", "--cn", "x",
                  "--out", work / "nope" / "x"]),
        (folder, ["ca", "create", "--out", work / "nope" / "ca", "--cn", "x"]),
        (folder, ["crl", "create", "--ca", ca / "myca", "--out", work / "nope" / "c.crl"]),
        (f"'{work / 'plain'}' is not a folder", ["key", "create", "--out", work / "plain" / "k.key"]),
        # an empty file says so
        (f"'{work / 'empty.pem'}' is empty: expected a certificate", ["cert", "show", work / "empty.pem"]),
    ]
    for needle, args in cases:
        r = fails(1, needle, *args)
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert listing(work) == before
    assert (ca / "myca.index").read_text() == index_before
    # init still makes its folder, however deep.
    ok("init", "--dir", work / "new" / "pki")
    assert (work / "new" / "pki" / "server.crt").exists()


def test_show_reads_a_der_csr(ca, tmp_path):
    ok("key", "create", "--out", tmp_path / "k.key")
    ok("csr", "create", "--key", tmp_path / "k.key", "--cn", "der.test", "--san", "::1",
       "--out", tmp_path / "k.csr")
    r = openssl("req", "-in", tmp_path / "k.csr", "-outform", "DER", "-out", tmp_path / "k.der")
    assert r.returncode == 0, r.stderr
    j = json.loads(ok("cert", "show", tmp_path / "k.der", "--json").stdout)
    assert j["type"] == "csr" and j["subject"] == "CN=der.test" and j["signature_valid"] is True
    assert j["sans"] == [{"type": "IP", "value": "::1"}]


def test_key_that_does_not_match_its_ca(tmp_path):
    ok("ca", "create", "--out", tmp_path / "a", "--cn", "A")
    ok("key", "create", "--out", tmp_path / "stray.key")
    os.replace(tmp_path / "stray.key", tmp_path / "a.key")
    before = listing(tmp_path)
    fails(1, f"'{tmp_path / 'a.key'}' does not match '{tmp_path / 'a.crt'}'", "cert", "issue", "--ca",
          tmp_path / "a", "--profile", "client", "--cn", "x", "--out", tmp_path / "x")
    assert listing(tmp_path) == before


def test_cert_issue_overwrite_is_refused_then_forced(ca, tmp_path):
    ok("cert", "issue", "--ca", ca / "myca", "--profile", "client", "--cn", "dup", "--out", tmp_path / "dup")
    first = (tmp_path / "dup.crt").read_text()
    index = (ca / "myca.index").read_text()
    fails(1, "dup.key' already exists", "cert", "issue", "--ca", ca / "myca", "--profile", "client",
          "--cn", "dup", "--out", tmp_path / "dup")
    assert (tmp_path / "dup.crt").read_text() == first
    assert (ca / "myca.index").read_text() == index
    ok("cert", "issue", "--ca", ca / "myca", "--profile", "client", "--cn", "dup", "--out",
       tmp_path / "dup", "--force")
    assert (tmp_path / "dup.crt").read_text() != first


def test_show_chain_and_human_text(ca, tmp_path):
    ok("cert", "issue", "--ca", ca / "myca", "--profile", "server", "--cn", "h.test", "--out", tmp_path / "h")
    bundle = tmp_path / "bundle.pem"
    bundle.write_text((tmp_path / "h.crt").read_text() + (ca / "myca.crt").read_text())
    j = json.loads(ok("cert", "show", bundle, "--json").stdout)
    assert isinstance(j, list) and len(j) == 2 and j[1]["is_ca"] is True and j[1]["self_signed"]
    t = ok("cert", "show", tmp_path / "h.crt").stdout
    for label in ["subject", "issuer", "serial", "valid", "expires in", "key", "SANs", "DNS:h.test",
                  "key usage", "ext. usage", "CA", "SHA-256"]:
        assert label in t, label


def test_help_of_every_pki_command():
    for cmd in [["ca", "create"], ["key", "create"], ["csr", "create"], ["cert", "sign"],
                ["cert", "issue"], ["cert", "show"], ["cert", "verify"]]:
        r = run_mtls(*cmd, "--help")
        assert r.returncode == 0 and "exit codes:" in r.stdout and "usage: mtls" in r.stdout
    assert "cert verify" in run_mtls("cert", "--help").stdout
    # --password-file says what it does for each command: no --encrypt talk where there is none.
    for cmd in [["csr", "create"], ["cert", "sign"], ["crl", "create"], ["ca", "revoke"],
                ["key", "create"], ["init"]]:
        text = run_mtls(*cmd, "--help").stdout
        assert "--password-file FILE" in text and "decrypts the keys read" not in text, cmd
    verify = run_mtls("cert", "verify", "--help").stdout
    assert "[--crl FILE]..." in verify and "was revoked by its CA" in verify
    assert len(re.findall(r"^  2  usage error", verify, re.M)) == 1
    assert "[DIR | --dir DIR]" in run_mtls("init", "--help").stdout


def test_show_prints_every_san_of_a_long_list(ca, tmp_path):
    sans = [f"host{i}.example.com" for i in range(1, 301)] + ["2001:db8::1"]
    args = [a for s in sans for a in ("--san", s)]
    ok("cert", "issue", "--ca", ca / "myca", "--profile", "server", "--cn", "many", "--out",
       tmp_path / "many", *args)
    text = ok("cert", "show", tmp_path / "many.crt").stdout
    shown = re.findall(r"(?:DNS|IP):[^\s,]+", text)
    assert shown == [f"DNS:{s}" for s in sans[:-1]] + ["IP:2001:db8::1"], text[:2000]
    assert all(len(line) <= 100 for line in text.splitlines() if "DNS:" in line)
    j = json.loads(ok("cert", "show", tmp_path / "many.crt", "--json").stdout)
    assert len(j["sans"]) == 301
    ok("cert", "verify", tmp_path / "many.crt", "--ca", ca / "myca", "--host", "2001:db8::1")


def test_names_a_person_typed_are_quoted_safely_and_checked(ca, tmp_path):
    out = ["--out", tmp_path / "x"]
    issue = ["cert", "issue", "--ca", ca / "myca", "--profile", "client"]
    cases = [
        # a control character or invalid UTF-8 is shown as \xHH: the error stays one line
        (["--cn", "a\nb"], r"common name 'a\x0Ab' contains a control character"),
        (["--cn", "a\x1b[31mred"], r"common name 'a\x1B[31mred' contains a control character"),
        (["--cn", "blank", "--san", "bad\nname"], r"SAN 'bad\x0Aname' is not a valid host name"),
        # a CN of blanks only is as empty as no CN
        (["--cn", "   "], "the common name is blank: pass --cn NAME"),
        # e-mail and URI SANs are IA5 strings: ASCII only
        (["--cn", "m", "--san", "email:jürgen@example.de"], "is not an e-mail address (ASCII"),
        (["--cn", "u", "--san", "URI:https://example.com/\x01"], r"/\x01' is not a URI"),
    ]
    for args, needle in cases:
        r = fails(2, needle, *issue, *args, *out)
        assert len(r.stderr.strip().splitlines()) == 2, r.stderr  # the line + the help hint
    r = run_mtls(*issue, "--cn", "x", "--san", b"caf\xe9.example".decode("latin-1"), *out)
    assert r.returncode == 2 and "not a valid host name" in r.stderr
    assert not (tmp_path / "x.key").exists()
    # International names go in their xn-- form.
    ok(*issue, "--cn", "例え", "--san", "xn--r8jz45g.jp", *out)


def test_keys_that_tls_clients_refuse_are_refused_before_signing(ca, tmp_path):
    index = (ca / "myca.index").read_text()
    for name, keygen in [("weak", ["genrsa", "-out", tmp_path / "weak.key", "1024"]),
                         ("k1", ["ecparam", "-name", "secp256k1", "-genkey", "-out",
                                 tmp_path / "k1.key"])]:
        assert openssl(*keygen).returncode == 0
        r = openssl("req", "-new", "-key", tmp_path / f"{name}.key", "-subj", f"/CN={name}",
                    "-out", tmp_path / f"{name}.csr")
        assert r.returncode == 0, r.stderr
    fails(1, f"the key of '{tmp_path / 'weak.csr'}' is RSA 1024 bits, which TLS clients refuse",
          "cert", "sign", "--csr", tmp_path / "weak.csr", "--ca", ca / "myca", "--profile",
          "client", "--out", tmp_path / "weak.crt")
    fails(1, "is on the curve secp256k1, which TLS does not use", "cert", "sign", "--csr",
          tmp_path / "k1.csr", "--ca", ca / "myca", "--profile", "client", "--out",
          tmp_path / "k1.crt")
    fails(1, f"the key of '{tmp_path / 'weak.key'}' is RSA 1024 bits", "csr", "create", "--key",
          tmp_path / "weak.key", "--cn", "w", "--out", tmp_path / "w.csr")
    assert not (tmp_path / "weak.crt").exists() and not (tmp_path / "k1.crt").exists()
    assert (ca / "myca.index").read_text() == index


def test_show_says_when_a_csr_signature_is_forged(tmp_path):
    ok("key", "create", "--out", tmp_path / "k.key")
    ok("csr", "create", "--key", tmp_path / "k.key", "--cn", "victim", "--out", tmp_path / "k.csr")
    tampered_csr(tmp_path / "k.csr", tmp_path / "bad.csr")
    assert "valid (made with its own key)" in ok("cert", "show", tmp_path / "k.csr").stdout
    t = ok("cert", "show", tmp_path / "bad.csr").stdout
    assert re.search(r"^  signature    ecdsa-with-SHA256, INVALID \(altered or forged\)$", t, re.M), t
    j = json.loads(ok("cert", "show", tmp_path / "bad.csr", "--json").stdout)
    assert j["signature_valid"] is False and j["subject"] == "CN=wictim"
