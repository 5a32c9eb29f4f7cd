"""`mtls init`: the article's PKI in one step, checked with the openssl CLI,
curl and Node, and its refusals (nothing written)."""
import os
import shutil
import stat
import subprocess

import pytest

from conftest import free_port, run_mtls, wait_for_port

FILES = ["clientca.crt", "clientca.key", "client.key", "client.csr", "client.crt",
         "serverca.crt", "serverca.key", "server.key", "server.csr", "server.crt"]


def openssl(*args, **kw):
    return subprocess.run(["openssl", *args], capture_output=True, text=True, timeout=30, **kw)


def snapshot(d):
    """Every file under d with its content, to prove nothing changed."""
    out = {}
    for root, _, files in os.walk(d):
        for f in files:
            p = os.path.join(root, f)
            with open(p, "rb") as fh:
                out[os.path.relpath(p, d)] = fh.read()
    return out


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = tmp_path_factory.mktemp("init")
    r = run_mtls("init", "--dir", d)
    assert r.returncode == 0, r.stderr
    return d


def test_init_writes_the_articles_files(pki):
    for f in FILES:
        assert (pki / f).is_file(), f
    for f in ["clientca.key", "client.key", "serverca.key", "server.key"]:
        assert stat.S_IMODE(os.stat(pki / f).st_mode) == 0o600, f
    # The CA state that `--ca DIR/clientca` needs later.
    assert (pki / "clientca.index").is_file()
    assert len(list((pki / "clientca.certs").iterdir())) == 1
    assert not [p for p in os.listdir(pki) if ".tmp-" in p]


def test_init_names_and_extensions(pki):
    def text(f):
        r = openssl("x509", "-in", str(pki / f), "-noout", "-text", "-nameopt", "oneline")
        assert r.returncode == 0, r.stderr
        return r.stdout
    ca = text("clientca.crt")
    assert "Subject: CN = client-example-ca" in ca
    assert "CA:TRUE" in ca and "Certificate Sign, CRL Sign" in ca
    assert "prime256v1" in ca
    client = text("client.crt")
    assert "Subject: CN = localclient" in client and "Issuer: CN = client-example-ca" in client
    assert "TLS Web Client Authentication" in client and "Server Authentication" not in client
    assert "CA:FALSE" in client
    server = text("server.crt")
    assert "Subject: CN = localhost" in server and "Issuer: CN = server-example-ca" in server
    assert "DNS:localhost, IP Address:127.0.0.1" in server
    assert "TLS Web Server Authentication" in server and "Client Authentication" not in server
    assert "Subject: CN = server-example-ca" in text("serverca.crt")


def test_openssl_verify_purposes(pki):
    def verify(ca, purpose, cert):
        return openssl("verify", "-CAfile", str(pki / ca), "-purpose", purpose, str(pki / cert))
    assert verify("clientca.crt", "sslclient", "client.crt").returncode == 0
    assert verify("serverca.crt", "sslserver", "server.crt").returncode == 0
    bad = verify("clientca.crt", "sslserver", "client.crt")
    assert bad.returncode != 0 and "unsuitable certificate purpose" in bad.stdout + bad.stderr
    assert verify("serverca.crt", "sslclient", "client.crt").returncode != 0


def test_keys_match_and_csrs_verify(pki):
    for name in ["client", "server"]:
        a = openssl("pkey", "-in", str(pki / f"{name}.key"), "-pubout").stdout
        b = openssl("x509", "-in", str(pki / f"{name}.crt"), "-noout", "-pubkey").stdout
        assert a and a == b
        r = openssl("req", "-in", str(pki / f"{name}.csr"), "-noout", "-verify")
        assert r.returncode == 0 and "verify OK" in r.stdout + r.stderr


@pytest.fixture
def s_server(pki):
    """openssl s_server with the init files, demanding a client certificate."""
    port = free_port()
    p = subprocess.Popen(["openssl", "s_server", "-accept", str(port), "-cert", str(pki / "server.crt"),
                          "-key", str(pki / "server.key"), "-CAfile", str(pki / "clientca.crt"),
                          "-Verify", "1", "-verify_return_error", "-www", "-quiet"],
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port, proc=p)
        yield port
    finally:
        p.kill()
        p.wait()


def test_curl_mutual_tls_with_init_files(pki, s_server):
    base = ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "--cacert", str(pki / "serverca.crt")]
    url = f"https://localhost:{s_server}/"
    ok = subprocess.run(base + ["--key", str(pki / "client.key"), "--cert", str(pki / "client.crt"), url],
                        capture_output=True, text=True, timeout=30)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout == "200"
    # The IP SAN works too.
    ok_ip = subprocess.run(base + ["--key", str(pki / "client.key"), "--cert", str(pki / "client.crt"),
                                   f"https://127.0.0.1:{s_server}/"], capture_output=True, text=True,
                           timeout=30)
    assert ok_ip.returncode == 0, ok_ip.stderr
    # Without a client certificate the server refuses the handshake.
    no_cert = subprocess.run(base + [url], capture_output=True, text=True, timeout=30)
    assert no_cert.returncode != 0


