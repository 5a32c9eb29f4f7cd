"""--metrics-listen: Prometheus text at /metrics, counted by every worker in shared memory."""
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import urllib.error
import urllib.request

import pytest

from conftest import MTLS, free_port, run_mtls, wait_until
from serve_helpers import *  # noqa: F401,F403 (fixtures)
from serve_helpers import SLOW, read_text, server_dir, tls_error, tls_request, wait_for_text


def scrape(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10 * SLOW) as r:
        assert r.status == 200
        assert r.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
        return r.read().decode()


def samples(text):
    """{'name{labels}': value} of every sample line."""
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, value = line.rsplit(" ", 1)
            out[key] = float(value)
    return out


def value(port, key):
    return samples(scrape(port)).get(key, 0.0)


def wait_value(port, key, want):
    """Polls until key == want. A scrape that meets worker 0 while it is replaced (a
    reload's new generation under --user) may be refused or reset: polled again, as
    Prometheus scrapes again."""
    def current():
        try:
            return value(port, key)
        except (ConnectionError, urllib.error.URLError):
            return None
    wait_until(lambda: current() == want, timeout=10 * SLOW,
               what=f"{key} == {want} (now {current()})")


def promtool_check(text):
    if shutil.which("promtool") is None:
        pytest.skip("promtool is not installed (Debian package prometheus: "
                    "scripts/install-deps.sh test)")
    r = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr


def get(port, path, d):
    return tls_request(port, d, request=f"GET {path} HTTP/1.1\r\nHost: localhost\r\n"
                                        "Connection: close\r\n\r\n".encode())


def start(serve, d, *args, workers=1):
    """serve with --metrics-listen on 127.0.0.1 port 0: (the Server, the metrics port it printed)."""
    s = serve(d, "--metrics-listen", "127.0.0.1:0", *args, workers=workers)
    m = re.search(r"^metrics on http://127\.0\.0\.1:(\d+)/metrics$", read_text(s.out), re.M)
    assert m, read_text(s.out)
    wait_for_text(s.system_log, f"metrics: http://127.0.0.1:{m.group(1)}/metrics")
    return s, int(m.group(1))


def test_counts_requests_refusals_and_upstream_errors(init_pki, serve, tmp_path):
    d = server_dir(init_pki, tmp_path)
    down = free_port()  # nothing listens there (a port free a moment ago): the proxy answers 502
    s, m = start(serve, d, "--upstream", f"http://127.0.0.1:{down}")
    assert value(m, 'mtls_handshakes_total{result="ok"}') == 0
    assert b"Hello mtls" in get(s.port, "/test", d)
    assert b" 502 " in get(s.port, "/api/x", d)
    # A refused handshake without a certificate, and one with an expired certificate.
    ctx = ssl.create_default_context(cafile=os.path.join(d, "serverca.crt"))
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
        with socket.create_connection(("127.0.0.1", s.port), timeout=10) as raw:
            with ctx.wrap_socket(raw, server_hostname="localhost") as t:
                t.sendall(b"GET /test HTTP/1.1\r\nHost: localhost\r\n\r\n")
                assert t.recv(100) == b""
    assert tls_error(s.port, d, cert="expired.crt", key="expired.key")
    wait_value(m, 'mtls_handshake_rejections_total{reason="no_certificate"}', 1)
    wait_value(m, 'mtls_handshake_rejections_total{reason="expired"}', 1)
    wait_value(m, 'mtls_handshakes_total{result="rejected"}', 2)
    text = scrape(m)
    v = samples(text)
    assert v['mtls_handshakes_total{result="ok"}'] == 2
    assert v['mtls_requests_total{route="/test",status="200"}'] == 1
    assert v['mtls_requests_total{route="/*",status="502"}'] == 1
    assert v['mtls_upstream_errors_total{status="502",cause="connect"}'] == 1
    assert v['mtls_request_duration_seconds_count{route="/test"}'] == 1
    assert v['mtls_request_duration_seconds_bucket{route="/test",le="+Inf"}'] == 1
    assert v['mtls_reloads_total{outcome="ok"}'] == 0
    assert re.search(r'^mtls_build_info\{version="[^"]+",openssl="3\.[^"]+"\} 1$', text, re.M), text
    promtool_check(text)


