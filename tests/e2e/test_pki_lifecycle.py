"""Certificate lifecycle (issue 5, PKI half): the inventory (`ca list`),
revocation and CRLs, intermediate CAs with chain files, and concurrent
issuing."""
import concurrent.futures
import json
import re
import subprocess

import pytest

from conftest import free_port, run_mtls, wait_for_port
from pki_cli import fails, ok, openssl


def serial_of(path):
    return openssl("x509", "-in", path, "-noout", "-serial").stdout.strip().split("=")[1]


@pytest.fixture
def ca(tmp_path):
    ok("ca", "create", "--out", tmp_path / "ca", "--cn", "Life CA")
    return tmp_path


def test_ca_list_shows_inventory_and_expiring(ca):
    ok("cert", "issue", "--ca", ca / "ca", "--profile", "server", "--cn", "web.test", "--san",
       "web.test", "--san", "10.0.0.1", "--out", ca / "web")
    ok("cert", "issue", "--ca", ca / "ca", "--profile", "client", "--cn", "soon", "--days", "10",
       "--out", ca / "soon")
    text = ok("ca", "list", "--ca", ca / "ca").stdout
    assert "2 certificates, 0 revoked" in text
    assert re.search(r"valid\s+server\s+\S+ \(expires in 365 days\)\s+CN=web.test\s+DNS:web.test, IP:10.0.0.1", text), text
    j = json.loads(ok("ca", "list", "--ca", ca / "ca", "--json").stdout)
    assert j["ca"] == "CN=Life CA"
    web = [c for c in j["certificates"] if c["subject"] == "CN=web.test"][0]
    assert web["serial"] == serial_of(ca / "web.crt")
    assert web["status"] == "valid" and web["profile"] == "server"
    assert web["sans"] == [{"type": "DNS", "value": "web.test"}, {"type": "IP", "value": "10.0.0.1"}]
    assert web["revoked_at"] is None and web["expires_in_days"] == 365
    # For cron: exit 3 when something expires within the window, 0 otherwise.
    r = run_mtls("ca", "list", "--ca", ca / "ca", "--expiring", "30d")
    assert r.returncode == 3 and "CN=soon" in r.stdout and "CN=web.test" not in r.stdout
    r = run_mtls("ca", "list", "--ca", ca / "ca", "--expiring", "5d")
    assert r.returncode == 0 and "nothing expires within 5d" in r.stdout
    fails(2, "--expiring takes a window", "ca", "list", "--ca", ca / "ca", "--expiring", "soon")


