"""`mtls demo`: the article end to end (init, a real `mtls serve` process, the
three checks), its verdicts, its cleanup, and its failures."""
import os
import socket

import pytest

from conftest import free_port, run_mtls, wait_until
from probe_pki import make_ca


def run_demo(*args, tmpdir):
    # TMPDIR points at a folder of the test's own, to see what the demo leaves.
    return run_mtls("demo", *args, env={"TMPDIR": str(tmpdir)}, timeout=120)


def test_demo_runs_the_article_and_cleans_up(tmp_path):
    r = run_demo("--port", free_port(), tmpdir=tmp_path)
    out = r.stdout
    assert r.returncode == 0, out + r.stderr
    # The three checks, each with its curl command, what happened and why.
    assert "$ curl --cacert serverca.crt --key client.key --cert client.crt https://localhost:" \
        in out
    assert "$ curl --key client.key --cert client.crt https://localhost:" in out
    assert "$ curl --cacert serverca.crt https://localhost:" in out
    assert 'got   200 {"message":"Hello mtls"}' in out
    assert "got   we refused the server: sent the alert unknown_ca" in out
    assert "why   the server's certificate is signed by CN=server-example-ca, which you do " \
        "not trust: pass --cacert serverca.crt" in out
    assert "got   the server refused us" in out
    assert "why   the server requires a client certificate and you sent none; it accepts " \
        "certificates issued by CN=client-example-ca" in out
    assert out.count("PASS") == 3 and "FAIL" not in out
    assert "3 of 3 checks behaved as the tutorial says; the server stopped cleanly" in out
    # What the server logged, shown from its own files.
    logs = out[out.index("server logs"):]
    assert "access.log" in logs and "GET /test" in logs
    assert "system.log" in logs
    # Piped output has no colour; the temporary folder is gone.
    assert "\033[" not in out
    assert os.listdir(tmp_path) == []


