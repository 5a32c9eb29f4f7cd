"""`mtls serve` does what the article's Node server does, for every client:
the article's three curl calls, openssl s_client (TLS 1.2 and 1.3), Python's
ssl module and Node's https module; /test, /whoami, 404, 405; the logs."""
import json
import os
import re
import subprocess
import ssl

import pytest

from serve_helpers import *  # noqa: F401,F403 (fixtures)
from conftest import run_mtls
from serve_helpers import server_dir


def article_curls(d, port):
    url = f"https://localhost:{port}/test"
    ok = curl("--cacert", "./serverca.crt", "--key", "./client.key", "--cert", "./client.crt", url,
              cwd=d)
    no_ca = curl("--key", "./client.key", "--cert", "./client.crt", url, cwd=d)
    no_cert = curl("--cacert", "./serverca.crt", url, cwd=d)
    return ok, no_ca, no_cert


@pytest.mark.parametrize("which", ["init", "openssl"])
def test_the_articles_three_curl_calls(which, init_pki, openssl_pki, serve, tmp_path):
    d = server_dir(init_pki if which == "init" else openssl_pki, tmp_path)
    s = serve(d)
    assert "HTTPS listening on 127.0.0.1:%d...." % s.port in read_text(s.out)
    ok, no_ca, no_cert = article_curls(d, s.port)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout) == {"message": "Hello mtls"}
    assert no_ca.returncode == 60, no_ca.stderr
    assert no_cert.returncode in (35, 56), no_cert.stderr
    wait_for_text(s.system_log, "no client certificate was sent")
    log = wait_for_text(s.system_log, "unknown_ca")
    assert "HTTPS start" in log
    assert re.search(r"\[WARN\] 127\.0\.0\.1:\d+ - handshake rejected: the client does not trust "
                     r"the server certificate \(it sent alert unknown_ca\)", log), log
    assert re.search(r"\[WARN\] 127\.0\.0\.1:\d+ - handshake rejected: no client certificate was "
                     r"sent \(alert certificate_required\)", log), log
    access = wait_for_text(s.access_log, "GET /test")
    # curl offers h2 by ALPN, as it does to nginx: the article's call now speaks HTTP/2.
    assert re.search(r'^127\.0\.0\.1 - CN=localclient \[\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4}\] '
                     r'"GET /test HTTP/2\.0" 200 24 "-" "curl/[\d.]+"$', access, re.M), access


def test_defaults_are_the_articles(init_pki, serve, tmp_path):
    """No flags: port 8443 on every address, files from the current folder."""
    d = server_dir(init_pki, tmp_path)
    import socket
    with socket.socket() as probe:
        # As the server does: connections of earlier runs in TIME_WAIT do not count.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", 8443))
        except OSError:
            pytest.skip("port 8443 is taken on this machine")
    try:
        s = serve(d, workers=None, listen=False, port=8443)
    except AssertionError as e:
        if "the port is in use" in str(e):  # taken meanwhile (another test run)
            pytest.skip("port 8443 was taken meanwhile")
        raise
    assert read_text(s.out) == "HTTPS listening on 8443....\n"
    ok, _, _ = article_curls(d, 8443)
    assert ok.returncode == 0 and "Hello mtls" in ok.stdout, ok.stderr
    assert os.path.exists(os.path.join(d, "system.log"))
    assert "GET /test" in wait_for_text(os.path.join(d, "access.log"), "GET /test")


@pytest.mark.parametrize("proto", ["-tls1_2", "-tls1_3"])
def test_openssl_s_client(proto, init_pki, serve, tmp_path):
    d = server_dir(init_pki, tmp_path)
    s = serve(d)
    base = ["openssl", "s_client", "-connect", f"127.0.0.1:{s.port}", "-servername", "localhost",
            proto, "-CAfile", "serverca.crt", "-verify_return_error", "-ign_eof"]
    r = subprocess.run(base + ["-cert", "client.crt", "-key", "client.key"], cwd=d,
                       input="GET /test HTTP/1.0\r\n\r\n", capture_output=True, text=True,
                       timeout=30)
    assert '{"message":"Hello mtls"}' in r.stdout, r.stdout + r.stderr
    assert ("TLSv1.2" if proto == "-tls1_2" else "TLSv1.3") in r.stdout
    assert "client-example-ca" in r.stdout  # the CA names of the CertificateRequest
    r = subprocess.run(base, cwd=d, input="GET /test HTTP/1.0\r\n\r\n", capture_output=True,
                       text=True, timeout=30)
    assert "Hello mtls" not in r.stdout
    want = "handshake failure" if proto == "-tls1_2" else "certificate required"
    assert want in r.stderr.lower().replace("_", " "), r.stderr


def test_python_ssl(init_pki, serve, tmp_path):
    d = server_dir(init_pki, tmp_path)
    s = serve(d)
    for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
        data = tls_request(s.port, d, version=version)
        head, body = data.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 200 OK\r\n")
        assert b"Content-Type: application/json; charset=utf-8" in head
        assert json.loads(body) == {"message": "Hello mtls"}
        err = tls_error(s.port, d, cert=None, version=version)
        assert ("handshake failure" if version == ssl.TLSVersion.TLSv1_2
                else "certificate required") in err, err


