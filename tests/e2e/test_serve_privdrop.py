"""Issue 12: `mtls serve --user NAME` (tests run as root): the workers run as
NAME with no_new_privs, the server still serves, reloads a new certificate on
SIGHUP and reopens its logs on SIGUSR1; --user is refused when not root and
for a user that does not exist."""
import os
import pwd
import re
import signal
import ssl
import socket

import pytest

from conftest import MTLS, run_mtls, wait_until
from serve_helpers import *  # noqa: F401,F403 (fixtures)
from serve_helpers import SLOW, Server, read_text, server_dir, wait_for_text

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="--user needs root")


def start(serve_fixture, d, *args, workers=2):
    """serve on 127.0.0.1:0; returns the Server with .port the one it printed."""
    s = serve_fixture(d, "--listen", "127.0.0.1:0", *args, workers=workers, listen=False)
    m = re.search(r"127\.0\.0\.1:(\d+)", read_text(s.out))
    s.port = int(m.group(1))
    return s


def children(pid):
    """The pids whose parent is pid."""
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            out.append(int(name))
    return sorted(out)


def status(pid):
    fields = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            fields[k] = v.split()
    return fields


def served_cert(port, d):
    ctx = ssl.create_default_context(cafile=os.path.join(d, "serverca.crt"))
    ctx.load_cert_chain(os.path.join(d, "client.crt"), os.path.join(d, "client.key"))
    with socket.create_connection(("127.0.0.1", port), timeout=10 * SLOW) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as c:
            return c.getpeercert(binary_form=True)


def file_der(path):
    pem = open(path).read()
    return ssl.PEM_cert_to_DER_cert(pem[:pem.index("-----END CERTIFICATE-----") + 25])


def assert_workers_are(s, user, n):
    pw = pwd.getpwnam(user)
    # An old generation may still be draining for a moment after a reload or reopen.
    wait_until(lambda: len(children(s.proc.pid)) == n, timeout=10 * SLOW,
               what=f"{n} workers: {children(s.proc.pid)}")
    kids = children(s.proc.pid)
    for pid in kids:
        st = status(pid)
        assert st["Uid"] == [str(pw.pw_uid)] * 4, st["Uid"]
        assert st["Gid"] == [str(pw.pw_gid)] * 4, st["Gid"]
        assert st["NoNewPrivs"] == ["1"]
        assert "0" not in st["Groups"]
    main = status(s.proc.pid)
    assert main["Uid"][1] == "0", "the main process keeps root for reloads"
    return kids


def test_workers_run_as_nobody_and_the_server_serves(init_pki, tmp_path, serve):
    d = server_dir(init_pki, tmp_path)
    os.chmod(os.path.join(d, "server.key"), 0o600)  # readable by root only
    s = start(serve, d, "--user", "nobody")
    assert_workers_are(s, "nobody", 2)
    assert b"Hello mtls" in tls_request(s.port, d)


def test_sighup_reloads_a_new_certificate_under_user(init_pki, tmp_path, serve):
    d = server_dir(init_pki, tmp_path)
    s = start(serve, d, "--user", "nobody")
    old_workers = children(s.proc.pid)
    assert served_cert(s.port, d) == file_der(os.path.join(d, "server.crt"))
    r = run_mtls("cert", "issue", "--ca", "serverca", "--profile", "server", "--cn", "localhost",
                 "--san", "localhost", "--san", "127.0.0.1", "--out", "server", "--force", cwd=d)
    assert r.returncode == 0, r.stderr
    os.chmod(os.path.join(d, "server.key"), 0o600)
    new = file_der(os.path.join(d, "server.crt"))
    s.proc.send_signal(signal.SIGHUP)
    wait_for_text(s.system_log, "SIGHUP: reloaded")
    wait_until(lambda: served_cert(s.port, d) == new, timeout=10 * SLOW,
               what="the new certificate served after SIGHUP")
    # A new generation of workers, as nobody again; the old one has drained.
    wait_until(lambda: not set(children(s.proc.pid)) & set(old_workers), timeout=15 * SLOW,
               what="the old workers gone")
    assert_workers_are(s, "nobody", 2)
    assert b"Hello mtls" in tls_request(s.port, d)
    assert "reload_failed" not in read_text(s.system_log)
    assert "keeps its old" not in read_text(s.system_log)


def test_sigusr1_reopens_the_logs_under_user(init_pki, tmp_path, serve):
    d = server_dir(init_pki, tmp_path)
    os.chmod(d, 0o700)  # nobody cannot even look inside: only root can reopen
    s = start(serve, d, "--user", "nobody")
    assert b"Hello mtls" in tls_request(s.port, d)
    wait_for_text(s.access_log, "/test")
    os.rename(s.access_log, s.access_log + ".1")
    os.rename(s.system_log, s.system_log + ".1")
    s.proc.send_signal(signal.SIGUSR1)
    wait_for_text(s.system_log, "SIGUSR1: log files reopened")

    def logged():
        tls_request(s.port, d)
        return "/test" in read_text(s.access_log)
    wait_until(logged, timeout=10 * SLOW, what="a request in the new access.log")
    assert_workers_are(s, "nobody", 2)
    assert "log_reopen_failed" not in read_text(s.system_log)


