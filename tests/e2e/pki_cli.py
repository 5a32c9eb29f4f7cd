"""What the PKI command tests share: running the openssl CLI, and running mtls
expecting success or one clear failure."""
import subprocess

from conftest import run_mtls


def openssl(*args, cwd=None):
    """Runs `openssl ARGS...` (any result; the caller checks)."""
    return subprocess.run(["openssl", *[str(a) for a in args]], capture_output=True, text=True,
                          timeout=30, cwd=cwd)


def ok(*args, cwd=None):
    """Runs `mtls ARGS...`, which must exit 0."""
    r = run_mtls(*args, cwd=cwd)
    assert r.returncode == 0, f"mtls {args}: {r.stderr}"
    return r


def fails(code, needle, *args, cwd=None):
    """Runs `mtls ARGS...`, which must exit with code and say needle on stderr."""
    r = run_mtls(*args, cwd=cwd)
    assert r.returncode == code, f"mtls {args} exited {r.returncode}: {r.stdout}{r.stderr}"
    assert needle in r.stderr, r.stderr
    return r
