"""Issue 9, "one identity": one serial format everywhere (the access log,
/whoami, cert show, the system log), revocation checked for the whole chain
(a revoked intermediate is refused by cert verify and by serve with the alert
certificate_revoked), CRLs that must match the client CAs, and the logged
alert always the one sent."""
import json
import os
import re
import signal
import subprocess

import pytest

from conftest import run_mtls
from pki_cli import fails, ok, openssl
from serve_helpers import *  # noqa: F401,F403 (fixtures)
from serve_helpers import SLOW, Server, finish


def start(d, *args):
    """mtls serve on 127.0.0.1 port 0; returns the Server with .port set to the printed port."""
    s = Server(d, "--listen", "127.0.0.1:0", *args, listen=False)
    _started.append(s)
    s.wait_ready()
    m = re.search(r"HTTPS listening on (?:\S*:)?(\d+)\.\.\.\.", read_text(s.out))
    assert m, read_text(s.out)
    s.port = int(m.group(1))
    return s


_started = []


@pytest.fixture(autouse=True)
def _stop_servers():
    yield
    servers = _started[:]
    _started.clear()
    finish(servers)


def mtls(*args, cwd):
    r = run_mtls(*args, cwd=cwd)
    assert r.returncode == 0, (args, r.stdout, r.stderr)
    return r


def test_a_serial_with_a_small_top_byte_reads_the_same_everywhere(tmp_path):
    d = tmp_path
    mtls("init", "--dir", d, cwd=d)
    serial = "08882C9F00112233445566778899AABB"
    openssl("req", "-new", "-nodes", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
            "-subj", "/CN=zero-lead", "-keyout", "zl.key", "-out", "zl.csr", cwd=d)
    with open(os.path.join(d, "zl.ext"), "w") as f:
        f.write("basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\n"
                "extendedKeyUsage=clientAuth\n")
    openssl("x509", "-req", "-in", "zl.csr", "-CA", "clientca.crt", "-CAkey", "clientca.key",
            "-set_serial", "0x" + serial, "-days", "30", "-extfile", "zl.ext", "-out", "zl.crt",
            cwd=d)
    assert openssl("x509", "-in", "zl.crt", "-noout", "-serial", cwd=d).stdout.strip() == \
        "serial=" + serial
    show = json.loads(mtls("cert", "show", "zl.crt", "--json", cwd=d).stdout)
    assert show["serial"] == serial
    assert re.search(rf"^\s*serial\s+{serial}$", mtls("cert", "show", "zl.crt", cwd=d).stdout,
                     re.M)
    s = start(d, "--log-format", "json")
    r = curl("--cacert", "serverca.crt", "--cert", "zl.crt", "--key", "zl.key",
             f"https://127.0.0.1:{s.port}/whoami", cwd=d)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["client"]["serial"] == serial
    line = wait_for_text(s.access_log, "/whoami").strip().splitlines()[-1]
    assert json.loads(line)["client_serial"] == serial


@pytest.fixture
def chain_pki(tmp_path):
    """`mtls init`, an intermediate under the client CA, client 'carol' under the intermediate,
    and a CRL of each CA; cas.pem holds both CAs (the server's client CA file)."""
    d = tmp_path
    mtls("init", "--dir", d, cwd=d)
    mtls("ca", "create", "--out", "inter", "--cn", "client-intermediate", "--parent", "clientca",
         cwd=d)
    mtls("cert", "issue", "--ca", "inter", "--profile", "client", "--cn", "carol", "--out",
         "carol", cwd=d)
    mtls("crl", "create", "--ca", "clientca", "--out", "root.crl", cwd=d)
    mtls("crl", "create", "--ca", "inter", "--out", "inter.crl", cwd=d)
    with open(os.path.join(d, "cas.pem"), "w") as f:
        f.write(read_text(os.path.join(d, "clientca.crt")) + read_text(os.path.join(d, "inter.crt")))
    return d


def revoke_intermediate(d):
    mtls("ca", "revoke", "--ca", "clientca", "inter.crt", "--reason", "keyCompromise", cwd=d)
    mtls("crl", "create", "--ca", "clientca", "--out", "root.crl", "--force", cwd=d)


def s_client(d, port, *args):
    """openssl s_client with carol's chain, sending one request; stdout + stderr."""
    r = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-CAfile",
                        "serverca.crt", "-cert", "carol.crt", "-cert_chain", "inter.crt", "-key",
                        "carol.key", "-quiet", *args],
                       input=b"GET /test HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                       cwd=d, capture_output=True, timeout=30 * SLOW)
    return (r.stdout + r.stderr).decode(errors="replace")


