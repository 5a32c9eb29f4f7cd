"""--allow: authorization rules on the verified client certificate, decided
once per connection; a denied request gets 403 naming who and where, and a
system-log line; --allow-dry-run logs and lets it through."""
import subprocess

import pytest

from proxy_helpers import *  # noqa: F401,F403


def sha256_of(args, path):
    """openssl's SHA-256 (hex) of the certificate's DER or of its public key's DER."""
    if args == "cert":
        r = subprocess.run(["openssl", "x509", "-in", str(path), "-noout", "-fingerprint",
                            "-sha256"], capture_output=True, text=True, check=True)
        return r.stdout.strip().split("=")[1]  # "AB:CD:..." with colons
    pub = subprocess.run(["openssl", "x509", "-in", str(path), "-noout", "-pubkey"],
                         capture_output=True, check=True).stdout
    der = subprocess.run(["openssl", "pkey", "-pubin", "-outform", "DER"], input=pub,
                         capture_output=True, check=True).stdout
    import hashlib
    return hashlib.sha256(der).hexdigest()


def status_for(serve, tmp_path, pki, upstream, rules, who, path="/app/x", dry_run=False):
    args = []
    for r in rules:
        args += ["--allow", r]
    if dry_run:
        args.append("--allow-dry-run")
    s = proxy(serve, tmp_path, pki, upstream.url, *args)
    c = Conn(s.port, pki, cert=f"{who}.crt", key=f"{who}.key")
    st, _, body = c.request("GET", path)
    c.close()
    s.stop()
    return st, body, s


# (rule, allowed clients) for alice (O=Example, OU=eng, SANs), bob (O=Other, a deeper
# SPIFFE ID) and localclient (mtls init's "client").
RULES = [
    ("cn=alice", {"alice"}),
    ("o=Example", {"alice"}),
    ("ou=eng", {"alice"}),
    ("san-dns=ALICE.example.org", {"alice"}),
    ("san-uri=spiffe://example.org/ns/prod/sa/*", {"alice"}),
    ("san-uri=spiffe://example.org/ns/*/sa/web/extra", {"bob"}),
    ("san-email=alice@example.org", {"alice"}),
    ("issuer=CN=client-example-ca", {"alice", "bob", "client"}),
    ("issuer=CN=someone-else", set()),
]


@pytest.mark.parametrize("rule,allowed", RULES)
def test_each_rule_type_allows_and_denies(serve, tmp_path, proxy_pki, upstream, rule, allowed):
    for who in ("alice", "bob", "client"):
        d = tmp_path / who
        d.mkdir()
        st, body, _ = status_for(serve, d, proxy_pki, upstream, [rule], who)
        assert st == (200 if who in allowed else 403), (rule, who, body)


def test_key_and_certificate_pins(serve, tmp_path, proxy_pki, upstream):
    cert_pin = sha256_of("cert", proxy_pki / "alice.crt")
    spki_pin = sha256_of("spki", proxy_pki / "alice.crt")
    for i, rule in enumerate([f"cert-sha256={cert_pin}", f"spki-sha256={spki_pin}"]):
        for who, want in (("alice", 200), ("bob", 403)):
            d = tmp_path / f"{i}{who}"
            d.mkdir()
            assert status_for(serve, d, proxy_pki, upstream, [rule], who)[0] == want, (rule, who)


def test_denial_names_who_and_where_and_is_logged(serve, tmp_path, proxy_pki, upstream):
    st, body, s = status_for(serve, tmp_path, proxy_pki, upstream,
                             ["san-uri=spiffe://example.org/ns/admin/*", "cn=carol"], "bob",
                             path="/admin?x=1")
    assert st == 403
    reason = json.loads(body)["reason"]
    assert reason == ("CN=bob is not allowed on /admin; allowed: san-uri "
                      "spiffe://example.org/ns/admin/*, cn carol"), reason
    assert "[WARN] 127.0.0.1:" in read_text(s.system_log)
    assert f"- {reason}\n" in read_text(s.system_log)
    # The built-in routes fall under the rules too.
    d = tmp_path / "b"
    d.mkdir()
    assert status_for(serve, d, proxy_pki, upstream, ["cn=carol"], "alice", path="/test")[0] == 403


def test_dry_run_logs_and_lets_through(serve, tmp_path, proxy_pki, upstream):
    st, _, s = status_for(serve, tmp_path, proxy_pki, upstream, ["cn=carol"], "bob",
                          dry_run=True)
    assert st == 200
    assert "dry run, let through: CN=bob is not allowed on /app/x; allowed: cn carol" in \
        read_text(s.system_log)


def test_bad_rules_are_usage_errors(tmp_path, init_pki):
    from conftest import run_mtls
    from serve_helpers import server_dir
    d = server_dir(init_pki, tmp_path)
    for rule, why in [("cn", "needs TYPE=VALUE"), ("role=admin", "unknown type 'role'"),
                      ("cn=", "empty value"), ("spki-sha256=abc", "64 hex digits")]:
        r = run_mtls("serve", "--listen", "127.0.0.1:0", "--allow", rule, cwd=d)
        assert r.returncode == 2, (rule, r.stderr)
        assert why in r.stderr, r.stderr