def test_demo_keep_dir_and_rerun(tmp_path):
    d = tmp_path / "work"
    r = run_demo("--dir", d, "--port", free_port(), tmpdir=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    for f in ["serverca.crt", "clientca.crt", "server.crt", "client.key", "access.log",
              "system.log"]:
        assert (d / f).is_file(), f
    # A second run reuses the PKI and shows only the log lines it caused.
    before = (d / "access.log").read_text().splitlines()
    r = run_demo("--dir", d, "--port", free_port(), tmpdir=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "reusing the certificates already in" in r.stdout
    new = (d / "access.log").read_text().splitlines()[len(before):]
    assert new, "the second run wrote no access-log line"
    shown = r.stdout[r.stdout.index("server logs"):]
    assert shown.count("GET /test") == sum(line.count("GET /test") for line in new)


def test_demo_busy_port_fails_before_making_anything(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        r = run_demo("--port", port, tmpdir=tmp_path)
    assert r.returncode == 1
    assert f"port {port} on 127.0.0.1 is in use: pick another with --port" in r.stderr
    assert os.listdir(tmp_path) == []


def test_demo_fails_when_the_server_trusts_another_client_ca(tmp_path):
    # A PKI whose server trusts a stranger CA: check 1 must fail, honestly.
    d = tmp_path / "work"
    r = run_mtls("init", "--dir", d)
    assert r.returncode == 0, r.stderr
    os.remove(d / "clientca.crt")
    os.remove(d / "clientca.key")
    make_ca(d, "clientca", "other-ca")
    r = run_demo("--dir", d, "--port", free_port(), tmpdir=tmp_path)
    assert r.returncode == 1, r.stdout
    assert "FAIL" in r.stdout and r.stdout.count("PASS") == 2
    assert "your certificate is issued by CN=client-example-ca, which this server does not " \
        "accept (it accepts CN=other-ca)" in r.stdout
    assert "2 of 3 checks behaved as the tutorial says" in r.stdout


def test_demo_dir_that_is_a_file_or_holds_part_of_a_pki(tmp_path):
    (tmp_path / "afile").write_text("x\n")
    r = run_demo("--dir", tmp_path / "afile", "--port", free_port(), tmpdir=tmp_path)
    assert r.returncode == 1
    assert r.stderr.strip() == f"error: --dir '{tmp_path / 'afile'}' is not a folder: name a folder " \
        "(it is made when missing)"
    half = tmp_path / "half"
    half.mkdir()
    (half / "server.crt").write_text("mine\n")
    r = run_demo("--dir", half, "--port", free_port(), tmpdir=tmp_path)
    assert r.returncode == 1
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert f"'{half}' holds part of a PKI (1 of serverca.crt" in r.stderr
    assert os.listdir(half) == ["server.crt"] and (half / "server.crt").read_text() == "mine\n"
    r = run_demo("--dir", tmp_path / "no" / "such", "--port", free_port(), tmpdir=tmp_path)
    assert r.returncode == 1
    assert "the folder above it does not exist" in r.stderr


@pytest.mark.parametrize("args", [["--port", "0"], ["extra"], ["--nope"]])
def test_demo_usage_errors(tmp_path, args):
    r = run_demo(*args, tmpdir=tmp_path)
    assert r.returncode == 2
    assert "mtls demo --help" in r.stderr


def test_demo_colours_only_on_a_terminal(tmp_path):
    import pty
    import subprocess
    from conftest import MTLS, SANITIZED, assert_no_sanitizer_report
    master, slave = pty.openpty()
    env = {k: v for k, v in os.environ.items() if k != "NO_COLOR"}
    env["TMPDIR"] = str(tmp_path)
    proc = subprocess.Popen([MTLS, "demo", "--port", str(free_port())], stdout=slave,
                            stderr=subprocess.PIPE, env=env, text=True)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    _, err = proc.communicate(timeout=60)
    if SANITIZED:
        assert_no_sanitizer_report(err)
    out = b"".join(chunks).decode()
    assert proc.returncode == 0, out + err
    assert "\033[32mPASS\033[0m" in out


def _start_demo_held_before_listening(tmp_path):
    """Starts the demo with TMPDIR=tmp_path and makes system.log in its new folder a FIFO
    nobody reads, so that its 'mtls serve' blocks opening the log, before it listens.
    Returns (demo process, folder, serve pid), or None when the FIFO came too late."""
    import subprocess
    import time

    from conftest import MTLS

    env = dict(os.environ, TMPDIR=str(tmp_path), NO_COLOR="1")
    demo = subprocess.Popen([MTLS, "demo", "--port", str(free_port())], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while not os.listdir(tmp_path) and time.monotonic() < deadline and demo.poll() is None:
        time.sleep(0.001)
    folder = tmp_path / os.listdir(tmp_path)[0]
    try:
        os.mkfifo(folder / "system.log")
    except FileExistsError:
        demo.kill()
        demo.communicate()
        return None
    children = f"/proc/{demo.pid}/task/{demo.pid}/children"
    serve = []

    def serve_started():
        with open(children) as f:
            pids = f.read().split()
        # The child that is not 'mtls init': it runs 'serve'.
        for pid in pids:
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    if b"serve" in f.read():
                        serve.append(int(pid))
            except OSError:  # 'mtls init' ended meanwhile
                pass
        return bool(serve)

    wait_until(serve_started, timeout=30, what="the demo to start mtls serve")
    return demo, folder, serve[0]


def test_ctrl_c_stops_the_server_and_removes_the_temporary_folder(tmp_path):
    import signal

    import shutil

    for _ in range(3):
        held = _start_demo_held_before_listening(tmp_path)
        if held is not None:
            break
        for entry in tmp_path.iterdir():  # the lost race's leftovers
            shutil.rmtree(entry)
    assert held is not None, "could not place the FIFO before the server opened its log"
    demo, folder, serve_pid = held
    demo.send_signal(signal.SIGINT)
    out, err = demo.communicate(timeout=60)
    assert demo.returncode == -signal.SIGINT, out + err
    assert "interrupted: the server is stopped and the temporary folder removed" in err
    assert not os.path.exists(f"/proc/{serve_pid}"), "the demo left its server running"
    assert not folder.exists()


def test_demo_takes_a_port_from_the_kernel_when_8443_is_busy(tmp_path):
    """Without --port and with 8443 taken, the server listens on port 0 and the demo uses
    the port it printed (no free port picked beforehand, which could race)."""
    busy = socket.socket()
    busy.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        busy.bind(("127.0.0.1", 8443))
    except OSError:
        busy.close()
        pytest.skip("port 8443 is in use by another process: cannot hold it for the test")
    busy.listen()
    try:
        r = run_demo(tmpdir=tmp_path)
    finally:
        busy.close()
    assert r.returncode == 0, r.stdout + r.stderr
    port = int(r.stdout.split("listens on https://localhost:")[1].split()[0])
    assert port not in (0, 8443)
    assert f"https://localhost:{port}/test" in r.stdout
    assert "3 of 3 checks behaved as the tutorial says" in r.stdout