def test_user_is_refused_without_root(init_pki, tmp_path):
    d = server_dir(init_pki, tmp_path)
    os.chmod(d, 0o755)
    import shutil
    import subprocess
    import tempfile
    if not os.stat("/").st_mode & 0o001:
        pytest.skip("nobody cannot run programs here: '/' is not searchable by others (a chroot "
                    "made by mktemp -d, as fresh-debian's)")
    binary = MTLS
    if any(not (os.stat(p).st_mode & 0o001) for p in _parents(MTLS)):
        # A checkout under /root (0700): run a copy that nobody can reach.
        reachable = tempfile.mkdtemp(prefix="mtls-nobody-", dir="/tmp")
        os.chmod(reachable, 0o755)
        binary = shutil.copy(MTLS, os.path.join(reachable, "mtls"))
    try:
        r = subprocess.run([binary, "serve", "--listen", "127.0.0.1:0", "--user", "nobody"],
                           cwd=d, capture_output=True, text=True, user="nobody", timeout=30)
    finally:
        if binary != MTLS:
            shutil.rmtree(os.path.dirname(binary))
    assert r.returncode == 2, r.stderr
    assert "--user nobody needs root" in r.stderr


def _parents(path):
    path = os.path.dirname(os.path.abspath(path))
    out = []
    while path != "/":
        out.append(path)
        path = os.path.dirname(path)
    return out


def test_unknown_user_and_thread_model_are_refused(init_pki, tmp_path):
    d = server_dir(init_pki, tmp_path)
    r = run_mtls("serve", "--listen", "127.0.0.1:0", "--user", "no-such-user-mtls", cwd=d)
    assert r.returncode == 2
    assert "no-such-user-mtls: no such user" in r.stderr
    r = run_mtls("serve", "--listen", "127.0.0.1:0", "--user", "root", cwd=d)
    assert r.returncode == 2 and "uid 0" in r.stderr
    r = run_mtls("serve", "--listen", "127.0.0.1:0", "--user", "nobody", "--worker-model",
                 "thread", cwd=d)
    assert r.returncode == 2 and "--worker-model process" in r.stderr


def partial_request(port, d):
    """A TLS connection whose request has begun but not ended: its worker cannot finish draining."""
    ctx = ssl.create_default_context(cafile=os.path.join(d, "serverca.crt"))
    ctx.load_cert_chain(os.path.join(d, "client.crt"), os.path.join(d, "client.key"))
    raw = socket.create_connection(("127.0.0.1", port), timeout=10 * SLOW)
    c = ctx.wrap_socket(raw, server_hostname="localhost")
    c.sendall(b"GET /test HTTP/1.1\r\nHost: x\r\n")
    return c


def test_reloads_while_old_workers_drain_are_refused_when_no_slot_is_free(init_pki, tmp_path,
                                                                          serve):
    d = server_dir(init_pki, tmp_path)
    s = start(serve, d, "--user", "nobody", "--header-timeout", "60", "--drain-timeout", "60",
              workers=1)
    held = []
    # Generations 1, 2 and 3 each hold a request in progress while they drain: with the
    # current one, 4 (MTLS__GENERATIONS) slots per worker are in use.
    for n in range(1, 4):
        held.append(partial_request(s.port, d))
        s.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: read_text(s.system_log).count("SIGHUP: reloaded") == n,
                   timeout=10 * SLOW, what=f"reload {n}")
        wait_until(lambda: len(children(s.proc.pid)) == n + 1, timeout=10 * SLOW,
                   what=f"{n + 1} workers")
    s.proc.send_signal(signal.SIGHUP)
    wait_for_text(s.system_log, "SIGHUP refused: the workers of earlier reloads are still draining")
    assert read_text(s.system_log).count("SIGHUP: reloaded") == 3
    assert b"Hello mtls" in tls_request(s.port, d)
    for c in held:
        c.close()
    wait_until(lambda: len(children(s.proc.pid)) == 1, timeout=10 * SLOW,
               what="the old generations drained")
    s.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: read_text(s.system_log).count("SIGHUP: reloaded") == 4,
               timeout=10 * SLOW, what="a reload once slots are free")
    wait_until(lambda: len(children(s.proc.pid)) == 1, timeout=10 * SLOW,
               what="the idle old worker drained")
    assert_workers_are(s, "nobody", 1)
