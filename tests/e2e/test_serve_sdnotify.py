"""Issue 12: systemd Type=notify without libsystemd: a fake NOTIFY_SOCKET (an
AF_UNIX datagram socket, by path or abstract '@name') receives READY=1 when
the server serves, RELOADING=1 (with MONOTONIC_USEC) then READY=1 around a
SIGHUP, and STOPPING=1 when it drains, in that order."""
import os
import re
import signal
import socket
import tempfile
import time

import pytest

from serve_helpers import *  # noqa: F401,F403 (fixtures)
from serve_helpers import SLOW, read_text, server_dir, wait_for_text


@pytest.fixture(params=["path", "abstract"])
def notify_socket(request, monkeypatch):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    tmp = None
    if request.param == "path":
        tmp = tempfile.mkdtemp(prefix="mtls-notify-")  # short: sun_path holds 108 bytes
        name = os.path.join(tmp, "notify")
        sock.bind(name)
    else:
        name = f"@mtls-test-notify-{os.getpid()}-{id(sock)}"
        sock.bind("\0" + name[1:])
    sock.settimeout(15 * SLOW)
    monkeypatch.setenv("NOTIFY_SOCKET", name)
    yield sock
    sock.close()
    if tmp:
        os.unlink(os.path.join(tmp, "notify"))
        os.rmdir(tmp)


def fields(msg):
    return dict(line.split("=", 1) for line in msg.decode().split("\n") if line)


def next_msg(sock):
    return fields(sock.recv(4096))


@pytest.mark.parametrize("model", ["process", "thread"])
def test_ready_reloading_ready_stopping(model, notify_socket, init_pki, tmp_path, serve):
    d = server_dir(init_pki, tmp_path)
    s = serve(d, "--worker-model", model, workers=2)
    m = next_msg(notify_socket)
    assert m["READY"] == "1"

    before = time.monotonic()
    s.proc.send_signal(signal.SIGHUP)
    m = next_msg(notify_socket)
    assert m["RELOADING"] == "1"
    # CLOCK_MONOTONIC in microseconds, as sd_notify(3) asks for Type=notify-reload.
    usec = int(m["MONOTONIC_USEC"])
    assert before * 1e6 - 1e6 <= usec <= time.monotonic() * 1e6 + 1e6
    m = next_msg(notify_socket)
    assert m["READY"] == "1"
    wait_for_text(s.system_log, "SIGHUP: reloaded")

    assert s.stop() == 0
    m = next_msg(notify_socket)
    assert m["STOPPING"] == "1"
    notify_socket.settimeout(0.2)
    with pytest.raises(socket.timeout):
        notify_socket.recv(4096)  # nothing after STOPPING=1


def test_a_refused_reload_still_ends_with_ready(notify_socket, init_pki, tmp_path, serve):
    d = server_dir(init_pki, tmp_path)
    s = serve(d)
    assert next_msg(notify_socket)["READY"] == "1"
    with open(os.path.join(d, "server.key"), "w") as f:
        f.write("not a key\n")
    s.proc.send_signal(signal.SIGHUP)
    assert next_msg(notify_socket)["RELOADING"] == "1"
    assert next_msg(notify_socket)["READY"] == "1"  # systemd must not wait for ever
    assert "reload refused" in read_text(s.system_log)


def test_without_notify_socket_it_still_serves(monkeypatch, init_pki, tmp_path, serve):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    d = server_dir(init_pki, tmp_path)
    s = serve(d)
    assert b"Hello mtls" in tls_request(s.port, d)