def test_cert_verify_refuses_a_revoked_intermediate(chain_pki):
    d = chain_pki
    verify = ["cert", "verify", "carol.chain.crt", "--ca", "clientca.crt", "--purpose", "client",
              "--crl", "root.crl", "--crl", "inter.crl"]
    mtls(*verify, cwd=d)
    revoke_intermediate(d)
    serial = openssl("x509", "-in", "inter.crt", "-noout", "-serial", cwd=d).stdout.strip()[7:]
    r = run_mtls(*verify, cwd=d)
    assert r.returncode == 1, r.stdout + r.stderr
    assert (f"CA certificate 'CN=client-intermediate' (serial {serial}) was revoked by its CA "
            "'CN=client-example-ca' on ") in r.stderr, r.stderr
    assert "(keyCompromise)" in r.stderr
    # openssl agrees.
    v = openssl("verify", "-crl_check_all", "-CAfile", "clientca.crt", "-untrusted", "inter.crt",
                "-CRLfile", "root.crl", "-CRLfile", "inter.crl", "carol.crt", cwd=d)
    assert v.returncode != 0 and "certificate revoked" in v.stdout + v.stderr
    # Without the intermediate's CRL its leaf cannot be checked: said, not let through.
    r = run_mtls("cert", "verify", "carol.chain.crt", "--ca", "clientca.crt", "--crl", "root.crl",
                 cwd=d)
    assert r.returncode == 1 and "no CRL of 'CN=client-intermediate' is loaded" in r.stderr, \
        r.stderr


def test_serve_refuses_a_revoked_intermediate_with_certificate_revoked(chain_pki):
    d = chain_pki
    args = ["--client-ca", "cas.pem", "--crl", "root.crl", "--crl", "inter.crl"]
    s = start(d, *args)
    r = curl("--cacert", "serverca.crt", "--cert", "carol.chain.crt", "--key", "carol.key",
             f"https://127.0.0.1:{s.port}/test", cwd=d)
    assert r.returncode == 0 and "Hello mtls" in r.stdout, r.stderr
    revoke_intermediate(d)
    s.proc.send_signal(signal.SIGHUP)
    s.wait_reloaded()
    wait_until(lambda: "certificate revoked" in s_client(d, s.port), timeout=10 * SLOW,
               what="s_client to see the alert certificate_revoked")
    r = curl("--cacert", "serverca.crt", "--cert", "carol.chain.crt", "--key", "carol.key",
             f"https://127.0.0.1:{s.port}/test", cwd=d)
    assert r.returncode != 0 and "alert certificate revoked" in r.stderr, r
    log = wait_for_text(s.system_log, "(alert certificate_revoked)")
    line = [l for l in log.splitlines() if "(alert certificate_revoked)" in l][-1]
    assert ("handshake rejected: CA certificate 'CN=client-intermediate' in the client's chain "
            "(serial ") in line and "was revoked by its CA 'CN=client-example-ca'" in line, line
    # A fresh start refuses it too (not only a reload).
    s.stop()
    s = start(d, *args)
    assert "certificate revoked" in s_client(d, s.port)


def test_serve_refuses_to_start_when_a_client_ca_has_no_crl(chain_pki):
    d = chain_pki
    r = run_mtls("serve", "--listen", "127.0.0.1:0", "--client-ca", "cas.pem", "--crl",
                 "root.crl", cwd=d)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "client CA CN=client-intermediate in 'cas.pem' has no CRL" in r.stderr, r.stderr


def test_the_logged_alert_is_the_one_sent_when_a_crl_is_missing(chain_pki):
    """The server trusts the root only (with its CRL); carol's intermediate has no CRL there:
    OpenSSL sends unknown_ca, and the log must say so (it said certificate_unknown)."""
    d = chain_pki
    s = start(d, "--crl", "root.crl", "--log-format", "json")
    assert "unknown ca" in s_client(d, s.port)
    wait_for_text(s.system_log, "handshake_rejected")
    events = [json.loads(l) for l in read_text(s.system_log).splitlines()]
    rejected = [e for e in events if e["event"] == "handshake_rejected"]
    assert rejected and rejected[0]["alert"] == "unknown_ca", rejected
    assert rejected[0]["depth"] == "0" and rejected[0]["subject"] == "CN=carol", rejected
    assert "no CRL of 'CN=client-intermediate' is loaded" in rejected[0]["message"], rejected


def test_a_crl_of_an_unrelated_ca_is_refused_at_start_and_reload(chain_pki):
    d = chain_pki
    mtls("ca", "create", "--out", "other", "--cn", "other-ca", cwd=d)
    mtls("crl", "create", "--ca", "other", "--out", "other.crl", cwd=d)
    r = run_mtls("serve", "--listen", "127.0.0.1:0", "--crl", "other.crl", cwd=d)
    assert r.returncode == 2, r.stdout + r.stderr
    assert ("CRL 'other.crl' is from CN=other-ca, which is none of the client CAs in "
            "'clientca.crt'") in r.stderr, r.stderr
    # A CA of the same name but another key: its CRL's signature is refused.
    mtls("ca", "create", "--out", "namesake", "--cn", "client-example-ca", cwd=d)
    mtls("crl", "create", "--ca", "namesake", "--out", "namesake.crl", cwd=d)
    r = run_mtls("serve", "--listen", "127.0.0.1:0", "--crl", "namesake.crl", cwd=d)
    assert r.returncode == 2 and "has a bad signature" in r.stderr, r.stdout + r.stderr
    # At reload: refused, and the old set stays in force.
    s = start(d, "--crl", "root.crl")
    with open(os.path.join(d, "root.crl"), "w") as f:
        f.write(read_text(os.path.join(d, "other.crl")))
    s.proc.send_signal(signal.SIGHUP)
    log = wait_for_text(s.system_log, "reload refused")
    assert "is from CN=other-ca, which is none of the client CAs" in log, log
    assert b"Hello mtls" in tls_request(s.port, d)
