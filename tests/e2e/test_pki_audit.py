"""Regressions from the outside audit of the PKI commands (issue 9): host
names only in SANs, server certificates that name no host, `ca list
--expiring` seeing the CA and expired leaves, `cert p12 --chain` that does
not link, and day counts read as a person reads them."""
import json
import os
import re

import pytest

from conftest import run_mtls
from pki_cli import fails, ok, openssl


@pytest.fixture(scope="module")
def ca(tmp_path_factory):
    d = tmp_path_factory.mktemp("audit")
    ok("ca", "create", "--out", d / "ca", "--cn", "Audit CA")
    return d


def test_server_certificate_without_any_san_is_refused(ca, tmp_path):
    # 'My Server' is no host name: no SAN can be made from it, and no client
    # reads the CN any more, so the certificate would be useless.
    r = fails(1, "--san", "cert", "issue", "--ca", ca / "ca", "--profile", "server", "--cn",
              "My Server", "--out", tmp_path / "my")
    assert "needs a SAN" in r.stderr and "'CN=My Server'" in r.stderr, r.stderr
    assert not (tmp_path / "my.crt").exists() and not (tmp_path / "my.key").exists()
    # The same through a CSR.
    ok("key", "create", "--out", tmp_path / "s.key")
    ok("csr", "create", "--key", tmp_path / "s.key", "--cn", "My Server", "--out", tmp_path / "s.csr")
    index = (ca / "ca.index").read_text()
    r = fails(1, "--san", "cert", "sign", "--csr", tmp_path / "s.csr", "--ca", ca / "ca",
              "--profile", "server", "--out", tmp_path / "s.crt")
    assert "needs a SAN" in r.stderr
    assert not (tmp_path / "s.crt").exists() and (ca / "ca.index").read_text() == index
    # With --san it is made; a CN that is a host name is its own SAN, as before.
    ok("cert", "sign", "--csr", tmp_path / "s.csr", "--ca", ca / "ca", "--profile", "server",
       "--san", "my-server.test", "--out", tmp_path / "s.crt")
    r = ok("cert", "issue", "--ca", ca / "ca", "--profile", "server", "--cn", "api.test", "--out",
           tmp_path / "api")
    assert "SANs DNS:api.test" in r.stdout
    # A client certificate needs no SAN.
    ok("cert", "issue", "--ca", ca / "ca", "--profile", "client", "--cn", "My Client", "--out",
       tmp_path / "cl")


def test_verify_host_checks_only_the_sans(ca, tmp_path):
    # A certificate without SANs whose CN is the name asked for: browsers refuse
    # it (they never read the CN), so cert verify --host does too, and says
    # that only the CN matches.
    for cn in ["My Server", "legacy.test"]:
        out = tmp_path / cn.replace(" ", "_")
        ok("cert", "issue", "--ca", ca / "ca", "--profile", "client", "--cn", cn, "--out", out)
        assert "Subject Alternative Name" not in openssl("x509", "-in", f"{out}.crt", "-noout",
                                                         "-text").stdout
        r = fails(1, f"host name '{cn}' is not in the SANs of certificate 'CN={cn}' (it has none)",
                  "cert", "verify", f"{out}.crt", "--ca", ca / "ca", "--host", cn)
        assert "only its CN matches" in r.stderr and "curl" in r.stderr, r.stderr
        assert r.stderr.count("\n") == 1, r.stderr
    # An address as the CN: compared as text, as curl does.
    ok("cert", "issue", "--ca", ca / "ca", "--profile", "client", "--cn", "192.0.2.7", "--out",
       tmp_path / "ipcn")
    r = fails(1, "host name '192.0.2.7' is not in the SANs", "cert", "verify", tmp_path / "ipcn.crt",
              "--ca", ca / "ca", "--host", "192.0.2.7")
    assert "only its CN matches" in r.stderr, r.stderr
    # A name in neither says nothing about the CN.
    r = fails(1, "is not in the SANs", "cert", "verify", tmp_path / "legacy.test.crt", "--ca",
              ca / "ca", "--host", "other.test")
    assert "CN" not in r.stderr.split("(it has none)")[1], r.stderr
    # With a SAN the CN plays no part either way.
    ok("cert", "issue", "--ca", ca / "ca", "--profile", "server", "--cn", "cn.test", "--san",
       "san.test", "--out", tmp_path / "both")
    ok("cert", "verify", tmp_path / "both.crt", "--ca", ca / "ca", "--host", "san.test")
    r = fails(1, "is not in the SANs", "cert", "verify", tmp_path / "both.crt", "--ca", ca / "ca",
              "--host", "cn.test")
    assert "only its CN matches" in r.stderr, r.stderr


