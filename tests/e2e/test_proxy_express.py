"""The issue's "how it will be checked", end to end, with the README's example:
examples/express (the tutorial's Express app without TLS) behind
`mtls serve --upstream`, driven by curl with the client certificate.

Express is installed with npm (`npm ci`, the example's package-lock.json) into
a copy of examples/express under pytest's temporary folder, once per session;
npm's cache makes later runs offline. Without node or npm, or when npm can
reach neither the registry nor its cache, these tests are skipped, saying so.
"""
import hashlib
import shutil
import subprocess

import pytest

from conftest import run_mtls
from proxy_helpers import *  # noqa: F401,F403
from serve_helpers import SLOW, curl, read_text, server_dir

EXAMPLE = os.path.join(os.path.dirname(__file__), "..", "..", "examples", "express")


@pytest.fixture(scope="session")
def express_dir(tmp_path_factory):
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("node and npm are needed (scripts/install-deps.sh bench)")
    d = tmp_path_factory.mktemp("express")
    for name in ("package.json", "package-lock.json", "server.js"):
        shutil.copy(os.path.join(EXAMPLE, name), d)
    r = subprocess.run(["npm", "ci", "--prefer-offline", "--no-audit", "--no-fund",
                        "--loglevel=error"], cwd=d, capture_output=True, text=True,
                       timeout=300 * SLOW)
    if r.returncode != 0:
        pytest.skip("npm could not install Express (no network and nothing in npm's cache?): "
                    + r.stderr.strip()[-300:])
    return d


@pytest.fixture
def app(express_dir):
    """examples/express/server.js on a free port; .port, .stop()."""
    p = subprocess.Popen(["node", "server.js"], cwd=express_dir, stdout=subprocess.PIPE,
                         text=True, env=dict(os.environ, PORT="0"))
    line = p.stdout.readline()
    assert line.startswith("Express listening on 127.0.0.1:"), line
    p.port = int(line.rsplit(":", 1)[1])
    yield p
    p.kill()
    p.wait()


def get(s, path, *args):
    r = curl("--cacert", "serverca.crt", "--cert", "client.crt", "--key", "client.key",
             "-D", "-", *args, f"https://localhost:{s.port}{path}", cwd=s.dir)
    assert r.returncode == 0, r.stderr
    head, _, body = r.stdout.replace("\r\n", "\n").partition("\n\n")
    return int(head.split()[1]), head.lower(), body


def test_the_express_example_behind_mtls(serve, tmp_path, init_pki, app):
    d = server_dir(init_pki, tmp_path)
    cfg = os.path.join(EXAMPLE, "mtls.yaml")
    # The example's file (identity_headers as a list), with the app's port from the command
    # line (flags win).
    s = serve(d, "--config", cfg, "--upstream", f"http://127.0.0.1:{app.port}")

    # The app's own body for the tutorial's route (the file routes /test to it).
    st, head, body = get(s, "/test")
    assert st == 200 and json.loads(body) == {"message": "Hello mtls"}
    assert "x-powered-by: express" in head  # Express answered, not mtls's built-in

    # The app sees the verified identity, and never a client's forged one.
    st, _, body = get(s, "/me", "-H", 'X-Forwarded-Client-Cert: Hash=0;Subject="CN=admin"',
                      "-H", "X-Client-Subject: CN=admin", "-H", "Client-Cert: :AAAA:")
    me = json.loads(body)
    assert st == 200, body
    assert me["verify"] == "SUCCESS"
    assert me["subject"] == "CN=localclient"
    assert "CN=admin" not in me["xfcc"] and 'Subject="CN=localclient"' in me["xfcc"]
    der = subprocess.run(["openssl", "x509", "-in", os.path.join(d, "client.crt"), "-outform",
                          "DER"], capture_output=True, check=True).stdout
    assert me["cert"]["fingerprint256"].replace(":", "").lower() == hashlib.sha256(der).hexdigest()
    assert "CN=localclient" in me["cert"]["subject"]
    st, _, body = get(s, "/admin", "-H", "X-Client-Subject: CN=admin")
    assert st == 403 and json.loads(body)["reason"] == "CN=localclient is not an admin"
    s.stop()

    # --allow cn=someone-else: 403 with the reason, and the app is not asked.
    d2 = tmp_path / "allow"
    d2.mkdir()
    server_dir(init_pki, d2)
    s = serve(d2, "--upstream", f"http://127.0.0.1:{app.port}", "--allow", "cn=someone-else")
    st, head, body = get(s, "/me")
    assert st == 403 and "x-powered-by" not in head
    assert json.loads(body)["reason"] == \
        "CN=localclient is not allowed on /me; allowed: cn someone-else"
    assert "CN=localclient is not allowed on /me" in read_text(s.system_log)

    s.stop()

    # A stopped upstream: 502 with the reason.
    app.kill()
    app.wait()
    d3 = tmp_path / "stopped"
    d3.mkdir()
    server_dir(init_pki, d3)
    s = serve(d3, "--upstream", f"http://127.0.0.1:{app.port}")
    st, _, body = get(s, "/me")
    assert st == 502
    assert json.loads(body)["reason"] == \
        f"cannot connect to the upstream 127.0.0.1:{app.port} (connection refused)"


def test_check_on_a_broken_example_file_names_the_line(tmp_path, init_pki):
    d = server_dir(init_pki, tmp_path)
    good = os.path.join(EXAMPLE, "mtls.yaml")
    r = run_mtls("serve", "--config", good, "--check", cwd=d)
    assert r.returncode == 0, r.stderr
    text = open(good).read().replace("    exact: true", "    exact: true\n    allow: [cn=]")
    bad = os.path.join(d, "mtls.yaml")
    with open(bad, "w") as f:
        f.write(text)
    line = text.splitlines().index("    allow: [cn=]") + 1
    r = run_mtls("serve", "--config", bad, "--check", cwd=d)
    assert r.returncode == 2
    assert f"{bad}:{line}:13: " in r.stderr, r.stderr
    assert "configuration OK" not in r.stdout
