"""`mtls probe` against nginx with `ssl_verify_client on`: nginx completes the
handshake whatever the client sends and refuses at HTTP level (400 "No
required SSL certificate was sent", 400 "The SSL certificate error"). The probe
must call that a refusal of the client (exit 4) with advice, not "ok"."""
import json
import os
import shutil
import subprocess

import pytest

from conftest import free_port, run_mtls, wait_for_port
from probe_pki import make_pki

OK, THEY_REFUSED = 0, 4
NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)

pytestmark = pytest.mark.skipif(NGINX is None, reason="nginx is not installed")

CONF = """
daemon off;
master_process off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log info;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {d}/tmp;
    proxy_temp_path {d}/tmp;
    fastcgi_temp_path {d}/tmp;
    uwsgi_temp_path {d}/tmp;
    scgi_temp_path {d}/tmp;
    server {{
        listen 127.0.0.1:{port} ssl;
        ssl_certificate {d}/server.crt;
        ssl_certificate_key {d}/server.key;
        ssl_client_certificate {d}/clientca.crt;
        ssl_verify_client on;
        location / {{ return 200 "hello from nginx\\n"; }}
    }}
}}
"""


def start_nginx(d):
    """nginx on a port free a moment ago (nginx cannot listen on port 0 and say
    which port it got); when another process took it first, nginx exits and
    the next port is tried."""
    for _ in range(5):
        port = free_port()
        with open(os.path.join(d, "nginx.conf"), "w") as f:
            f.write(CONF.format(d=d, port=port))
        proc = subprocess.Popen([NGINX, "-p", d, "-c", os.path.join(d, "nginx.conf"), "-e",
                                 os.path.join(d, "error.log")],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_for_port(port, proc=proc)
            return proc, port
        except AssertionError:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
    raise AssertionError("nginx did not start: " + open(os.path.join(d, "error.log")).read())


@pytest.fixture(scope="module")
def nginx(tmp_path_factory):
    d = str(make_pki(tmp_path_factory.mktemp("probe-nginx")))
    os.makedirs(os.path.join(d, "tmp"))
    proc, port = start_nginx(d)
    try:
        yield d, port
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def probe(nginx, *args):
    d, port = nginx
    return run_mtls("probe", f"https://localhost:{port}/", "--cacert", "serverca.crt", *args,
                    cwd=d, timeout=30)


def test_no_certificate_is_a_refusal_with_advice(nginx):
    r = probe(nginx)
    assert r.returncode == THEY_REFUSED, r.stdout
    last = r.stdout.rstrip().splitlines()[-1]
    assert last.startswith("the server refused us: the server requires a client certificate and "
                           "you sent none (it answered 400 Bad Request"), last
    assert "No required SSL certificate was sent" in last
    assert "it accepts certificates issued by CN=client-example-ca" in last
    assert last.endswith("pass --cert FILE --key FILE")
    assert "did not ask for a client certificate" not in r.stdout


def test_certificate_from_another_ca_is_a_refusal(nginx):
    r = probe(nginx, "--cert", "stranger.crt", "--key", "stranger.key")
    assert r.returncode == THEY_REFUSED, r.stdout
    last = r.stdout.rstrip().splitlines()[-1]
    assert "your certificate" in last and "CN=other-ca" in last, last
    assert "The SSL certificate error" in last, last


def test_json_says_the_answer_refuses_the_certificate(nginx):
    r = probe(nginx, "--json")
    assert r.returncode == THEY_REFUSED
    out = json.loads(r.stdout)
    assert out["outcome"] == "http_refused"
    assert out["http"]["status"] == 400
    assert out["http"]["refuses_certificate"] is True
    assert out["exit_code"] == THEY_REFUSED


def test_accepted_certificate_is_ok_via_localhost(nginx):
    # nginx listens on 127.0.0.1 only; localhost may resolve to ::1 first.
    r = probe(nginx, "--cert", "client.crt", "--key", "client.key")
    assert r.returncode == OK, r.stdout
    assert "hello from nginx" in r.stdout
    assert r.stdout.rstrip().splitlines()[-1].startswith("ok: mutual TLS works")
