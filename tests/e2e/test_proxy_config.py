"""mtls serve --config FILE (YAML: the long options as keys; flags win) and
--check (every problem listed, exit 2, like nginx -t)."""
from conftest import run_mtls
from proxy_helpers import *  # noqa: F401,F403
from serve_helpers import server_dir


def write(d, text):
    path = os.path.join(str(d), "mtls.yaml")
    with open(path, "w") as f:
        f.write(text)
    return path


def test_a_config_file_sets_what_the_flags_set(serve, tmp_path, init_pki, upstream):
    d = server_dir(init_pki, tmp_path)
    cfg = write(d, f"""# the tutorial's app behind mtls
upstream: {upstream.url}
identity_headers: plain
allow:
  - cn=localclient
  - cn=carol
upstream-timeout: 5
""")
    s = serve(d, "--config", cfg)
    c = Conn(s.port, init_pki)
    st, _, body = c.request("GET", "/app")
    assert st == 200
    names = [n.lower() for n, _ in json.loads(body)["headers"]]
    assert "x-client-subject" in names and "client-cert" not in names
    c.close()
    # Flags win over the file: here the allow list.
    d2 = tmp_path / "two"
    d2.mkdir()
    server_dir(init_pki, d2)
    cfg2 = write(d2, f"upstream: {upstream.url}\nallow: [cn=localclient]\n")
    s2 = serve(d2, "--config", cfg2, "--allow", "cn=carol")
    c = Conn(s2.port, init_pki)
    st, _, body = c.request("GET", "/app")
    assert st == 403 and "allowed: cn carol" in json.loads(body)["reason"]
    c.close()


def test_unknown_keys_and_bad_values_name_line_and_column(tmp_path, init_pki):
    d = server_dir(init_pki, tmp_path)
    cfg = write(d, "upstream: http://127.0.0.1:1\n"
                   "verify_client: maybe\n"
                   "upstrem: http://x:1\n"
                   "workers: lots\n"
                   "allow_dry_run: perhaps\n"
                   "allow: {cn: alice}\n")
    r = run_mtls("serve", "--config", cfg, cwd=d)
    assert r.returncode == 2
    assert f"{cfg}:2:16: 'verify_client' must be one of require, optional, not 'maybe'" \
        in r.stderr
    assert f"{cfg}:3:1: unknown key 'upstrem'" in r.stderr
    assert f"{cfg}:4:10: 'workers' must be a whole number" in r.stderr
    assert f"{cfg}:5:16: 'allow_dry_run' must be true or false" in r.stderr
    assert f"{cfg}:6:8: 'allow' takes a list of values" in r.stderr
    r = run_mtls("serve", "--config", write(d, "listen: [1\n"), cwd=d)
    assert r.returncode == 2 and ":2:1: not YAML:" in r.stderr, r.stderr
    r = run_mtls("serve", "--config", os.path.join(str(d), "none.yaml"), cwd=d)
    assert r.returncode == 2 and "none.yaml: cannot read: no such file" in r.stderr.lower()


def test_check_lists_every_problem(tmp_path, init_pki):
    d = server_dir(init_pki, tmp_path)
    good = write(d, "upstream: http://127.0.0.1:8080/app\nallow: [cn=localclient]\n")
    r = run_mtls("serve", "--config", good, "--check", cwd=d)
    assert r.returncode == 0, r.stderr
    assert "configuration OK" in r.stdout
    assert not os.path.exists(os.path.join(str(d), "access.log"))  # nothing was started
    bad = write(d, "cert: missing.crt\nlisten: nope\nupstream: ftp://x\n"
                   "allow: [cn=alice, role=admin, spki-sha256=xyz]\n")
    r = run_mtls("serve", "--config", bad, "--check", cwd=d)
    assert r.returncode == 2
    lines = [l for l in r.stderr.splitlines() if l.startswith("error:")]
    assert len(lines) == 5, r.stderr
    for what in ("cannot read 'missing.crt'", "bad --listen 'nope'", "upstream 'ftp://x'",
                 "unknown type 'role'", "spki-sha256=xyz"):
        assert any(what in l for l in lines), (what, r.stderr)


