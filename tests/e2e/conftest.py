"""Shared fixtures for the end-to-end tests: they run the real mtls binary
(MTLS_BIN, default build/mtls) and real clients, and never a mock.

Under tests/run.py's sanitizer phase MTLS_SANITIZED=1 is set and the binary
is the ASan+UBSan build; run_mtls() then also fails a test whose process
printed a sanitizer report.
"""
import os
import socket
import subprocess
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MTLS = os.environ.get("MTLS_BIN", os.path.join(ROOT, "build", "mtls"))
SANITIZED = os.environ.get("MTLS_SANITIZED") == "1"
SANITIZER_MARKS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:")


def assert_no_sanitizer_report(text, what="mtls"):
    for mark in SANITIZER_MARKS:
        assert mark not in text, f"{what} printed a sanitizer report:\n{text[-6000:]}"


def run_mtls(*args, cwd=None, input=None, env=None, timeout=60):
    """Runs `mtls ARGS...` and returns the CompletedProcess (text mode)."""
    full_env = dict(os.environ)
    full_env["NO_COLOR"] = "1"
    if env:
        full_env.update(env)
    r = subprocess.run([MTLS, *[str(a) for a in args]], cwd=cwd, input=input, env=full_env,
                       capture_output=True, text=True, timeout=timeout)
    assert_no_sanitizer_report(r.stderr)
    assert r.returncode != 86, f"sanitizer exit code from mtls {args}:\n{r.stderr}"
    return r


def free_port():
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port, host="127.0.0.1", timeout=15.0, proc=None):
    """Waits until something accepts TCP connections on host:port."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"process exited with {proc.returncode} before listening")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.02)
    raise AssertionError(f"nothing listens on {host}:{port} after {timeout}s")


def wait_until(predicate, timeout=10.0, what="condition"):
    """Polls predicate() until it is true; fails the test after timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@pytest.fixture
def mtls():
    return run_mtls
