"""The TLS 1.3 suite the server picks (issue 14, item 4): AES-128-GCM first among
OpenSSL's default suites, the other defaults still accepted from clients that offer
only them, and suites chosen in the OpenSSL configuration left as chosen."""
import json
import os
import subprocess

from serve_helpers import *  # noqa: F401,F403 (fixtures)
from serve_helpers import SLOW, server_dir, tls_request


def whoami_cipher(port, d):
    data = tls_request(port, d, b"GET /whoami HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    head, body = data.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 200"), data
    return json.loads(body)["tls"]["cipher"]


def s_client_cipher(port, d, suites):
    """The suite openssl s_client negotiates when it offers only suites."""
    r = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-CAfile",
                        "serverca.crt", "-cert", "client.crt", "-key", "client.key",
                        "-ciphersuites", suites, "-brief", "-ign_eof"],
                       input=b"GET /test HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                       cwd=d, capture_output=True, timeout=30 * SLOW)
    out = (r.stdout + r.stderr).decode(errors="replace")
    assert b'"message"' in r.stdout, out
    return out


def test_a_default_client_gets_aes_128_gcm(init_pki, serve, tmp_path):
    d = server_dir(init_pki, tmp_path)
    s = serve(d)
    # Python's client offers OpenSSL's default order: AES-256-GCM first.
    assert whoami_cipher(s.port, d) == "TLS_AES_128_GCM_SHA256"


def test_clients_that_offer_only_another_default_suite_get_it(init_pki, serve, tmp_path):
    d = server_dir(init_pki, tmp_path)
    s = serve(d)
    for suite in ("TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256"):
        assert f"Ciphersuite: {suite}" in s_client_cipher(s.port, d, suite)


def test_suites_from_the_openssl_configuration_are_kept(init_pki, serve, tmp_path, monkeypatch):
    d = server_dir(init_pki, tmp_path)
    conf = os.path.join(d, "openssl.cnf")
    with open(conf, "w") as f:
        f.write("openssl_conf = init\n[init]\nssl_conf = ssl\n[ssl]\nsystem_default = tls\n"
                "[tls]\nCiphersuites = TLS_AES_256_GCM_SHA384:TLS_AES_128_GCM_SHA256\n")
    monkeypatch.setenv("OPENSSL_CONF", conf)
    s = serve(d)
    monkeypatch.delenv("OPENSSL_CONF")
    assert whoami_cipher(s.port, d) == "TLS_AES_256_GCM_SHA384"