def test_revoke_crl_and_openssl_reads_it(ca):
    ok("cert", "issue", "--ca", ca / "ca", "--profile", "client", "--cn", "bad", "--out", ca / "bad")
    ok("cert", "issue", "--ca", ca / "ca", "--profile", "client", "--cn", "good", "--out", ca / "good")
    ok("cert", "issue", "--ca", ca / "ca", "--profile", "client", "--cn", "old", "--out", ca / "old")
    r = ok("ca", "revoke", "--ca", ca / "ca", ca / "bad.crt", "--reason", "keyCompromise")
    assert "revoked serial " + serial_of(ca / "bad.crt") in r.stdout
    # By serial, as `openssl x509 -serial` prints it, lower case with the prefix.
    ok("ca", "revoke", "--ca", ca / "ca", "--serial", "serial=" + serial_of(ca / "old.crt").lower())
    fails(1, "was already revoked on", "ca", "revoke", "--ca", ca / "ca", ca / "bad.crt")
    fails(1, "is not in", "ca", "revoke", "--ca", ca / "ca", "--serial", "0123ABCD")
    fails(2, "unknown reason 'oops'", "ca", "revoke", "--ca", ca / "ca", ca / "good.crt", "--reason", "oops")
    fails(2, "give either a certificate file or --serial", "ca", "revoke", "--ca", ca / "ca")
    index = (ca / "ca.index").read_text()
    assert re.search(rf"^R\t\d{{12}}Z\t\d{{12}}Z,keyCompromise\t{serial_of(ca / 'bad.crt')}\t", index, re.M)
    assert re.search(rf"^R\t\d{{12}}Z\t\d{{12}}Z\t{serial_of(ca / 'old.crt')}\t", index, re.M)

    ok("crl", "create", "--ca", ca / "ca", "--out", ca / "ca.crl")
    fails(1, "already exists: pass --force", "crl", "create", "--ca", ca / "ca", "--out", ca / "ca.crl")
    text = openssl("crl", "-in", ca / "ca.crl", "-noout", "-text", "-nameopt", "oneline").stdout
    assert "Issuer: CN = Life CA" in text and "X509v3 CRL Number: \n                1" in text
    assert serial_of(ca / "bad.crt") in text and "Key Compromise" in text
    assert serial_of(ca / "good.crt") not in text
    # openssl refuses the revoked certificate with this CRL, accepts the other.
    bad = openssl("verify", "-crl_check", "-CAfile", ca / "ca.crt", "-CRLfile", ca / "ca.crl", ca / "bad.crt")
    assert bad.returncode != 0 and "certificate revoked" in bad.stdout + bad.stderr
    good = openssl("verify", "-crl_check", "-CAfile", ca / "ca.crt", "-CRLfile", ca / "ca.crl", ca / "good.crt")
    assert good.returncode == 0, good.stdout + good.stderr
    # mtls cert verify --crl: the same verdicts, with the serial, date and reason.
    r = run_mtls("cert", "verify", ca / "bad.crt", "--ca", ca / "ca", "--crl", ca / "ca.crl")
    assert r.returncode == 1, r.stdout + r.stderr
    assert re.search(rf"^invalid: certificate 'CN=bad' \(serial {serial_of(ca / 'bad.crt')}\) was "
                     rf"revoked by its CA 'CN=Life CA' on \d{{4}}-\d\d-\d\d [\d:]+ UTC \(keyCompromise\)$",
                     r.stderr), r.stderr
    r = run_mtls("cert", "verify", ca / "old.crt", "--ca", ca / "ca", "--crl", ca / "ca.crl")
    assert r.returncode == 1 and "(no reason given)" in r.stderr, r.stderr
    r = ok("cert", "verify", ca / "good.crt", "--ca", ca / "ca", "--crl", ca / "ca.crl")
    assert "'CN=good' issued by 'CN=Life CA', not revoked" in r.stdout
    fails(2, "holds a certificate, not a certificate revocation list", "cert", "verify",
          ca / "good.crt", "--ca", ca / "ca", "--crl", ca / "good.crt")
    fails(2, f"cannot read '{ca / 'no.crl'}'", "cert", "verify", ca / "good.crt", "--ca", ca / "ca",
          "--crl", ca / "no.crl")
    # The CRL number only grows.
    ok("crl", "create", "--ca", ca / "ca", "--out", ca / "ca.crl", "--force", "--days", "7")
    j = json.loads(ok("crl", "show", ca / "ca.crl", "--json").stdout)
    assert j["crl_number"] == 2 and j["issuer"] == "CN=Life CA"
    assert j["expires_in_days"] == 7 and j["expired"] is False
    assert {r["serial"] for r in j["revoked"]} == {serial_of(ca / "bad.crt"), serial_of(ca / "old.crt")}
    assert {r["reason"] for r in j["revoked"]} == {"keyCompromise", None}
    shown = ok("crl", "show", ca / "ca.crl").stdout
    assert "expires in 6 days" in shown or "expires in 7 days" in shown
    listed = json.loads(ok("ca", "list", "--ca", ca / "ca", "--json").stdout)["certificates"]
    bad_row = [c for c in listed if c["subject"] == "CN=bad"][0]
    assert bad_row["status"] == "revoked" and bad_row["reason"] == "keyCompromise"
    table = ok("ca", "list", "--ca", ca / "ca").stdout.splitlines()[1:]
    assert "revoked 20" in "\n".join(table) and "keyCompromise)" in "\n".join(table)
    # Every column lines up, whatever the length of the expiry words.
    assert len({line.index("SUBJECT") if "SUBJECT" in line else line.index("CN=")
                for line in table}) == 1, "\n".join(table)


def test_revoke_refuses_a_certificate_of_another_ca(ca, tmp_path):
    ok("ca", "create", "--out", tmp_path / "other", "--cn", "Other CA")
    ok("cert", "issue", "--ca", tmp_path / "other", "--profile", "client", "--cn", "x", "--out", tmp_path / "x")
    before = (ca / "ca.index").read_text()
    fails(1, "was not issued by CA", "ca", "revoke", "--ca", ca / "ca", tmp_path / "x.crt")
    assert (ca / "ca.index").read_text() == before


