"""Helpers and fixtures for the `mtls serve` end-to-end tests (test_serve_*.py):
a server process that is always stopped and fails the test when it exited by
itself (see `serve`), PKIs made by `mtls init` and by the
openssl CLI, and clients (curl, Python ssl) that report what happened.

Import with `from serve_helpers import *` so that pytest sees the fixtures.
"""
import os
import re
import signal
import socket
import ssl
import subprocess

import pytest

import pki_openssl
from conftest import MTLS, SANITIZED, assert_no_sanitizer_report, free_port, run_mtls, wait_until

__all__ = ["Server", "serve", "finish", "init_pki", "openssl_pki", "curl", "tls_request",
           "tls_error", "read_text", "wait_for_text", "free_port", "wait_until", "SANITIZED"]

# Sanitized builds are several times slower; waits scale with them.
SLOW = 4 if SANITIZED else 1


def read_text(path):
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except FileNotFoundError:
        return ""


def wait_for_text(path, text, timeout=10):
    wait_until(lambda: text in read_text(path), timeout=timeout * SLOW,
               what=f"{text!r} in {os.path.basename(path)}:\n{read_text(path)[-3000:]}")
    return read_text(path)


# The signals that ask `mtls serve` to stop: it drains and exits 0.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def exit_status(returncode):
    """'status 1' or 'signal SIGSEGV' for a Popen returncode."""
    if returncode is not None and returncode < 0:
        try:
            return f"signal {signal.Signals(-returncode).name}"
        except ValueError:
            return f"signal {-returncode}"
    return f"status {returncode}"


def tail(path, lines):
    text = read_text(path).splitlines()
    return "\n".join(text[-lines:])


def live_processes():
    """(pid, state, parent pid, process group) of every process /proc shows now."""
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            yield int(name), fields[0], int(fields[1]), int(fields[2])
        except (OSError, IndexError, ValueError):
            continue


