"""Signals: SIGTERM/SIGINT drain in-flight requests and exit 0, SIGUSR1
reopens the log files (logrotate), a worker that dies is replaced; for both
worker models."""
import os
import signal
import socket
import ssl

import pytest

from serve_helpers import *  # noqa: F401,F403 (fixtures)
from conftest import MTLS
from serve_helpers import SLOW, server_dir


def open_tls(port, d):
    ctx = ssl.create_default_context(cafile=os.path.join(d, "serverca.crt"))
    ctx.load_cert_chain(os.path.join(d, "client.crt"), os.path.join(d, "client.key"))
    raw = socket.create_connection(("127.0.0.1", port), timeout=10 * SLOW)
    return ctx.wrap_socket(raw, server_hostname="localhost")


def server_has_read(port, client):
    """True once the server's end of client's connection has an empty receive
    queue, i.e. the server has read all that the client sent (/proc/net/tcp)."""
    peer = client.getsockname()[1]
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            local, remote, queues = fields[1], fields[2], fields[4]
            if int(local.split(":")[1], 16) == port and int(remote.split(":")[1], 16) == peer:
                return int(queues.split(":")[1], 16) == 0
    return False


def read_all(c):
    data = b""
    try:
        while True:
            chunk = c.recv(65536)
            if not chunk:
                return data
            data += chunk
    except (ssl.SSLError, ConnectionError):
        return data


@pytest.mark.parametrize("model", ["process", "thread"])
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_stop_signals_drain_in_flight_requests(model, sig, init_pki, serve, tmp_path):
    d = server_dir(init_pki, tmp_path)
    s = serve(d, "--worker-model", model, workers=2)
    busy, idle = open_tls(s.port, d), open_tls(s.port, d)
    idle.sendall(b"GET /test HTTP/1.1\r\nHost: x\r\n\r\n")
    assert b"Hello mtls" in idle.recv(65536)
    busy.sendall(b"GET /test HTTP/1.1\r\nHost: x\r\n")  # headers not finished yet
    # The request counts as started once the server has read those bytes.
    wait_until(lambda: server_has_read(s.port, busy), what="the server to read the partial request")
    s.send_signal(sig)  # the exit 0 that follows is expected
    wait_for_text(s.system_log, "draining in-flight requests")
    assert read_all(idle) == b""  # idle keep-alive connections are closed at once
    busy.sendall(b"\r\n")
    data = read_all(busy)
    assert data.startswith(b"HTTP/1.1 200 OK") and b"Connection: close\r\n" in data, data
    busy.close()
    idle.close()
    # Drained, it exits 0 by itself: no second signal.
    assert s.proc.wait(timeout=20 * SLOW) == 0
    assert s.stop() == 0
    assert "HTTPS stop" in read_text(s.system_log)
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", s.port), timeout=2)
    busy.close()
    idle.close()