def test_crl_show_reads_an_openssl_crl(ca):
    cnf = ca / "ca.cnf"
    cnf.write_text(f"[ca]\ndefault_ca=d\n[d]\ndatabase={ca}/ca.index\ncertificate={ca}/ca.crt\n"
                   f"private_key={ca}/ca.key\ndefault_md=sha256\ndefault_crl_days=3\n")
    r = openssl("ca", "-config", cnf, "-gencrl", "-out", ca / "o.crl")
    assert r.returncode == 0, r.stderr
    j = json.loads(ok("crl", "show", ca / "o.crl", "--json").stdout)
    assert j["issuer"] == "CN=Life CA" and j["revoked"] == [] and j["crl_number"] is None
    # No revoked entry at all: zero, not OpenSSL's -1 for a missing list.
    assert re.search(r"^  revoked      0$", ok("crl", "show", ca / "o.crl").stdout, re.M)
    r = ok("crl", "create", "--ca", ca / "ca", "--out", ca / "empty.crl")
    assert "wrote CRL number 1 to " in r.stdout and ": 0 revoked, next update" in r.stdout
    assert re.search(r"^  revoked      0$", ok("crl", "show", ca / "empty.crl").stdout, re.M)
    fails(1, "holds a certificate, not a certificate revocation list", "crl", "show", ca / "ca.crt")


@pytest.fixture
def chain(tmp_path):
    ok("ca", "create", "--out", tmp_path / "root", "--cn", "Root CA")
    r = ok("ca", "create", "--out", tmp_path / "inter", "--cn", "Issuing CA", "--parent", tmp_path / "root")
    assert "signed by 'CN=Root CA'" in r.stdout
    ok("cert", "issue", "--ca", tmp_path / "inter", "--profile", "client", "--cn", "carol", "--out",
       tmp_path / "carol")
    ok("cert", "issue", "--ca", tmp_path / "inter", "--profile", "server", "--cn", "localhost", "--out",
       tmp_path / "srv")
    return tmp_path


def test_intermediate_ca_and_chain_files(chain):
    t = openssl("x509", "-in", chain / "inter.crt", "-noout", "-text", "-nameopt", "oneline").stdout
    assert "CA:TRUE, pathlen:0" in t and "Issuer: CN = Root CA" in t
    # The chain file: the leaf, then the intermediate, not the root.
    pem = (chain / "carol.chain.crt").read_text()
    assert pem.count("BEGIN CERTIFICATE") == 2
    assert pem.startswith((chain / "carol.crt").read_text())
    assert (chain / "inter.crt").read_text() in pem and (chain / "root.crt").read_text() not in pem
    v = openssl("verify", "-CAfile", chain / "root.crt", "-untrusted", chain / "inter.chain.crt",
                "-purpose", "sslclient", chain / "carol.crt")
    assert v.returncode == 0, v.stdout + v.stderr
    # cert verify builds through the intermediates in FILE.
    ok("cert", "verify", chain / "carol.chain.crt", "--ca", chain / "root.crt", "--purpose", "client")
    fails(1, "issued by 'CN=Issuing CA', which is not a trusted CA", "cert", "verify", chain / "carol.crt",
          "--ca", chain / "root.crt")
    # The root's inventory records the intermediate.
    j = json.loads(ok("ca", "list", "--ca", chain / "root", "--json").stdout)
    assert [(c["subject"], c["profile"]) for c in j["certificates"]] == [("CN=Issuing CA", "ca")]
    # pathlen 0 is enforced when making CAs too.
    fails(1, "issues leaf certificates only", "ca", "create", "--out", chain / "sub", "--cn", "Sub",
          "--parent", chain / "inter")
    assert not (chain / "sub.crt").exists()


