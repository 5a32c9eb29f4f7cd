"""`mtls bench`, the mTLS load generator: exact counts for bounded runs, errors
classified by kind (connect, handshake with the alert name, HTTP status,
timeout), the --json shape, and the server's CPU read from /proc.
Correctness only: timing targets live in bench/, never here."""
import json
import os
import signal
import socket
import subprocess

import pytest

from conftest import MTLS, free_port, run_mtls, wait_for_port, wait_until

HERE = os.path.dirname(os.path.abspath(__file__))
PEER = os.path.join(HERE, "bench_peer.py")


def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_pki(d, name):
    """A P-256 CA in d/NAME-ca.*, a server cert for localhost/127.0.0.1 and a client cert."""
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    openssl("req", "-x509", *ec, "-keyout", f"{name}-ca.key", "-out", f"{name}-ca.crt",
            "-days", "2", "-subj", f"/CN={name} CA", "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)
    for who, ext in (("server", "subjectAltName=DNS:localhost,IP:127.0.0.1\n"
                                "extendedKeyUsage=serverAuth\n"),
                     ("client", "extendedKeyUsage=clientAuth\n")):
        with open(os.path.join(d, f"{name}-{who}.ext"), "w") as f:
            f.write(ext)
        openssl("req", *ec, "-keyout", f"{name}-{who}.key", "-out", f"{name}-{who}.csr",
                "-subj", f"/CN={name}-{who}", cwd=d)
        openssl("x509", "-req", "-in", f"{name}-{who}.csr", "-CA", f"{name}-ca.crt", "-CAkey",
                f"{name}-ca.key", "-CAcreateserial", "-days", "2", "-out", f"{name}-{who}.crt",
                "-extfile", f"{name}-{who}.ext", cwd=d)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("bench-pki"))
    make_pki(d, "good")
    make_pki(d, "other")
    return d


def client_args(pki, who="good", ca="good"):
    return ["--cacert", os.path.join(pki, f"{ca}-ca.crt"),
            "--cert", os.path.join(pki, f"{who}-client.crt"),
            "--key", os.path.join(pki, f"{who}-client.key")]


class Peer:
    def __init__(self, proc, port):
        self.proc = proc
        self.port = port
        self.pid = proc.pid

    def url(self, path="/test", host="127.0.0.1"):
        return f"https://{host}:{self.port}{path}"

    def stop(self):
        """Stops the server and returns what it counted."""
        self.proc.send_signal(signal.SIGTERM)
        out, _ = self.proc.communicate(timeout=10)
        return json.loads(out.strip().splitlines()[-1])