def test_a_404_is_counted_without_a_route(init_pki, serve, tmp_path):
    d = server_dir(init_pki, tmp_path)
    s, m = start(serve, d)
    assert b" 404 " in get(s.port, "/no/such/page", d)
    wait_value(m, 'mtls_requests_total{route="none",status="404"}', 1)
    # The raw path never becomes a label.
    assert "/no/such/page" not in scrape(m)


def test_counts_are_summed_over_workers_and_survive_a_restart(init_pki, serve, tmp_path):
    d = server_dir(init_pki, tmp_path)
    s, m = start(serve, d, workers=2)
    # 20 connections: SO_REUSEPORT spreads them over both workers.
    for _ in range(20):
        assert b"Hello mtls" in get(s.port, "/test", d)
    key = 'mtls_requests_total{route="/test",status="200"}'
    wait_value(m, key, 20)
    assert value(m, 'mtls_handshakes_total{result="ok"}') == 20
    children = f"/proc/{s.proc.pid}/task/{s.proc.pid}/children"
    if not os.path.exists(children):
        pytest.skip("no /proc children list on this kernel")
    pids = [int(p) for p in read_text(children).split()]
    assert len(pids) == 2
    for pid in pids:  # worker 0 (which serves /metrics) and worker 1 alike
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: pid not in [int(p) for p in read_text(children).split()]
                   and len(read_text(children).split()) == 2, timeout=15 * SLOW,
                   what="the worker restarted")
    wait_until(lambda: value(m, key) == 20, timeout=15 * SLOW, what="/metrics served again")
    assert b"Hello mtls" in get(s.port, "/test", d)
    wait_value(m, key, 21)
    # A reload: a new generation of counts would start from 0; ours go on.
    s.proc.send_signal(signal.SIGHUP)
    wait_value(m, 'mtls_reloads_total{outcome="ok"}', 1)
    assert value(m, key) == 21


def test_gauges_match_the_certificates(init_pki, serve, tmp_path):
    d = server_dir(init_pki, tmp_path)
    s, m = start(serve, d)
    v = samples(scrape(m))

    def not_after(name):
        r = subprocess.run(["openssl", "x509", "-noout", "-enddate", "-in", os.path.join(d, name)],
                           capture_output=True, text=True, check=True)
        return ssl.cert_time_to_seconds(r.stdout.strip().split("=", 1)[1])

    assert v['mtls_server_certificate_not_after_seconds{subject="CN=localhost"}'] == \
        not_after("server.crt")
    cas = {k: x for k, x in v.items() if k.startswith("mtls_client_ca_not_after_seconds{")}
    assert list(cas.values()) == [not_after("clientca.crt")], cas
    assert v["mtls_connections_open"] == 0


def test_crl_next_update_is_a_gauge(init_pki, serve, tmp_path):
    d = server_dir(init_pki, tmp_path)
    r = run_mtls("crl", "create", "--ca", "clientca", "--out", "ca.crl", cwd=d)
    assert r.returncode == 0, r.stderr
    s, m = start(serve, d, "--crl", "ca.crl")
    text = scrape(m)
    got = [line for line in text.splitlines() if line.startswith("mtls_crl_next_update_seconds{")]
    assert len(got) == 1, text
    r = subprocess.run(["openssl", "crl", "-noout", "-nextupdate", "-in", os.path.join(d, "ca.crl")],
                       capture_output=True, text=True, check=True)
    assert float(got[0].rsplit(" ", 1)[1]) == ssl.cert_time_to_seconds(
        r.stdout.strip().split("=", 1)[1])
    promtool_check(text)


def test_a_public_metrics_address_needs_the_explicit_flag(init_pki, tmp_path):
    d = server_dir(init_pki, tmp_path)
    r = run_mtls("serve", "--listen", "127.0.0.1:0", "--metrics-listen", "0.0.0.0:0", cwd=d,
                 timeout=30)
    assert r.returncode != 0
    assert "not a loopback address" in r.stderr and "--metrics-listen-public" in r.stderr, r.stderr


def test_without_the_flag_nothing_is_served(init_pki, serve, tmp_path):
    d = server_dir(init_pki, tmp_path)
    s = serve(d)
    assert "metrics:" not in read_text(s.system_log)
    assert MTLS and "--metrics-listen" in run_mtls("serve", "--help").stdout


