"""SIGHUP reloads the --config file as it reloads certificates: checked first
(the same checks as --check), the old configuration kept on any problem with a
system-log line naming its line and column; new routes, rules, upstreams and
identity headers apply to new connections while open requests finish."""
import re
import signal
import threading

import pytest

from proxy_helpers import *  # noqa: F401,F403
from serve_helpers import read_text, server_dir, wait_for_text, wait_until


def write(d, text):
    path = os.path.join(str(d), "mtls.yaml")
    with open(path + ".new", "w") as f:
        f.write(text)
    os.replace(path + ".new", path)  # as an editor or a config manager would
    return path


def get(s, pki, who, path):
    c = Conn(s.port, pki, cert=f"{who}.crt", key=f"{who}.key")
    try:
        st, _, body = c.request("GET", path)
    finally:
        c.close()
    return st, body


def start(serve, d, *args):
    """serve on 127.0.0.1:0 with 2 process workers; .port is the printed one."""
    s = serve(d, "--listen", "127.0.0.1:0", *args, workers=2, listen=False)
    s.port = int(re.search(r"127\.0\.0\.1:(\d+)", read_text(s.out)).group(1))
    return s


USERS = [pytest.param((), id="process")]
if os.geteuid() == 0:
    USERS.append(pytest.param(("--user", "nobody"), id="user-nobody"))


@pytest.mark.parametrize("user", USERS)
def test_sighup_applies_new_routes_rules_upstreams_and_headers(user, serve, tmp_path, proxy_pki,
                                                               upstream):
    from upstream_echo import Upstream
    other = Upstream()
    try:
        d = server_dir(proxy_pki, tmp_path)
        cfg = write(d, f"upstream: {upstream.url}\nallow: [cn=localclient]\n")
        s = start(serve, d, "--config", cfg, *user)
        assert get(s, proxy_pki, "client", "/app")[0] == 200
        assert get(s, proxy_pki, "alice", "/app")[0] == 403
        # A request in flight when the signal comes finishes on the old configuration.
        slow = {}
        c = Conn(s.port, proxy_pki)

        def in_flight():
            slow["answer"] = c.request("GET", "/slow/1.5")
        t = threading.Thread(target=in_flight)
        t.start()
        wait_until(lambda: upstream.stats["requests"] >= 2, what="the slow request upstream")
        write(d, f"""upstream: {upstream.url}
allow: [cn=alice]
identity_headers: plain
routes:
  - path: /other
    upstream: {other.url}/v2
    allow: [cn=localclient]
""")
        s.reload_by_generation("SIGHUP: configuration reloaded (1 route(s)")
        t.join(30)
        assert slow["answer"][0] == 200
        c.close()
        st, body = get(s, proxy_pki, "client", "/app")
        assert st == 403 and "allowed: cn alice" in json.loads(body)["reason"]
        st, body = get(s, proxy_pki, "alice", "/app")
        assert st == 200
        names = [n.lower() for n, _ in json.loads(body)["headers"]]
        assert "x-client-subject" in names and "client-cert" not in names
        st, body = get(s, proxy_pki, "client", "/other/y")
        assert st == 200 and json.loads(body)["path"] == "/v2/other/y"
        assert other.stats["requests"] == 1
    finally:
        other.close()


@pytest.mark.parametrize("user", USERS)
def test_a_bad_file_on_sighup_keeps_the_old_configuration(user, serve, tmp_path, proxy_pki,
                                                          upstream):
    d = server_dir(proxy_pki, tmp_path)
    cfg = write(d, f"upstream: {upstream.url}\nallow: [cn=localclient]\n")
    s = start(serve, d, "--config", cfg, *user)
    write(d, "upstream: ftp://nowhere\n"
             "allow:\n"
             "  - cn=alice\n"
             "  - role=admin\n"
             "routes:\n"
             "  - path: /x\n"
             "    upstrem: http://127.0.0.1:1\n")
    s.proc.send_signal(signal.SIGHUP)
    log = wait_for_text(s.system_log, "the old routes, upstreams and rules stay in force")
    assert f"{cfg}:1:11: upstream 'ftp://nowhere'" in log, log
    assert f"{cfg}:4:5: " in log and "unknown type 'role'" in log, log
    assert f"{cfg}:7:5: unknown route key 'upstrem'" in log, log
    assert "configuration reloaded" not in log
    assert get(s, proxy_pki, "client", "/app")[0] == 200
    assert get(s, proxy_pki, "alice", "/app")[0] == 403
    # A fixed file is taken by the next SIGHUP.
    write(d, f"upstream: {upstream.url}\nallow: [cn=alice]\n")
    s.proc.send_signal(signal.SIGHUP)
    wait_for_text(s.system_log, "SIGHUP: configuration reloaded")
    wait_until(lambda: get(s, proxy_pki, "alice", "/app")[0] == 200, what="alice allowed")
    assert get(s, proxy_pki, "client", "/app")[0] == 403


def test_flags_still_win_over_a_reloaded_file(serve, tmp_path, proxy_pki, upstream):
    d = server_dir(proxy_pki, tmp_path)
    cfg = write(d, f"upstream: {upstream.url}\nallow: [cn=alice]\n")
    s = start(serve, d, "--config", cfg, "--allow", "cn=localclient")
    write(d, f"upstream: {upstream.url}\nallow: [cn=bob]\nidentity_headers: plain\n")
    s.reload_by_generation()
    st, body = get(s, proxy_pki, "client", "/app")
    assert st == 200
    names = [n.lower() for n, _ in json.loads(body)["headers"]]
    assert "client-cert" not in names  # the file's new identity_headers apply
    assert get(s, proxy_pki, "bob", "/app")[0] == 403


def test_bad_rules_and_upstreams_in_the_file_name_line_and_column(tmp_path, init_pki):
    from conftest import run_mtls
    d = server_dir(init_pki, tmp_path)
    cfg = write(d, "upstream: http://127.0.0.1:99999\n"
                   "identity_headers: plain,dna\n"
                   "allow: [cn=alice, spki-sha256=xyz]\n"
                   "routes:\n"
                   "  - path: /a\n"
                   "    upstream: gopher://x\n"
                   "    handler: nope\n"
                   "    allow:\n"
                   "      - colour=blue\n")
    r = run_mtls("serve", "--config", cfg, cwd=d)
    assert r.returncode == 2
    for where in (":1:11: ", ":2:19: ", ":3:19: ", ":6:15: ", ":7:14: ", ":9:9: "):
        assert f"{cfg}{where}" in r.stderr, (where, r.stderr)
    assert "unknown handler 'nope'" in r.stderr
    # --check says each once, with its line, and adds the rest of its checks.
    r = run_mtls("serve", "--config", cfg, "--check", "--cert", "missing.crt", cwd=d)
    assert r.returncode == 2
    lines = [l for l in r.stderr.splitlines() if l.startswith("error:")]
    assert len(lines) == 7, r.stderr
    assert any("cannot read 'missing.crt'" in l for l in lines), r.stderr
