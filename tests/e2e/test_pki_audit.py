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