NODE_CLIENT = r"""
const fs = require('fs'), https = require('https'), tls = require('tls');
const d = process.argv[1], port = +process.argv[2];
tls.createSecureContext({key: fs.readFileSync(d + '/server.key'), cert: fs.readFileSync(d + '/server.crt'),
                         ca: fs.readFileSync(d + '/clientca.crt')});
// autoSelectFamily: every address of localhost in turn, as curl (Node 18 tries only the first).
const req = https.request({host: 'localhost', port, path: '/', autoSelectFamily: true,
                           key: fs.readFileSync(d + '/client.key'),
                           cert: fs.readFileSync(d + '/client.crt'), ca: fs.readFileSync(d + '/serverca.crt')},
  res => { console.log(res.statusCode); res.resume(); res.on('end', () => process.exit(0)); });
req.on('error', e => { console.error(e.message); process.exit(1); });
req.end();
"""


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_node_loads_init_files(pki, s_server):
    r = subprocess.run(["node", "-e", NODE_CLIENT, str(pki), str(s_server)], capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "200"


def test_hosts_and_rsa(tmp_path):
    r = run_mtls("init", "--dir", tmp_path / "x", "--host", "api.example.test", "--host", "10.0.0.7",
                 "--host", "::1", "--key-type", "rsa")
    assert r.returncode == 0, r.stderr
    t = openssl("x509", "-in", str(tmp_path / "x" / "server.crt"), "-noout", "-text", "-nameopt", "oneline").stdout
    assert "Subject: CN = api.example.test" in t
    assert "DNS:api.example.test, IP Address:10.0.0.7, IP Address:0:0:0:0:0:0:0:1" in t
    assert "Public-Key: (2048 bit)" in t and "Key Encipherment" in t
    ca = openssl("x509", "-in", str(tmp_path / "x" / "clientca.crt"), "-noout", "-text").stdout
    assert "Public-Key: (2048 bit)" in ca and "sha256WithRSAEncryption" in ca


def test_refuses_to_overwrite_without_force(tmp_path):
    assert run_mtls("init", "--dir", tmp_path).returncode == 0
    before = snapshot(tmp_path)
    r = run_mtls("init", "--dir", tmp_path)
    assert r.returncode == 1
    assert r.stderr.count("\n") == 1
    assert "already exists: pass --force to overwrite it" in r.stderr
    assert snapshot(tmp_path) == before
    r = run_mtls("init", "--dir", tmp_path, "--force")
    assert r.returncode == 0, r.stderr
    after = snapshot(tmp_path)
    assert after["client.crt"] != before["client.crt"]


def test_one_existing_file_stops_everything(tmp_path):
    (tmp_path / "server.key").write_text("mine\n")
    r = run_mtls("init", "--dir", tmp_path)
    assert r.returncode == 1
    assert "server.key' already exists" in r.stderr
    assert sorted(os.listdir(tmp_path)) == ["server.key"]
    assert (tmp_path / "server.key").read_text() == "mine\n"


@pytest.mark.parametrize("args,needle", [
    (["--key-type", "dsa"], "unknown key type 'dsa'"),
    (["--host", "bad host"], "not a valid host name"),
    (["--bogus"], "unknown option"),
])
def test_bad_flags_are_usage_errors(tmp_path, args, needle):
    r = run_mtls("init", "--dir", tmp_path / "out", *args)
    assert r.returncode == 2
    assert needle in r.stderr
    assert not (tmp_path / "out").exists()


def test_help_is_complete():
    r = run_mtls("init", "--help")
    assert r.returncode == 0
    for flag in ["--dir", "--host", "--key-type", "--force", "exit codes:"]:
        assert flag in r.stdout


PY_CLIENT = r"""
import http.client, ssl, sys
d, port = sys.argv[1], int(sys.argv[2])
ctx = ssl.create_default_context(cafile=d + "/serverca.crt")
ctx.load_cert_chain(d + "/client.crt", d + "/client.key")
c = http.client.HTTPSConnection("localhost", port, context=ctx, timeout=20)
c.request("GET", "/")
print(c.getresponse().status)
"""


@pytest.mark.parametrize("key_type", ["ec", "rsa"])
def test_python_node_and_curl_with_each_key_type(tmp_path, key_type):
    """The init files of either key type work with Python's ssl, Node and curl against
    openssl s_server (a server nobody here wrote)."""
    d = tmp_path / key_type
    r = run_mtls("init", "--dir", d, "--key-type", key_type)
    assert r.returncode == 0, r.stderr
    port = free_port()
    p = subprocess.Popen(["openssl", "s_server", "-accept", str(port), "-cert", str(d / "server.crt"),
                          "-key", str(d / "server.key"), "-CAfile", str(d / "clientca.crt"),
                          "-Verify", "1", "-verify_return_error", "-www", "-quiet"],
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port, proc=p)
        clients = [["/usr/bin/python3", "-c", PY_CLIENT, str(d), str(port)],
                   ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}\n", "--cacert",
                    str(d / "serverca.crt"), "--key", str(d / "client.key"), "--cert",
                    str(d / "client.crt"), f"https://localhost:{port}/"]]
        if shutil.which("node"):
            clients.append(["node", "-e", NODE_CLIENT, str(d), str(port)])
        for cmd in clients:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
            assert r.returncode == 0 and r.stdout.strip() == "200", (cmd[0], r.stdout, r.stderr)
    finally:
        p.kill()
        p.wait()