def test_routes_of_their_own(serve, tmp_path, proxy_pki, upstream):
    from upstream_echo import Upstream
    other = Upstream()
    try:
        d = server_dir(proxy_pki, tmp_path)
        cfg = write(d, f"""upstream: {upstream.url}
allow: [cn=localclient, cn=alice]
routes:
  - path: /admin
    allow: [cn=alice]
  - path: /other
    upstream: {other.url}/v2
    identity_headers: [plain]
  - path: /health
    exact: true
    handler: test
    allow: []
""")
        s = serve(d, "--config", cfg)

        def get(who, path):
            c = Conn(s.port, proxy_pki, cert=f"{who}.crt", key=f"{who}.key")
            st, _, body = c.request("GET", path)
            c.close()
            return st, body

        st, body = get("client", "/app")
        assert st == 200 and json.loads(body)["path"] == "/app"
        st, body = get("client", "/admin/x")
        assert st == 403
        assert json.loads(body)["reason"] == \
            "CN=localclient is not allowed on /admin/x; allowed: cn alice"
        st, body = get("alice", "/admin/x")
        assert st == 200 and json.loads(body)["path"] == "/admin/x"
        st, body = get("client", "/other/y")
        e = json.loads(body)
        assert st == 200 and e["path"] == "/v2/other/y"
        names = [n.lower() for n, _ in e["headers"]]
        assert "x-client-subject" in names and "client-cert" not in names
        assert other.stats["requests"] == 1
        # bob is not in the server's rules, but /health lets any verified client in.
        assert get("bob", "/health") == (200, b'{"message":"Hello mtls"}')
        assert get("bob", "/health/x")[0] == 403  # exact: the catch-all's rules
        assert get("bob", "/app")[0] == 403
    finally:
        other.close()


def test_bad_routes_are_named(tmp_path, init_pki):
    d = server_dir(init_pki, tmp_path)
    cfg = write(d, "routes:\n"
                   "  - path: /a\n"
                   "    upstrem: http://127.0.0.1:1\n"
                   "  - exact: true\n")
    r = run_mtls("serve", "--config", cfg, cwd=d)
    assert r.returncode == 2
    assert f"{cfg}:3:5: unknown route key 'upstrem'" in r.stderr, r.stderr
    assert f"{cfg}:4:5: a route needs a path" in r.stderr, r.stderr
    for route, why in [("path: /a\n    handler: nope", "unknown handler 'nope'"),
                       ("path: /a\n    handler: test\n    upstream: http://127.0.0.1:1",
                        "a handler and an upstream, choose one"),
                       ("path: /a", "route '/a' needs an upstream"),
                       ("path: a\n    handler: test", "a path must start with '/'")]:
        cfg = write(d, f"routes:\n  - {route}\n")
        r = run_mtls("serve", "--config", cfg, "--check", cwd=d)
        assert r.returncode == 2 and why in r.stderr, (route, r.stderr)


def test_check_lists_every_bad_tls_file(tmp_path, init_pki):
    """A bad certificate does not hide a bad client CA or CRL: each file is checked alone."""
    d = server_dir(init_pki, tmp_path)
    r = run_mtls("serve", "--check", "--cert", "missing.crt", "--client-ca", "client.key",
                 "--crl", "missing.crl", cwd=d)
    assert r.returncode == 2
    lines = [l for l in r.stderr.splitlines() if l.startswith("error:")]
    assert len(lines) == 2, r.stderr  # the CRLs are checked once the client CAs load
    assert "cannot read 'missing.crt'" in lines[0] and "'client.key' holds a private key" in lines[1]
    r = run_mtls("serve", "--check", "--cert", "missing.crt", "--crl", "missing.crl", cwd=d)
    lines = [l for l in r.stderr.splitlines() if l.startswith("error:")]
    assert r.returncode == 2 and len(lines) == 2, r.stderr
    assert "cannot read 'missing.crl'" in lines[1]
    # Each part fine, the whole not: a key that does not go with the certificate.
    r = run_mtls("serve", "--check", "--key", "client.key", cwd=d)
    assert r.returncode == 2 and "does not match" in r.stderr, r.stderr