def test_check_reports_a_public_metrics_address(init_pki, tmp_path):
    d = server_dir(init_pki, tmp_path)
    r = run_mtls("serve", "--check", "--metrics-listen", "10.1.2.3:9100", cwd=d)
    assert r.returncode == 2 and "not a loopback address" in r.stderr, r.stderr
    r = run_mtls("serve", "--check", "--metrics-listen", "10.1.2.3:9100",
                 "--metrics-listen-public", cwd=d)
    assert r.returncode == 0, r.stderr


def test_thread_workers_sum_into_the_same_counts(init_pki, serve, tmp_path):
    d = server_dir(init_pki, tmp_path)
    s, m = start(serve, d, "--worker-model", "thread", workers=2)
    for _ in range(10):
        assert b" 200 OK" in get(s.port, "/whoami", d)
    wait_value(m, 'mtls_requests_total{route="/whoami",status="200"}', 10)
    promtool_check(scrape(m))


def test_resumed_handshakes_and_denials_are_counted(init_pki, serve, tmp_path):
    d = server_dir(init_pki, tmp_path)
    s, m = start(serve, d, "--allow", "cn=nobody-has-this-name")
    ctx = ssl.create_default_context(cafile=os.path.join(d, "serverca.crt"))
    ctx.load_cert_chain(os.path.join(d, "client.crt"), os.path.join(d, "client.key"))

    def once(session=None):
        raw = socket.create_connection(("127.0.0.1", s.port), timeout=10 * SLOW)
        with ctx.wrap_socket(raw, server_hostname="localhost", session=session) as c:
            c.sendall(b"GET /test HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            data = b""
            while True:
                chunk = c.recv(65536)
                if not chunk:
                    return c.session_reused, c.session, data
                data += chunk

    reused, session, data = once()
    assert not reused and b" 403 " in data
    reused, _, data = once(session)
    assert reused and b" 403 " in data
    wait_value(m, "mtls_handshakes_resumed_total", 1)
    wait_value(m, 'mtls_authz_denials_total{mode="enforced"}', 2)
    # Counted under the route it was denied on.
    assert value(m, 'mtls_requests_total{route="/test",status="403"}') == 2


def test_routes_of_a_configuration_file_are_labels_once(init_pki, serve, tmp_path):
    d = server_dir(init_pki, tmp_path)
    # A file route with the built-in /test's own pattern, and a prefix route.
    with open(os.path.join(d, "mtls.yaml"), "w") as f:
        f.write("routes:\n"
                "  - path: /test\n    exact: true\n    handler: test\n"
                "  - path: /api\n    handler: whoami\n")
    s, m = start(serve, d, "--config", "mtls.yaml")
    assert b"Hello mtls" in get(s.port, "/test", d)
    assert b" 200 " in get(s.port, "/api/v1/users/42", d)
    wait_value(m, 'mtls_requests_total{route="/api*",status="200"}', 1)
    text = scrape(m)
    assert samples(text)['mtls_requests_total{route="/test",status="200"}'] == 1
    assert text.count('mtls_request_duration_seconds_count{route="/test"}') == 1
    assert "/api/v1" not in text
    promtool_check(text)


@pytest.mark.skipif(os.geteuid() != 0, reason="--user needs root")
def test_counts_survive_new_generations_under_user(init_pki, serve, tmp_path):
    d = server_dir(init_pki, tmp_path)
    s, m = start(serve, d, "--user", "nobody", workers=2)
    for _ in range(5):
        assert b"Hello mtls" in get(s.port, "/test", d)
    key = 'mtls_requests_total{route="/test",status="200"}'
    wait_value(m, key, 5)
    # SIGHUP under --user: a new generation of workers in other slots; the old one drains.
    s.proc.send_signal(signal.SIGHUP)
    wait_value(m, 'mtls_reloads_total{outcome="ok"}', 1)
    wait_for_text(s.system_log, "SIGHUP: reloaded")
    for _ in range(5):
        assert b"Hello mtls" in get(s.port, "/test", d)
    wait_value(m, key, 10)
    assert value(m, 'mtls_handshakes_total{result="ok"}') == 10