class Server:
    """`mtls serve` in folder d, started and stopped by the tests.

    It listens on 127.0.0.1 port 0 (the kernel picks a free port, no race with other
    processes) and .port is the port it printed, once wait_ready() returns; port=N asks
    for that port instead. It runs in a process group of its own (its workers with it).

    A server runs until the test or the fixture stops it; one that exits by itself fails
    the test (see `serve` for the rule). A test that makes it exit says so: stop(),
    send_signal(SIGTERM or SIGINT), kill(), or expect_exit(status) before the cause."""

    _count = 0

    def __init__(self, d, *args, workers=1, port=None, listen=True, env=None):
        self.dir = str(d)
        self.port = port
        Server._count += 1
        self.out = os.path.join(self.dir, f"serve-{os.getpid()}-{Server._count}.out")
        self.err = os.path.join(self.dir, f"serve-{os.getpid()}-{Server._count}.err")
        self.args = [str(a) for a in args]
        self.system_log = os.path.join(self.dir, self.option("--system-log", "system.log"))
        self.access_log = os.path.join(self.dir, self.option("--access-log", "access.log"))
        self.workers = workers
        cmd = [MTLS, "serve"]
        if listen:
            cmd += ["--listen", f"127.0.0.1:{port or 0}"]
        if workers is not None:
            cmd += ["--workers", str(workers)]
        cmd += [str(a) for a in args]
        env = dict(os.environ, NO_COLOR="1", **(env or {}))
        with open(self.out, "w") as out, open(self.err, "w") as err:
            self.proc = subprocess.Popen(cmd, cwd=self.dir, stdout=out, stderr=err, env=env,
                                         process_group=0)
        self.pgid = self.proc.pid
        self.returncode = None
        # The exit status the test said it expects (expect_exit()), or None: it must not exit.
        self.expected_exit = None
        # The signal stop() or kill() sent to the running server, or None.
        self.stopped_with = None
        # The exit was already reported as a failure (wait_ready(), stop()).
        self.reported = False

    def option(self, name, default):
        """The value given to option name (--name VALUE) in the arguments, or default."""
        for i, a in enumerate(self.args[:-1]):
            if a == name:
                return self.args[i + 1]
        return default

    def wait_ready(self):
        def ready():
            if self.proc.poll() is not None:
                self.reported = True
                raise AssertionError(f"mtls serve exited before listening: {self.describe()}")
            return "HTTPS listening on" in read_text(self.out)
        wait_until(ready, timeout=15 * SLOW, what="HTTPS listening")
        # "HTTPS listening on 127.0.0.1:PORT...." (or "on PORT...." for every address).
        m = re.search(r"HTTPS listening on (?:\S*:)?(\d+)[ .]", read_text(self.out))
        assert m, read_text(self.out)
        self.port = int(m.group(1))
        return self

    def wait_reloaded(self, count=1):
        """Waits for the count-th "SIGHUP: reloaded" of the main process and, with process
        workers that reload themselves (not thread workers, not --user's new generations),
        for each worker to say it uses the new certificates: only then do all new
        handshakes use them."""
        wait_until(lambda: read_text(self.system_log).count("SIGHUP: reloaded") >= count,
                   timeout=10 * SLOW, what=f"reload {count} in {self.system_log}")
        threads = "thread" in self.args or "threads" in self.args
        if threads or "--user" in self.args or "--config" in self.args:
            return read_text(self.system_log)
        n = count * (self.workers or 1)
        wait_until(lambda: read_text(self.system_log).count("now uses the new certificates") >= n,
                   timeout=10 * SLOW, what=f"{n} worker reloads in {self.system_log}")
        return read_text(self.system_log)

    def expect_exit(self, status=0):
        """Says that the server will exit by itself with status (a Popen returncode: -N for
        signal N) before the test ends, so that the exit does not fail the test; any other
        status still does."""
        self.expected_exit = status

    def send_signal(self, sig):
        """Sends sig to the main process; SIGTERM and SIGINT also expect_exit(0)."""
        if sig in STOP_SIGNALS:
            self.expect_exit(0)
        self.proc.send_signal(sig)

    def describe(self):
        """The exit status and the tails of stderr, stdout and the system log, for a failure."""
        return (f"{exit_status(self.proc.returncode)}\n"
                f"--- stderr ({self.err}), last lines:\n{tail(self.err, 40)}\n"
                f"--- stdout, last lines:\n{tail(self.out, 10)}\n"
                f"--- {os.path.basename(self.system_log)}, last lines:\n"
                f"{tail(self.system_log, 20)}")

    def stop(self, sig=signal.SIGTERM, timeout=20):
        """Sends sig to a server still running, waits for its exit and returns the status.

        Fails when it had exited by itself without the test expecting it, when it exited
        with another status than expected, when SIGTERM or SIGINT did not make it exit 0,
        and on a sanitizer report."""
        if self.proc.poll() is None:
            self.stopped_with = sig
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout * SLOW)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError(f"mtls serve did not stop after {signal.Signals(sig).name}:"
                                     f" {self.describe()}")
        self.returncode = self.proc.returncode
        assert_no_sanitizer_report(read_text(self.err), "mtls serve")
        assert self.returncode != 86, f"sanitizer exit code:\n{read_text(self.err)}"
        if self.reported:
            pass
        elif self.stopped_with is None:
            self.check_own_exit()
        elif self.stopped_with in STOP_SIGNALS and self.returncode != 0:
            self.reported = True
            raise AssertionError(f"mtls serve exited with {self.describe()}\n"
                                 f"after {signal.Signals(self.stopped_with).name}, not 0")
        return self.returncode

    def check_own_exit(self):
        """The server exited before stop() or kill() signalled it: fails the test unless the
        test expected that very status."""
        if self.expected_exit == self.returncode:
            return
        self.reported = True
        if self.expected_exit is None:
            raise AssertionError("mtls serve exited by itself before the test stopped it, with "
                                 f"{self.describe()}\n(if the test expects this exit, say so "
                                 "with expect_exit(), send_signal() or stop())")
        raise AssertionError(f"mtls serve exited by itself with {self.describe()}\n"
                             f"but the test expected {exit_status(self.expected_exit)}")

    def kill(self):
        """SIGKILL to a server still running (no exit status checked)."""
        if self.proc.poll() is None:
            self.stopped_with = signal.SIGKILL
            self.proc.kill()
            self.proc.wait()

    def worker_pids(self):
        """The main process's children now (its workers), zombies aside."""
        return {pid for pid, state, ppid, _ in live_processes()
                if state != "Z" and ppid == self.proc.pid}

    def reload_by_generation(self, text="SIGHUP: configuration reloaded"):
        """SIGHUP to a server that reloads by starting a new generation of workers
        (--config, --user): waits for text in the system log and then until none of the
        workers from before is left, so that every new connection reaches a new worker (the
        old ones stop accepting when they take their SIGTERM, a moment after the log line)."""
        before = self.worker_pids()
        assert before, "the server has no workers"
        self.proc.send_signal(signal.SIGHUP)
        wait_for_text(self.system_log, text)
        wait_until(lambda: not (self.worker_pids() & before), timeout=30 * SLOW,
                   what=f"the workers from before the reload ({sorted(before)}) to exit")

    def leftovers(self):
        """The processes (pid, command line) still in the server's process group, zombies
        aside."""
        try:
            os.killpg(self.pgid, 0)
        except ProcessLookupError:
            return []
        except PermissionError:
            pass  # --user workers of another uid when not root: look them up
        found = []
        for pid, state, _, pgid in live_processes():
            if state == "Z" or pgid != self.pgid:
                continue
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    cmdline = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
            except OSError:
                continue
            found.append((pid, cmdline))
        return found

    def check_no_leftovers(self):
        """Once the main process is gone its workers must follow (they drain first): fails
        the test when some are still there after a while, and kills them."""
        left = []

        def gone():
            left[:] = self.leftovers()
            return not left
        try:
            wait_until(gone, timeout=10 * SLOW, what="the process group to go")
        except AssertionError:
            try:
                os.killpg(self.pgid, signal.SIGKILL)
            except OSError:
                pass
            raise AssertionError(f"mtls serve ({exit_status(self.proc.returncode)}) left "
                                 f"processes of its group behind: {left}")