def test_curl_with_an_intermediate_issued_client_certificate(chain):
    """The server trusts only the root; curl sends leaf + intermediate."""
    port = free_port()
    p = subprocess.Popen(["openssl", "s_server", "-accept", str(port), "-cert", str(chain / "srv.crt"),
                          "-cert_chain", str(chain / "inter.chain.crt"), "-key", str(chain / "srv.key"), "-CAfile", str(chain / "root.crt"),
                          "-Verify", "3", "-verify_return_error", "-www", "-quiet"],
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port, proc=p)
        base = ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "--cacert", str(chain / "root.crt"),
                "--key", str(chain / "carol.key")]
        r = subprocess.run(base + ["--cert", str(chain / "carol.chain.crt"), f"https://localhost:{port}/"],
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr
        assert r.stdout == "200"
        # Without the intermediate the server cannot build the chain.
        r = subprocess.run(base + ["--cert", str(chain / "carol.crt"), f"https://localhost:{port}/"],
                           capture_output=True, text=True, timeout=30)
        assert r.returncode != 0
        # mtls probe sends the chain file's intermediate as curl does.
        probe = ["probe", f"https://localhost:{port}/", "--cacert", chain / "root.crt", "--key",
                 chain / "carol.key"]
        r = run_mtls(*probe, "--cert", chain / "carol.chain.crt", timeout=30)
        assert r.returncode == 0, r.stdout + r.stderr
        r = run_mtls(*probe, "--cert", chain / "carol.crt", timeout=30)
        assert r.returncode == 4, r.stdout + r.stderr
    finally:
        p.kill()
        p.wait()


def test_twenty_parallel_issues_never_share_a_serial(ca):
    def issue(i):
        return run_mtls("cert", "issue", "--ca", ca / "ca", "--profile", "client", "--cn", f"par{i}",
                        "--out", ca / f"par{i}")
    with concurrent.futures.ThreadPoolExecutor(max_workers=20) as pool:
        results = list(pool.map(issue, range(20)))
    for r in results:
        assert r.returncode == 0, r.stderr
    serials = {serial_of(ca / f"par{i}.crt") for i in range(20)}
    assert len(serials) == 20
    lines = [l for l in (ca / "ca.index").read_text().splitlines() if l]
    assert len(lines) == 20
    assert {l.split("\t")[3] for l in lines} == serials
    assert {l.split("\t")[5] for l in lines} == {f"/CN=par{i}" for i in range(20)}
    assert len(list((ca / "ca.certs").iterdir())) == 20
    assert not [p for p in ca.iterdir() if ".tmp-" in p.name]


def test_pkcs12_modern_and_legacy(chain):
    pw = chain / "pw"
    pw.write_text("correct horse\n")
    r = ok("cert", "p12", "--cert", chain / "carol.crt", "--key", chain / "carol.key", "--chain",
           chain / "carol.chain.crt", "--out", chain / "carol.p12", "--password-file", pw)
    assert "1 intermediate" in r.stdout
    assert oct((chain / "carol.p12").stat().st_mode & 0o777) == "0o600"
    info = openssl("pkcs12", "-info", "-in", chain / "carol.p12", "-passin", f"file:{pw}", "-nokeys")
    assert info.returncode == 0, info.stderr
    assert "AES-256-CBC" in info.stderr and "MAC: sha256" in info.stderr
    assert info.stdout.count("BEGIN CERTIFICATE") == 2 and "friendlyName: carol" in info.stdout
    ok("cert", "p12", "--cert", chain / "carol.crt", "--key", chain / "carol.key", "--out",
       chain / "legacy.p12", "--password-file", pw, "--legacy")
    info = openssl("pkcs12", "-legacy", "-info", "-in", chain / "legacy.p12", "-passin", f"file:{pw}",
                   "-nokeys")
    assert info.returncode == 0, info.stderr
    assert "pbeWithSHA1And3-KeyTripleDES-CBC" in info.stderr and "MAC: sha1" in info.stderr
    # A wrong password is refused by openssl: the MAC holds.
    bad = openssl("pkcs12", "-info", "-in", chain / "carol.p12", "-passin", "pass:nope", "-nokeys")
    assert bad.returncode != 0
    # Never without a password; never with a key of another certificate.
    fails(2, "never written without a password", "cert", "p12", "--cert", chain / "carol.crt", "--key",
          chain / "carol.key", "--out", chain / "x.p12")
    fails(1, "does not match", "cert", "p12", "--cert", chain / "carol.crt", "--key", chain / "srv.key",
          "--out", chain / "x.p12", "--password-file", pw)
    (chain / "empty").write_text("\n")
    fails(1, "is empty", "cert", "p12", "--cert", chain / "carol.crt", "--key", chain / "carol.key",
          "--out", chain / "x.p12", "--password-file", chain / "empty")
    assert not (chain / "x.p12").exists()


def test_encrypted_keys_everywhere(tmp_path):
    pw = tmp_path / "pw"
    pw.write_text("s3cret\n")
    bad = tmp_path / "bad"
    bad.write_text("wrong\n")
    ok("ca", "create", "--out", tmp_path / "ca", "--cn", "Enc CA", "--encrypt", "--password-file", pw)
    assert "ENCRYPTED PRIVATE KEY" in (tmp_path / "ca.key").read_text()
    assert openssl("pkey", "-in", tmp_path / "ca.key", "-passin", f"file:{pw}", "-noout").returncode == 0
    issue = ["cert", "issue", "--ca", tmp_path / "ca", "--profile", "client", "--cn", "a", "--out", tmp_path / "a"]
    fails(1, "'%s' is encrypted: pass its password with --password-file" % (tmp_path / "ca.key"), *issue)
    fails(1, "cannot decrypt '%s': wrong password" % (tmp_path / "ca.key"), *issue, "--password-file", bad)
    assert not (tmp_path / "a.key").exists()
    ok(*issue, "--password-file", pw, "--encrypt")
    assert "ENCRYPTED PRIVATE KEY" in (tmp_path / "a.key").read_text()
    # The environment variable works as well.
    r = run_mtls("csr", "create", "--key", tmp_path / "a.key", "--cn", "a", "--out", tmp_path / "a.csr",
                 env={"MTLS_KEY_PASSWORD": "s3cret"})
    assert r.returncode == 0, r.stderr
    ok("ca", "list", "--ca", tmp_path / "ca")  # reading the inventory needs no key
    ok("ca", "revoke", "--ca", tmp_path / "ca", tmp_path / "a.crt", "--password-file", pw)
    ok("crl", "create", "--ca", tmp_path / "ca", "--out", tmp_path / "ca.crl", "--password-file", pw)
    ok("key", "create", "--out", tmp_path / "k.key", "--encrypt", "--password-file", pw)
    fails(2, "--encrypt needs a password", "key", "create", "--out", tmp_path / "k2.key", "--encrypt")
    ok("init", "--dir", tmp_path / "i", "--encrypt", "--password-file", pw)
    for f in ["clientca.key", "client.key", "serverca.key", "server.key"]:
        assert "ENCRYPTED PRIVATE KEY" in (tmp_path / "i" / f).read_text(), f


def test_ctrl_c_while_issuing_waits_for_the_record_and_its_files(ca):
    """A Ctrl-C that lands while `cert issue` writes (here: while it waits for the CA's lock,
    which the test holds) takes effect once the index record and the files it records are
    all written; never a record without its files, or files without their record."""
    import fcntl
    import signal

    from conftest import MTLS, wait_until

    ok("cert", "issue", "--ca", ca / "ca", "--profile", "client", "--cn", "first", "--out",
       ca / "first")  # the lock file exists from now on
    with open(ca / "ca.lock", "r+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        p = subprocess.Popen([MTLS, "cert", "issue", "--ca", str(ca / "ca"), "--profile", "client",
                              "--cn", "held", "--out", str(ca / "held")],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             # A test run started in the background inherits SIGINT
                             # ignored; the command must see the default, as in a shell.
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))

        def waiting_for_the_lock():
            # /proc/locks lists a blocked flock(2) as "N: -> FLOCK ... PID ...".
            with open("/proc/locks") as f:
                return any("->" in line and f" {p.pid} " in line for line in f)

        wait_until(waiting_for_the_lock, what="cert issue to wait for the CA's lock")
        p.send_signal(signal.SIGINT)
        try:
            p.wait(timeout=0.5)  # a held Ctrl-C must not end it while it writes
        except subprocess.TimeoutExpired:
            pass
        assert p.returncode is None, "cert issue ended on Ctrl-C in the middle of writing"
        fcntl.flock(lock, fcntl.LOCK_UN)
    p.communicate(timeout=30)
    assert p.returncode == -signal.SIGINT, p.returncode
    assert (ca / "held.key").exists() and (ca / "held.crt").exists()
    assert serial_of(ca / "held.crt") in (ca / "ca.index").read_text()
