"""The verified identity reaches the application in the headers chosen with
--identity-headers, and a client can never claim one: every inbound copy of
every identity header is removed, whatever is selected (Envoy's sanitize_set)."""
import base64
import hashlib
import shutil
import subprocess

import pytest

from proxy_helpers import *  # noqa: F401,F403

SPOOFS = [
    ("Client-Cert", ":AAAA:"),
    ("Client-Cert-Chain", ":AAAA:, :BBBB:"),
    ("X-Forwarded-Client-Cert", 'Hash=00;Subject="CN=admin"'),
    ("X-Client-Subject", "CN=admin"),
    ("X-Client-Issuer", "CN=evil-ca"),
    ("X-Client-Serial", "01"),
    ("X-Client-SHA256", "00"),
    ("X-Client-SAN-URI", "spiffe://example.org/ns/admin/sa/root"),
    ("X-Client-SAN-DNS", "admin.example.org"),
    ("X-Client-Not-After", "2099-01-01T00:00:00Z"),
    ("X-Client-Verify", "SUCCESS;spoofed"),
]
FAMILIES = {
    "rfc9440": ["client-cert"],
    "xfcc": ["x-forwarded-client-cert"],
    "plain": ["x-client-verify", "x-client-subject", "x-client-issuer", "x-client-serial",
              "x-client-sha256", "x-client-not-after"],
}


def der_of(path):
    r = subprocess.run(["openssl", "x509", "-in", str(path), "-outform", "DER"],
                       capture_output=True, check=True)
    return r.stdout


def sent(serve, tmp_path, pki, upstream, *args, cert="client.crt", key="client.key",
         spoof=SPOOFS):
    s = proxy(serve, tmp_path, pki, upstream.url, *args)
    c = Conn(s.port, pki, cert=cert, key=key)
    st, _, body = c.request("GET", "/who", headers=spoof)
    c.close()
    assert st == 200, body
    return [(n.lower(), v) for n, v in json.loads(body)["headers"]], s


@pytest.mark.parametrize("families", ["none", "rfc9440", "xfcc", "plain", "rfc9440,xfcc,plain"])
def test_spoofed_identity_headers_never_reach_the_app(serve, tmp_path, init_pki, upstream,
                                                      families):
    headers, _ = sent(serve, tmp_path, init_pki, upstream, "--identity-headers", families)
    names = [n for n, _ in headers]
    values = [v for _, v in headers]
    for name, value in SPOOFS:
        assert value not in values, f"{name}: {value!r} reached the app"
        assert names.count(name.lower()) <= 1, name
    for family, expected in FAMILIES.items():
        for name in expected:
            assert (name in names) == (family in families), (family, name, names)


def test_default_identity_headers_say_who_the_client_is(serve, tmp_path, proxy_pki, upstream):
    headers, _ = sent(serve, tmp_path, proxy_pki, upstream, cert="alice.crt", key="alice.key")
    h = dict(headers)
    alice = der_of(proxy_pki / "alice.crt")
    # RFC 9440: a structured-field byte sequence of the DER.
    assert h["client-cert"] == ":" + base64.b64encode(alice).decode() + ":"
    sha = hashlib.sha256(alice).hexdigest()
    # Envoy's format (sanitize_set: ours replaces whatever came in).
    assert h["x-forwarded-client-cert"] == (
        f'Hash={sha};Subject="CN=alice,OU=eng,O=Example";'
        "URI=spiffe://example.org/ns/prod/sa/web;DNS=alice.example.org")
    assert h["x-client-verify"] == "SUCCESS"
    assert h["x-client-subject"] == "CN=alice,OU=eng,O=Example"
    assert h["x-client-issuer"] == "CN=client-example-ca"
    assert h["x-client-sha256"] == sha
    assert h["x-client-san-uri"] == "spiffe://example.org/ns/prod/sa/web"
    assert h["x-client-san-dns"] == "alice.example.org"
    serial = subprocess.run(["openssl", "x509", "-noout", "-serial", "-in",
                             str(proxy_pki / "alice.crt")], capture_output=True, text=True,
                            check=True).stdout.strip().split("=")[1]
    assert int(h["x-client-serial"], 16) == int(serial, 16)
    assert h["x-client-serial"] == h["x-client-serial"].upper()
    assert h["x-client-not-after"].endswith("Z")