def finish(servers):
    """Stops each server still running and checks every one as `serve` says; raises one
    AssertionError with every problem found."""
    errors = []
    for s in servers:
        try:
            s.stop()
        except AssertionError as e:
            errors.append(str(e))
        finally:
            s.kill()
        try:
            s.check_no_leftovers()
        except AssertionError as e:
            errors.append(str(e))
    assert not errors, "\n\n".join(errors)


@pytest.fixture
def serve():
    """serve(dir, *args, workers=1) -> a running Server; every one is stopped at teardown.

    The rule, checked at teardown for each server:
    - one still running gets SIGTERM and must exit 0;
    - one that exited before (a crash, an error exit, or even status 0) fails the test with
      its exit status and the tail of its stderr and system log, unless the test said it
      would exit: send_signal(SIGTERM or SIGINT) or stop() (it must then exit 0), kill()
      (any status), or expect_exit(status) (it must exit with that status);
    - its stderr has no sanitizer report, and no process of its group (its workers) is left.
    A test that sends signals to s.proc itself gets none of this leniency: use the methods."""
    started = []

    def start(d, *args, **kw):
        s = Server(d, *args, **kw)
        started.append(s)
        return s.wait_ready()
    yield start
    finish(started)


@pytest.fixture(scope="session")
def init_pki(tmp_path_factory):
    """The PKI of `mtls init` (EC P-256, SANs localhost and 127.0.0.1), plus bad certificates."""
    d = tmp_path_factory.mktemp("init-pki")
    r = run_mtls("init", "--dir", d)
    assert r.returncode == 0, r.stderr
    pki_openssl.other_ca_client(str(d))
    pki_openssl.expired_client(str(d))
    pki_openssl.server_cert_as_client(str(d))
    pki_openssl.fake_ca_copy(str(d))
    pki_openssl.client_with_eku(str(d))
    return d


@pytest.fixture(scope="session")
def openssl_pki(tmp_path_factory):
    """The article's PKI made with its own openssl commands (RSA, no extensions)."""
    d = tmp_path_factory.mktemp("openssl-pki")
    pki_openssl.article_pki(str(d))
    return d


def server_dir(pki, tmp_path):
    """A fresh folder holding the PKI's files (the server reads them from its cwd)."""
    for name in os.listdir(pki):
        src = os.path.join(pki, name)
        if os.path.isfile(src):
            with open(src, "rb") as f, open(os.path.join(tmp_path, name), "wb") as g:
                g.write(f.read())
    return tmp_path


__all__.append("server_dir")


def curl(*args, cwd, timeout=30):
    """Runs curl -s ARGS in cwd; returns the CompletedProcess."""
    return subprocess.run(["curl", "-s", "-S", *[str(a) for a in args]], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout * SLOW)


def _context(pki, cert="client.crt", key="client.key", version=None, cafile="serverca.crt"):
    ctx = ssl.create_default_context(cafile=os.path.join(pki, cafile))
    if cert:
        ctx.load_cert_chain(os.path.join(pki, cert), os.path.join(pki, key))
    if version is not None:
        ctx.minimum_version = ctx.maximum_version = version
    return ctx


def tls_request(port, pki, request=None, cert="client.crt", key="client.key", version=None,
                timeout=10):
    """Sends request over mTLS (Python ssl) and returns every byte until the server closes."""
    if request is None:
        request = b"GET /test HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    ctx = _context(pki, cert, key, version)
    with socket.create_connection(("127.0.0.1", port), timeout=timeout * SLOW) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as s:
            s.sendall(request)
            data = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    return data
                data += chunk


def tls_error(port, pki, cert="client.crt", key="client.key", version=None):
    """The ssl error text (lower case, '_' as ' ') a rejected client sees, or '' if none."""
    try:
        tls_request(port, pki, cert=cert, key=key, version=version)
    except (ssl.SSLError, ConnectionError, OSError) as e:
        return str(e).lower().replace("_", " ")
    return ""