@pytest.fixture
def peer(pki):
    """The counting keep-alive server of bench_peer.py, trusting the 'good' CA."""
    port = free_port()
    proc = subprocess.Popen(["/usr/bin/python3", PEER,
                             str(port), os.path.join(pki, "good-server.crt"),
                             os.path.join(pki, "good-server.key"),
                             os.path.join(pki, "good-ca.crt")],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        wait_for_port(port, proc=proc)
        yield Peer(proc, port)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.fixture
def s_server(pki):
    """openssl s_server that verifies client certificates against the 'good' CA and
    fails the handshake for any other (-verify_return_error)."""
    procs = []

    def start(*extra):
        port = free_port()
        proc = subprocess.Popen(["openssl", "s_server", "-accept", f"127.0.0.1:{port}",
                                 "-cert", os.path.join(pki, "good-server.crt"),
                                 "-key", os.path.join(pki, "good-server.key"),
                                 "-CAfile", os.path.join(pki, "good-ca.crt"),
                                 "-Verify", "1", "-verify_return_error", "-www", "-quiet",
                                 *extra],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(proc)
        wait_for_port(port, proc=proc)
        return port

    yield start
    for proc in procs:
        proc.kill()
        proc.wait()


def bench(*args, timeout=60):
    r = run_mtls("bench", *args, "--json", timeout=timeout)
    assert r.returncode in (0, 1), r.stderr
    return r, json.loads(r.stdout)


def test_full_handshake_per_request_counts_are_exact(pki, peer):
    r, out = bench(peer.url(), *client_args(pki), "--connections", "4",
                   "--requests-per-conn", "1", "--requests", "60")
    assert r.returncode == 0, r.stderr
    assert out["handshakes"] == 60
    assert out["handshakes_resumed"] == 0
    assert out["requests"] == 60
    assert out["responses"] == 60
    assert out["errors"]["total"] == 0
    assert out["latency_us"]["count"] == 60
    seen = peer.stop()
    assert seen["connections"] == 60
    assert seen["requests"] == 60


def test_keep_alive_reuses_each_connection(pki, peer):
    r, out = bench(peer.url(), *client_args(pki), "-c", "3", "--requests", "300")
    assert r.returncode == 0, r.stderr
    assert out["mode"] == "keep-alive"
    assert out["handshakes"] == 3
    assert out["requests"] == 300
    seen = peer.stop()
    assert seen == {"connections": 3, "requests": 300, "max_open": 3, "resumed": 0}


@pytest.mark.parametrize("total, connections", [(50, 10), (23, 5)])
def test_requests_per_connection_bounds_each_connection(pki, peer, total, connections):
    # A connection reserves its requests when it connects: N requests make
    # exactly ceil(N / 5) connections, whatever the concurrency.
    r, out = bench(peer.url(), *client_args(pki), "-c", "3", "--requests-per-conn", "5",
                   "--requests", str(total))
    assert r.returncode == 0, r.stderr
    assert out["handshakes"] == connections
    assert out["requests"] == total
    seen = peer.stop()
    assert (seen["connections"], seen["requests"]) == (connections, total)


def test_resume_reuses_the_session_ticket(pki, peer):
    # localhost: the name is checked against the server certificate's DNS name.
    r, out = bench(peer.url(host="localhost"), *client_args(pki), "-c", "1", "--resume",
                   "--requests-per-conn", "1", "--requests", "20")
    assert r.returncode == 0, r.stderr
    assert out["handshakes"] == 20
    # The first handshake is a full one; each later one resumes the newest ticket.
    assert out["handshakes_resumed"] == 19
    assert peer.stop()["resumed"] == 19


def test_without_resume_every_handshake_is_full(pki, peer):
    r, out = bench(peer.url(), *client_args(pki), "-c", "1", "--requests-per-conn", "1",
                   "--requests", "5")
    assert out["handshakes_resumed"] == 0
    assert peer.stop()["resumed"] == 0


@pytest.mark.parametrize("version", ["-tls1_3", "-tls1_2"])
def test_rejected_client_certificate_is_a_handshake_error_with_the_alert(pki, s_server, version):
    port = s_server(version)
    r, out = bench(f"https://127.0.0.1:{port}/", *client_args(pki, who="other"), "-c", "1",
                   "--requests-per-conn", "1", "--requests", "5")
    assert r.returncode == 1
    assert out["handshakes"] == 0
    assert out["requests"] == 0
    assert out["errors"]["handshake"] == 5
    assert out["errors"]["total"] == 5
    assert out["errors"]["handshake_reasons"] == {"unknown CA": 5}


def test_accepted_client_certificate_against_s_server(pki, s_server):
    port = s_server()
    r, out = bench(f"https://127.0.0.1:{port}/", *client_args(pki), "-c", "1",
                   "--requests-per-conn", "1", "--requests", "5")
    assert r.returncode == 0, r.stderr
    assert (out["handshakes"], out["requests"], out["errors"]["total"]) == (5, 5, 0)


def test_untrusted_server_certificate_is_a_local_handshake_error(pki, peer):
    r, out = bench(peer.url(), *client_args(pki, ca="other"), "-c", "1", "--requests", "3")
    assert r.returncode == 1
    assert out["errors"]["handshake"] == 3
    (reason,) = out["errors"]["handshake_reasons"]
    assert reason.startswith("local: server certificate: ")
    assert peer.stop()["requests"] == 0


def test_status_other_than_200_is_counted_by_code(pki, peer):
    r, out = bench(peer.url("/forbidden"), *client_args(pki), "-c", "2", "--requests", "40")
    assert r.returncode == 1
    assert out["requests"] == 0
    assert out["responses"] == 40
    assert out["errors"]["status"] == 40
    assert out["errors"]["statuses"] == {"403": 40}


def test_nothing_listening_is_a_connect_error(pki):
    port = free_port()
    r, out = bench(f"https://127.0.0.1:{port}/", *client_args(pki), "-c", "2",
                   "--requests", "4")
    assert r.returncode == 1
    assert out["errors"]["connect"] == 4
    assert out["errors"]["total"] == 4
    assert out["handshakes"] == 0


def test_silent_server_is_a_timeout(pki):
    # The kernel completes the TCP handshake; nobody ever speaks TLS.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(16)
        port = s.getsockname()[1]
        r, out = bench(f"https://127.0.0.1:{port}/", *client_args(pki), "-c", "2",
                       "--requests", "2", "--timeout", "0.3")
    assert r.returncode == 1
    assert out["errors"]["timeout"] == 2
    assert out["errors"]["total"] == 2


def test_idle_connections_are_held_open(pki, peer):
    r, out = bench(peer.url(), *client_args(pki), "-c", "20", "--idle", "--duration", "1",
                   "--server-pid", str(peer.pid))
    assert r.returncode == 0, r.stderr
    assert out["established"] == 20
    assert out["handshakes"] == 20
    assert out["requests"] == 0
    assert out["server"]["rss_kb_start"] > 0
    seen = peer.stop()
    assert seen["max_open"] == 20
    assert seen["requests"] == 0


def test_server_pid_reads_cpu_per_request_and_handshake(pki, peer):
    r, out = bench(peer.url(), *client_args(pki), "-c", "2", "--duration", "1",
                   "--requests-per-conn", "10", "-p", str(peer.pid), "-p", str(peer.pid))
    assert r.returncode == 0, r.stderr
    server = out["server"]
    assert server["pids"] == [peer.pid, peer.pid]
    # A Python server kept busy for a second uses CPU; /proc counts in 10 ms ticks.
    assert server["cpu_s"] > 0.05
    assert server["cpu_us_per_request"] == pytest.approx(
        server["cpu_s"] * 1e6 / out["responses"], rel=0.01)
    assert server["cpu_us_per_handshake"] == pytest.approx(
        server["cpu_s"] * 1e6 / out["handshakes"], rel=0.01)
    assert server["rss_kb_end"] > 0


def test_json_shape(pki, peer):
    _, out = bench(peer.url(), *client_args(pki), "-c", "1", "--requests", "3")
    for key in ("url", "mode", "connections", "requests_per_conn", "resume", "elapsed_s",
                "handshakes", "handshakes_resumed", "requests", "responses", "handshakes_per_s",
                "requests_per_s", "established", "errors", "latency_us", "handshake_latency_us",
                "client_cpu_s"):
        assert key in out, key
    assert set(out["errors"]) == {"total", "connect", "handshake", "status", "timeout", "closed",
                                  "protocol", "handshake_reasons", "statuses"}
    assert set(out["latency_us"]) == {"count", "p50", "p99", "p99_9", "max", "mean"}
    assert out["latency_us"]["p50"] <= out["latency_us"]["p99"] <= out["latency_us"]["max"]
    assert "server" not in out


def test_human_report(pki, peer):
    r = run_mtls("bench", peer.url(), *client_args(pki), "-c", "1", "--requests", "3",
                 "-p", str(peer.pid))
    assert r.returncode == 0, r.stderr
    assert "requests       3 " in r.stdout
    assert "server CPU" in r.stdout
    assert "us per request" in r.stdout


def test_unknown_server_pid_fails(pki, peer):
    r = run_mtls("bench", peer.url(), *client_args(pki), "-p", "999999999", "-d", "0.2")
    assert r.returncode == 1
    assert "no process with pid 999999999" in r.stderr


@pytest.mark.parametrize("args, message", [
    (["https://127.0.0.1:1/"], "--cacert, --cert and --key are required"),
    (["https://127.0.0.1:1/", "--idle", "--requests", "3"], "--idle sends no requests"),
    (["https://127.0.0.1:1/", "--duration", "soon"], "--duration needs a positive number"),
    (["https://127.0.0.1:1/", "--connections", "0"], "--connections must be between"),
])
def test_usage_errors(pki, args, message):
    extra = client_args(pki) if "required" not in message else []
    r = run_mtls("bench", *args, *extra)
    assert r.returncode == 2
    assert message in r.stderr
    assert "mtls bench --help" in r.stderr


@pytest.mark.parametrize("url, message", [
    ("http://127.0.0.1:1/", "use https://"),
    ("https://127.0.0.1:99999/", "has a bad port"),
    ("https://no-such-host.invalid/", "cannot resolve 'no-such-host.invalid'"),
])
def test_bad_url_fails_with_a_reason(pki, url, message):
    r = run_mtls("bench", url, *client_args(pki), "-d", "0.2")
    assert r.returncode == 1
    assert message in r.stderr


def test_bad_key_file_fails_with_its_name(pki, tmp_path):
    bad = tmp_path / "bad.key"
    bad.write_text("not a key\n")
    args = client_args(pki)
    args[-1] = str(bad)
    r = run_mtls("bench", "https://127.0.0.1:1/", *args, "-d", "0.2")
    assert r.returncode == 1
    assert f"'{bad}' is not a PEM private key" in r.stderr


def test_encrypted_key_takes_the_password_and_never_prompts(pki, peer, tmp_path):
    # bench reads keys as every other command does: --password-file or
    # $MTLS_KEY_PASSWORD, never OpenSSL's "Enter PEM pass phrase:" prompt.
    enc = tmp_path / "client-enc.key"
    openssl("pkcs8", "-topk8", "-v2", "aes-256-cbc", "-in", os.path.join(pki, "good-client.key"),
            "-out", str(enc), "-passout", "pass:s3cret", cwd=pki)
    pw = tmp_path / "pw"
    pw.write_text("s3cret\n")
    args = client_args(pki)
    args[-1] = str(enc)
    common = [peer.url(), *args, "-c", "1", "--requests", "3", "--json"]
    env = dict(os.environ, MTLS_KEY_PASSWORD="s3cret")
    r = subprocess.run([MTLS, "bench", *common], env=env, stdin=subprocess.DEVNULL,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["requests"] == 3
    r = run_mtls("bench", *common, "--password-file", str(pw), timeout=60)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["requests"] == 3
    env.pop("MTLS_KEY_PASSWORD")
    r = subprocess.run([MTLS, "bench", *common], env=env, stdin=subprocess.DEVNULL,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    assert "pass phrase" not in r.stderr + r.stdout
    assert str(enc) in r.stderr and "password" in r.stderr, r.stderr


@pytest.fixture
def mtls_serve(tmp_path):
    """`mtls serve` with 1 worker on the PKI of `mtls init`, in its own folder."""
    d = tmp_path / "serve"
    r = run_mtls("init", "--dir", str(d))
    assert r.returncode == 0, r.stderr
    port = free_port()
    proc = subprocess.Popen([MTLS, "serve", "--listen", f"127.0.0.1:{port}", "--workers", "1"],
                            cwd=d, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_port(port, proc=proc)
        yield d, port, proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_localhost_reaches_a_server_on_127_0_0_1_only(mtls_serve):
    # Debian's /etc/hosts gives localhost ::1 first: bench must try the next
    # address (127.0.0.1) when ::1 refuses, as curl does, and keep it.
    d, port, proc = mtls_serve
    r, out = bench(f"https://localhost:{port}/test", "--cacert", d / "serverca.crt",
                   "--cert", d / "client.crt", "--key", d / "client.key", "-c", "2",
                   "--requests", "10")
    assert r.returncode == 0, r.stderr
    assert (out["requests"], out["errors"]["total"]) == (10, 0)


def test_against_mtls_serve_resumption_and_keep_alive(mtls_serve):
    d, port, proc = mtls_serve
    args = [f"https://localhost:{port}/test", "--cacert", d / "serverca.crt",
            "--cert", d / "client.crt", "--key", d / "client.key", "-p", proc.pid]
    r, out = bench(*args, "-c", "1", "--resume", "--requests-per-conn", "1", "--requests", "20")
    assert r.returncode == 0, r.stderr
    assert (out["handshakes"], out["requests"], out["errors"]["total"]) == (20, 20, 0)
    assert out["handshakes_resumed"] == 19
    r, out = bench(*args, "-c", "2", "--requests", "100")
    assert r.returncode == 0, r.stderr
    assert (out["handshakes"], out["requests"], out["errors"]["total"]) == (2, 100, 0)
    # Every request, resumed or not, is logged with the client's identity.
    log = d / "access.log"
    wait_until(lambda: log.exists() and log.read_text().count("CN=localclient") == 120,
               what="120 access-log lines naming the client")