@pytest.mark.parametrize("model", ["process", "thread"])
def test_sigusr1_reopens_the_logs(model, init_pki, serve, tmp_path):
    d = server_dir(init_pki, tmp_path)
    s = serve(d, "--worker-model", model, workers=2)
    tls_request(s.port, d, b"GET /test?before HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    wait_for_text(s.access_log, "/test?before")
    os.rename(s.access_log, s.access_log + ".1")
    os.rename(s.system_log, s.system_log + ".1")
    s.proc.send_signal(signal.SIGUSR1)
    wait_for_text(s.system_log, "log files reopened")
    # Every worker got the signal: enough requests to reach both.
    for i in range(6):
        tls_request(s.port, d, b"GET /test?after HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    wait_until(lambda: read_text(s.access_log).count("/test?after") == 6, what="6 lines")
    assert "/test?after" not in read_text(s.access_log + ".1")
    assert "/test?before" not in read_text(s.access_log)


def test_a_dead_worker_is_replaced(init_pki, serve, tmp_path):
    d = server_dir(init_pki, tmp_path)
    s = serve(d, workers=1)
    children = f"/proc/{s.proc.pid}/task/{s.proc.pid}/children"
    if not os.path.exists(children):
        pytest.skip("no /proc children list on this kernel")
    wait_until(lambda: read_text(children).split(), what="a worker process")
    first = int(read_text(children).split()[0])
    os.kill(first, signal.SIGKILL)
    wait_for_text(s.system_log, "was killed by signal 9; restarting")
    wait_until(lambda: read_text(children).split() and
               int(read_text(children).split()[0]) != first, what="a new worker")
    assert b"Hello mtls" in tls_request(s.port, d)


def worker_pids(s):
    children = f"/proc/{s.proc.pid}/task/{s.proc.pid}/children"
    if not os.path.exists(children):
        pytest.skip("no /proc children list on this kernel")
    wait_until(lambda: read_text(children).split(), what="a worker process")
    return [int(p) for p in read_text(children).split()]


def test_a_worker_started_after_sigusr1_writes_the_new_logs(init_pki, serve, tmp_path):
    """The main process reopens the access log too: a worker it starts later inherits it."""
    d = server_dir(init_pki, tmp_path)
    s = serve(d, workers=1)
    first = worker_pids(s)[0]
    os.rename(s.access_log, s.access_log + ".1")
    os.rename(s.system_log, s.system_log + ".1")
    s.proc.send_signal(signal.SIGUSR1)
    wait_for_text(s.system_log, "log files reopened")
    os.kill(first, signal.SIGKILL)
    wait_for_text(s.system_log, "was killed by signal 9; restarting")
    wait_until(lambda: worker_pids(s) and worker_pids(s)[0] != first, what="a new worker")
    tls_request(s.port, d, b"GET /test?respawned HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    wait_for_text(s.access_log, "/test?respawned")
    assert "/test?respawned" not in read_text(s.access_log + ".1")


@pytest.mark.parametrize("model", ["process", "thread"])
def test_lost_access_log_lines_are_said_and_counted(model, init_pki, serve, tmp_path):
    """A full disk (/dev/full): said once in the system log, lines counted, recovery said."""
    d = server_dir(init_pki, tmp_path)
    os.symlink("/dev/full", os.path.join(d, "access.log"))
    s = serve(d, "--worker-model", model, workers=1)
    for i in range(5):
        tls_request(s.port, d, b"GET /test HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    log = wait_for_text(s.system_log, "cannot write the access log 'access.log': No space left")
    # Rate limited: one line for five lost ones (the next would come a minute later).
    assert log.count("cannot write the access log") == 1, log
    os.unlink(os.path.join(d, "access.log"))
    s.proc.send_signal(signal.SIGUSR1)
    wait_for_text(s.system_log, "log files reopened")
    # A worker reopens on its own signal (process model): retry until its line lands.
    backs = []

    def written():
        tls_request(s.port, d, b"GET /test?back HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        backs.append(1)
        return "/test?back" in read_text(s.access_log)
    wait_until(written, what="a line in the new access log")
    log = wait_for_text(s.system_log, "is written again; ")
    lost = int(log.split("is written again; ")[1].split(" ")[0])
    # A line is written once its answer is sent, so the last of the five may land after the
    # reopen, in the new file: each of the five is either counted as lost or written there.
    # The same goes for the probes sent until a line landed in the new file.
    def landed():
        lines = read_text(s.access_log).splitlines()
        return sum(1 for line in lines if "GET /test" in line)
    assert lost >= 1, log
    wait_until(lambda: lost + landed() == 5 + len(backs),
               what=f"{5 + len(backs)} requests each lost ({lost}) or in the new log")
    assert lost + landed() == 5 + len(backs)


@pytest.mark.parametrize("model", ["process", "thread"])
def test_sighup_as_soon_as_it_says_it_listens(model, init_pki, tmp_path):
    """A reload sent the moment the 'listening' line appears (a test, or systemd) is taken as
    a reload, never as SIGHUP's default action, which ends the process."""
    import subprocess
    import time
    d = server_dir(init_pki, tmp_path)
    for i in range(5):
        p = subprocess.Popen([MTLS, "serve", "--listen", "127.0.0.1:0", "--worker-model", model,
                              "--workers", "1"], cwd=d, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
        try:
            line = p.stdout.readline()
            assert "HTTPS listening on" in line, p.stderr.read()
            p.send_signal(signal.SIGHUP)
            wait_until(lambda: "SIGHUP: reloaded" in read_text(os.path.join(d, "system.log"))
                       .split("HTTPS start")[-1] or p.poll() is not None,
                       what="the reload")
            assert p.poll() is None, f"run {i}: mtls serve died of SIGHUP ({p.returncode})"
        finally:
            p.send_signal(signal.SIGTERM)
            p.communicate(timeout=20)
        assert p.returncode == 0