def test_node_https(init_pki, serve, tmp_path):
    d = server_dir(init_pki, tmp_path)
    s = serve(d)
    script = """
const https = require('https'); const fs = require('fs');
const withCert = process.argv[1] === 'cert';
// autoSelectFamily: try every address of localhost (::1, then 127.0.0.1) as curl
// does; Debian 12's Node 18 tries only the first unless told.
const o = {host: 'localhost', port: %d, path: '/test', ca: fs.readFileSync('serverca.crt'),
           autoSelectFamily: true};
if (withCert) { o.cert = fs.readFileSync('client.crt'); o.key = fs.readFileSync('client.key'); }
https.get(o, res => { let b = ''; res.on('data', c => b += c);
  res.on('end', () => { console.log(res.statusCode + ' ' + b); }); })
  .on('error', e => { console.log('error ' + e.code + ' ' + e.message); });
""" % s.port
    r = subprocess.run(["node", "-e", script, "cert"], cwd=d, capture_output=True, text=True,
                       timeout=30)
    assert r.stdout.strip() == '200 {"message":"Hello mtls"}', r.stdout + r.stderr
    r = subprocess.run(["node", "-e", script, "nocert"], cwd=d, capture_output=True, text=True,
                       timeout=30)
    assert r.stdout.startswith("error "), r.stdout + r.stderr
    # Refused by the server's TLS, not by an address nobody listens on.
    assert "ECONNREFUSED" not in r.stdout, r.stdout


def test_whoami_and_other_routes(init_pki, serve, tmp_path):
    d = server_dir(init_pki, tmp_path)
    s = serve(d)
    data = tls_request(s.port, d, b"GET /whoami HTTP/1.1\r\nHost: x\r\n\r\n"
                                  b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n"
                                  b"DELETE /test HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    parts = data.split(b"HTTP/1.1 ")[1:]
    assert [p[:3] for p in parts] == [b"200", b"404", b"405"], data
    who = json.loads(parts[0].split(b"\r\n\r\n", 1)[1].rsplit(b"}", 0)[0])
    client = who["client"]
    assert client["subject"] == "CN=localclient"
    assert client["issuer"] == "CN=client-example-ca"
    assert re.fullmatch(r"([0-9A-F]{2}:){31}[0-9A-F]{2}", client["sha256"])
    assert client["serial"] and client["not_after"].endswith("Z")
    assert isinstance(client["sans"], list)
    assert who["tls"]["version"] == "TLSv1.3" and who["tls"]["cipher"]
    assert b'{"error":"not found"}' in parts[1]
    assert b"Allow: GET, HEAD" in parts[2]


def test_json_logs(init_pki, serve, tmp_path):
    d = server_dir(init_pki, tmp_path)
    s = serve(d, "--log-format", "json")
    tls_request(s.port, d, b"GET /test?x=1 HTTP/1.1\r\nHost: x\r\nUser-Agent: py\r\n"
                           b"Connection: close\r\n\r\n")
    assert tls_error(s.port, d, cert=None)
    line = wait_for_text(s.access_log, "/test?x=1").strip().splitlines()[-1]
    entry = json.loads(line)
    assert entry["client"] == "CN=localclient" and entry["status"] == 200
    assert entry["path"] == "/test?x=1" and entry["user_agent"] == "py"
    assert entry["remote_addr"] == "127.0.0.1" and entry["bytes"] == 24
    wait_for_text(s.system_log, "handshake_rejected")
    events = [json.loads(l) for l in read_text(s.system_log).splitlines()]
    rejected = [e for e in events if e["event"] == "handshake_rejected"]
    assert rejected and rejected[0]["alert"] == "certificate_required"
    assert rejected[0]["peer"].startswith("127.0.0.1:")


def test_json_logs_keep_utf8_and_stay_valid_json(init_pki, serve, tmp_path):
    """A non-ASCII subject is written as UTF-8; bytes that are not UTF-8 are escaped."""
    d = server_dir(init_pki, tmp_path)
    r = run_mtls("cert", "issue", "--ca", "clientca", "--profile", "client", "--cn", "Ünï €",
                 "--out", "unicode", cwd=d)
    assert r.returncode == 0, r.stderr
    s = serve(d, "--log-format", "json")
    tls_request(s.port, d, cert="unicode.crt", key="unicode.key")
    # Invalid UTF-8 in the user agent, then in the request target: llhttp 8 (Debian 12) takes
    # bytes >= 0x80 there, llhttp 9 (Debian 13) refuses them with a 400, logged all the same.
    tls_request(s.port, d, b"GET /test HTTP/1.1\r\nHost: x\r\nUser-Agent: a\xc0\xafb\xed\xa0\x80\r\n"
                           b"Connection: close\r\n\r\n")
    tls_request(s.port, d, b"GET /t\xff\xc3?\xe9 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    wait_until(lambda: len(read_text(s.access_log).splitlines()) >= 3, what="three access-log lines")
    with open(s.access_log, "rb") as f:
        raw = f.read()
    entries = [json.loads(line.decode("utf-8")) for line in raw.splitlines()]
    assert entries[0]["client"] == "CN=Ünï €"
    assert "CN=Ünï €".encode() in raw  # as UTF-8, not \u00c3\u009c...
    assert entries[1]["user_agent"] == "a\u00c0\u00afb\u00ed\u00a0\u0080"
    if entries[2]["status"] != 400:
        assert entries[2]["path"] == "/t\u00ff\u00c3?\u00e9"
    s.stop()
    with open(s.system_log, "rb") as f:
        for line in f.read().splitlines():
            json.loads(line.decode("utf-8"))