def test_p12_chain_must_link_to_the_certificate(tmp_path):
    ok("ca", "create", "--out", tmp_path / "root", "--cn", "P12 Root")
    ok("ca", "create", "--out", tmp_path / "inter", "--cn", "P12 Issuing", "--parent",
       tmp_path / "root")
    ok("ca", "create", "--out", tmp_path / "other", "--cn", "Unrelated CA")
    ok("cert", "issue", "--ca", tmp_path / "inter", "--profile", "client", "--cn", "dave", "--out",
       tmp_path / "dave")
    pw = tmp_path / "pw"
    pw.write_text("export-pass\n")
    p12 = ["cert", "p12", "--cert", tmp_path / "dave.crt", "--key", tmp_path / "dave.key",
           "--password-file", pw, "--force"]
    # The chain file mtls wrote, and the same with the root after it: they link.
    r = ok(*p12, "--chain", tmp_path / "dave.chain.crt", "--out", tmp_path / "a.p12")
    assert "1 intermediate" in r.stdout
    full = tmp_path / "full.pem"
    full.write_text((tmp_path / "inter.crt").read_text() + (tmp_path / "root.crt").read_text())
    r = ok(*p12, "--chain", full, "--out", tmp_path / "b.p12")
    assert "1 intermediate and the root" in r.stdout, r.stdout
    # A CA that did not issue the certificate is no chain of it.
    r = fails(1, "did not issue", *p12, "--chain", tmp_path / "other.crt", "--out", tmp_path / "c.p12")
    assert "'CN=Unrelated CA'" in r.stderr and "'CN=dave'" in r.stderr, r.stderr
    assert "its issuer is 'CN=P12 Issuing'" in r.stderr, r.stderr
    assert not (tmp_path / "c.p12").exists()
    # The right certificates in the wrong order do not link either.
    wrong = tmp_path / "wrong.pem"
    wrong.write_text((tmp_path / "root.crt").read_text() + (tmp_path / "inter.crt").read_text())
    r = fails(1, "did not issue", *p12, "--chain", wrong, "--out", tmp_path / "d.p12")
    assert "certificate 1 of" in r.stderr, r.stderr
    # Same name, another key: a namesake CA does not link.
    ok("ca", "create", "--out", tmp_path / "fake", "--cn", "P12 Issuing")
    r = fails(1, "did not issue", *p12, "--chain", tmp_path / "fake.crt", "--out", tmp_path / "e.p12")
    assert "same name" in r.stderr, r.stderr


def test_day_counts_round_to_the_nearest_day_and_json_keeps_seconds(ca, tmp_path):
    r = ok("cert", "issue", "--ca", ca / "ca", "--profile", "client", "--cn", "fresh", "--out",
           tmp_path / "fresh")
    assert "(expires in 365 days)" in r.stdout, r.stdout
    assert "expires in 365 days" in ok("cert", "show", tmp_path / "fresh.crt").stdout
    j = json.loads(ok("cert", "show", tmp_path / "fresh.crt", "--json").stdout)
    assert j["expires_in_days"] == 365
    assert 365 * 86400 - 120 < j["expires_in_seconds"] <= 365 * 86400, j
    listed = json.loads(ok("ca", "list", "--ca", ca / "ca", "--json").stdout)
    row = [c for c in listed["certificates"] if c["subject"] == "CN=fresh"][0]
    assert row["expires_in_days"] == 365 and row["expires_in_seconds"] > 365 * 86400 - 120
    ok("crl", "create", "--ca", ca / "ca", "--out", tmp_path / "ca.crl", "--days", "7")
    c = json.loads(ok("crl", "show", tmp_path / "ca.crl", "--json").stdout)
    assert c["expires_in_days"] == 7 and 7 * 86400 - 120 < c["expires_in_seconds"] <= 7 * 86400
    assert "expires in 7 days" in ok("crl", "show", tmp_path / "ca.crl").stdout


