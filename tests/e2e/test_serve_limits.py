"""The connection cap is the server's, not a worker's share; timeouts fire on
time; SIGTERM lets handshakes in progress finish; a worker that cannot start
says why on stderr."""
import os
import signal
import socket
import ssl
import subprocess
import threading
import time

from conftest import MTLS
from serve_helpers import *  # noqa: F401,F403 (fixtures)
from serve_helpers import SLOW, server_dir


def context(d):
    ctx = ssl.create_default_context(cafile=os.path.join(d, "serverca.crt"))
    ctx.load_cert_chain(os.path.join(d, "client.crt"), os.path.join(d, "client.key"))
    return ctx


def open_tls(port, d, timeout=10):
    raw = socket.create_connection(("127.0.0.1", port), timeout=timeout * SLOW)
    return context(d).wrap_socket(raw, server_hostname="localhost")


def get(c, close=False):
    c.sendall(b"GET /test HTTP/1.1\r\nHost: x\r\n" + (b"Connection: close\r\n" if close else b"")
              + b"\r\n")
    data = b""
    while b"Hello mtls" not in data:
        chunk = c.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def test_a_full_worker_does_not_strand_clients_below_the_cap(init_pki, serve, tmp_path):
    """Cap 4, 2 workers, 3 connections held: the kernel puts at least 2 on one worker,
    which was full with an even split (2 each); every new client must still be served."""
    d = server_dir(init_pki, tmp_path)
    s = serve(d, "--max-connections", "4", workers=2)
    held = [open_tls(s.port, d) for _ in range(3)]
    try:
        for c in held:
            assert b"Hello mtls" in get(c)
        # Each new connection has a new source port, so a new hash: ten are enough to
        # reach the fuller worker with near certainty.
        for i in range(10):
            c = open_tls(s.port, d, timeout=3)
            try:
                assert b"Hello mtls" in get(c, close=True), i
            finally:
                c.close()
    finally:
        for c in held:
            c.close()


def test_the_cap_is_said_and_so_is_room_again(init_pki, serve, tmp_path):
    d = server_dir(init_pki, tmp_path)
    s = serve(d, "--max-connections", "4", workers=2)
    held = [open_tls(s.port, d) for _ in range(4)]
    result = {}

    def fifth():
        try:
            with open_tls(s.port, d, timeout=20) as c:
                result["data"] = get(c, close=True)
        except (OSError, ssl.SSLError) as e:
            result["error"] = e

    t = threading.Thread(target=fifth)
    t.start()
    try:
        wait_for_text(s.system_log, "connection cap reached: 4 connections open")
        assert "data" not in result  # it waits in the kernel's queue
        held.pop().close()
        t.join(timeout=10 * SLOW)
        assert b"Hello mtls" in result.get("data", b""), result
        wait_for_text(s.system_log, "below the cap of 4 again")
    finally:
        for c in held:
            c.close()
        t.join()


def test_timeouts_fire_on_time(init_pki, serve, tmp_path):
    """Three silent connections opened 170 ms apart time out 2 s after each: with a
    sweep every 500 ms one of them was at least 300 ms late."""
    d = server_dir(init_pki, tmp_path)
    s = serve(d, "--handshake-timeout", "2", "--header-timeout", "30", "--idle-timeout", "30")
    late = []

    def silent():
        with socket.create_connection(("127.0.0.1", s.port), timeout=10 * SLOW) as c:
            start = time.monotonic()
            try:
                assert c.recv(10) == b""
            except ConnectionError:
                pass
            late.append(time.monotonic() - start - 2.0)

    threads = []
    for _ in range(3):
        threads.append(threading.Thread(target=silent))
        threads[-1].start()
        time.sleep(0.17)  # spread over the old sweep's period; not a wait for anything
    for t in threads:
        t.join()
    assert len(late) == 3
    assert all(-0.05 < x < 0.2 * SLOW for x in late), late