def test_optional_mode_tells_the_app_what_came(serve, tmp_path, init_pki, upstream):
    s = proxy(serve, tmp_path, init_pki, upstream.url, "--verify-client", "optional")
    # No certificate: the app hears NONE; the built-in routes still refuse.
    ctx_args = dict(cert=None, key=None)
    c = Conn(s.port, init_pki, **ctx_args)
    st, _, body = c.request("GET", "/who", headers=SPOOFS)
    h = dict((n.lower(), v) for n, v in json.loads(body)["headers"])
    assert st == 200 and h["x-client-verify"] == "NONE"
    assert "x-client-subject" not in h and "client-cert" not in h
    st, _, body = c.request("GET", "/test")
    assert st == 403
    c.close()
    # A certificate from a CA the server does not trust: FAILED and why, with who it claims.
    c = Conn(s.port, init_pki, cert="mallory.crt", key="mallory.key")
    st, _, body = c.request("GET", "/who", headers=SPOOFS)
    h = dict((n.lower(), v) for n, v in json.loads(body)["headers"])
    assert st == 200
    assert h["x-client-verify"].startswith("FAILED:") and "trusted" in h["x-client-verify"]
    assert h["x-client-subject"] == "CN=mallory"
    assert "client-cert" not in h and "x-forwarded-client-cert" not in h
    c.close()


def test_unknown_family_is_a_usage_error(tmp_path, init_pki):
    from conftest import run_mtls
    from serve_helpers import server_dir
    r = run_mtls("serve", "--listen", "127.0.0.1:0", "--identity-headers", "plain,nginx",
                 cwd=server_dir(init_pki, tmp_path))
    assert r.returncode == 2
    assert "identity header family 'nginx' is unknown" in r.stderr


NODE_APP = r"""
// The tutorial's app without TLS: it reads who is calling from mtls's headers.
const http = require('http');
const server = http.createServer((req, res) => {
  const cert = req.headers['client-cert'] || '';
  res.setHeader('Content-Type', 'application/json');
  res.end(JSON.stringify({
    message: 'Hello ' + (req.headers['x-client-subject'] || 'nobody'),
    der_bytes: Buffer.from(cert.replace(/:/g, ''), 'base64').length,
    xfcc: req.headers['x-forwarded-client-cert'] || null,
  }));
});
server.keepAliveTimeout = 200;  // closes idle connections soon: mtls must cope
server.listen(0, '127.0.0.1', () => console.log(server.address().port));
"""


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_a_node_app_behind_mtls_reads_the_identity(serve, tmp_path, init_pki):
    import subprocess
    import time
    app = subprocess.Popen(["node", "-e", NODE_APP], stdout=subprocess.PIPE, text=True)
    try:
        port = int(app.stdout.readline())
        s = proxy(serve, tmp_path, init_pki, f"http://127.0.0.1:{port}")
        der = len(der_of(init_pki / "client.crt"))
        for pause in (0, 0.5):  # the second request comes after the app closed the kept one
            time.sleep(pause)
            r = curl("--cacert", "serverca.crt", "--cert", "client.crt", "--key", "client.key",
                     "-H", "X-Forwarded-Client-Cert: Hash=0;Subject=\"CN=admin\"",
                     f"https://localhost:{s.port}/app", cwd=s.dir)
            assert r.returncode == 0, r.stderr
            body = json.loads(r.stdout)
            assert body["message"] == "Hello CN=localclient"
            assert body["der_bytes"] == der
            assert "CN=admin" not in body["xfcc"] and 'Subject="CN=localclient"' in body["xfcc"]
    finally:
        app.kill()
        app.wait()


def test_client_cert_chain_carries_the_intermediates(serve, tmp_path, init_pki, upstream):
    from conftest import run_mtls
    from serve_helpers import server_dir
    d = server_dir(init_pki, tmp_path)
    for args in (["ca", "create", "--out", "inter", "--cn", "client-intermediate", "--parent",
                  "clientca"],
                 ["cert", "issue", "--ca", "inter", "--profile", "client", "--cn", "carol",
                  "--out", "carol"]):
        r = run_mtls(*args, cwd=d)
        assert r.returncode == 0, r.stderr
    s = serve(d, "--upstream", upstream.url)
    r = curl("--cacert", "serverca.crt", "--cert", "carol.chain.crt", "--key", "carol.key",
             f"https://localhost:{s.port}/who", cwd=d)
    assert r.returncode == 0, r.stderr
    h = dict((n.lower(), v) for n, v in json.loads(r.stdout)["headers"])
    inter = base64.b64encode(der_of(os.path.join(str(d), "inter.crt"))).decode()
    carol = base64.b64encode(der_of(os.path.join(str(d), "carol.crt"))).decode()
    assert h["client-cert"] == f":{carol}:"
    assert h["client-cert-chain"] == f":{inter}:"  # the leaf is Client-Cert's, not here
    assert h["x-client-issuer"] == "CN=client-intermediate"