def age_in_index(index, cn, when="250101000000Z"):
    """Makes the index say the certificate of CN expired on `when` (as an
    old certificate's line would)."""
    lines = index.read_text().splitlines(keepends=True)
    for i, line in enumerate(lines):
        if line.rstrip("\n").endswith(f"/CN={cn}"):
            f = line.split("\t")
            f[1] = when
            lines[i] = "\t".join(f)
            break
    else:
        raise AssertionError(f"no index line for {cn}")
    index.write_text("".join(lines))


def test_ca_list_expiring_shows_expired_leaves_and_the_ca(tmp_path):
    ca = tmp_path / "ca"
    ok("ca", "create", "--out", ca, "--cn", "Window CA")
    issue = ["cert", "issue", "--ca", ca, "--profile", "client", "--force"]
    ok(*issue, "--cn", "web", "--out", tmp_path / "web")
    ok(*issue, "--cn", "soon", "--days", "10", "--out", tmp_path / "soon")
    ok(*issue, "--cn", "old", "--out", tmp_path / "old")
    age_in_index(tmp_path / "ca.index", "old")
    # Expired and renewed since (same subject, profile and SANs): nothing to do.
    ok(*issue, "--cn", "renewed", "--out", tmp_path / "renewed")
    age_in_index(tmp_path / "ca.index", "renewed")
    ok(*issue, "--cn", "renewed", "--out", tmp_path / "renewed")
    r = run_mtls("ca", "list", "--ca", ca, "--expiring", "30d")
    assert r.returncode == 3, r.stdout + r.stderr
    rows = {m.group(2): m.group(1) for m in re.finditer(r"^\s+\S+\s+(\w+)\s.*CN=(\w+)", r.stdout, re.M)}
    assert rows == {"soon": "expiring", "old": "expired"}, r.stdout
    assert re.search(r"expired \d+ days ago\)\s+CN=old", r.stdout), r.stdout
    assert "1 expiring within 30d, 1 expired" in r.stdout, r.stdout
    assert "1 renewed" in r.stdout, r.stdout
    j = json.loads(run_mtls("ca", "list", "--ca", ca, "--json", "--expiring", "30d").stdout)
    assert sorted((c["subject"], c["status"]) for c in j["certificates"]) == [
        ("CN=old", "expired"), ("CN=soon", "valid")]
    assert j["ca_certificate"]["status"] == "valid" and j["ca_certificate"]["expires_in_days"] == 3650
    # Without the window everything is listed, as before.
    assert "CN=web" in ok("ca", "list", "--ca", ca).stdout


def test_ca_list_expiring_includes_the_ca_itself(tmp_path):
    ok("ca", "create", "--out", tmp_path / "short", "--cn", "Short CA", "--days", "20")
    r = run_mtls("ca", "list", "--ca", tmp_path / "short", "--expiring", "30d")
    assert r.returncode == 3, r.stdout + r.stderr
    assert "the CA certificate 'CN=Short CA' itself expires in 20 days" in r.stdout, r.stdout
    j = json.loads(run_mtls("ca", "list", "--ca", tmp_path / "short", "--json", "--expiring",
                            "30d").stdout)
    assert j["ca_certificate"]["subject"] == "CN=Short CA"
    assert j["ca_certificate"]["expires_in_days"] == 20 and j["certificates"] == []
    r = run_mtls("ca", "list", "--ca", tmp_path / "short", "--expiring", "10d")
    assert r.returncode == 0 and "nothing expires within 10d" in r.stdout, r.stdout