def test_idle_timeout_fires_on_time_after_requests(init_pki, serve, tmp_path):
    """The idle deadline moves with each request; it still fires on time after the
    last. Three connections 170 ms apart, as above (a sweep every 500 ms before)."""
    d = server_dir(init_pki, tmp_path)
    s = serve(d, "--idle-timeout", "2", "--handshake-timeout", "30", "--header-timeout", "30")
    late = []

    def keep_alive():
        with open_tls(s.port, d) as c:
            assert b"Hello mtls" in get(c)
            time.sleep(0.3)  # a second request moves the deadline later
            assert b"Hello mtls" in get(c)
            start = time.monotonic()
            try:
                assert c.recv(10) == b""
            except (ConnectionError, ssl.SSLError):
                pass
            late.append(time.monotonic() - start - 2.0)

    threads = []
    for _ in range(3):
        threads.append(threading.Thread(target=keep_alive))
        threads[-1].start()
        time.sleep(0.17)
    for t in threads:
        t.join()
    assert len(late) == 3
    assert all(-0.05 < x < 0.2 * SLOW for x in late), late


def test_sigterm_lets_a_handshake_in_progress_finish(init_pki, serve, tmp_path):
    d = server_dir(init_pki, tmp_path)
    s = serve(d, workers=1)
    idle = open_tls(s.port, d)
    assert b"Hello mtls" in get(idle)
    raw = socket.create_connection(("127.0.0.1", s.port), timeout=10 * SLOW)
    # Accepted (its handshake has started) before the signal: wait for the worker to see it.
    wait_until(lambda: b"Hello mtls" in get(open_tls(s.port, d), close=True), what="a served request")
    s.send_signal(signal.SIGTERM)  # it exits 0 once drained
    # The idle keep-alive connection is closed at once: the worker is draining now.
    idle.settimeout(10 * SLOW)
    assert idle.recv(10) == b""
    c = context(d).wrap_socket(raw, server_hostname="localhost")
    data = get(c)
    assert data.startswith(b"HTTP/1.1 200 OK") and b"Connection: close\r\n" in data, data
    c.close()
    idle.close()
    assert s.proc.wait(timeout=20 * SLOW) == 0


def test_a_worker_that_cannot_start_says_why_on_stderr(init_pki, tmp_path):
    """Too few file descriptors for the worker's event loop (but enough for the start)."""
    d = server_dir(init_pki, tmp_path)
    for n in range(8, 40):
        r = subprocess.run(["sh", "-c", f'ulimit -n {n} && exec "$0" "$@"', MTLS, "serve",
                            "--listen", "127.0.0.1:0", "--workers", "1"],
                           cwd=d, capture_output=True, text=True, timeout=30 * SLOW)
        if "cannot start worker" in r.stderr:
            break
    else:
        raise AssertionError("no descriptor limit made the worker fail: " + r.stderr)
    assert r.returncode != 0
    assert "unknown failure" not in r.stderr
    assert "error: cannot start worker 0: too many open files" in r.stderr, r.stderr
    # Said once, not once per restart.
    assert r.stderr.count("cannot start worker 0") == 1, r.stderr


def test_a_name_to_listen_on_binds_each_of_its_addresses(init_pki, serve, tmp_path):
    """localhost is ::1 and 127.0.0.1 on Debian: both are bound and named at start."""
    d = server_dir(init_pki, tmp_path)
    addrs = []
    for family, _, _, _, sockaddr in socket.getaddrinfo("localhost", 0, type=socket.SOCK_STREAM):
        if sockaddr[0] not in addrs:
            addrs.append(sockaddr[0])
    s = serve(d, "--listen", "localhost:0", listen=False)
    line = read_text(s.out).splitlines()[0]
    port = int(line.rsplit(":", 1)[1].rstrip("."))
    shown = " and ".join(f"[{a}]:{port}" if ":" in a else f"{a}:{port}" for a in addrs)
    assert line == f"HTTPS listening on {shown}....", (line, addrs)
    assert shown in read_text(s.system_log)
    for a in addrs:
        raw = socket.create_connection((a, port), timeout=10 * SLOW)
        with context(d).wrap_socket(raw, server_hostname="localhost") as c:
            assert b"Hello mtls" in get(c, close=True), a
