"""The `serve` fixture itself can fail a test: a server that exits by itself (a crash, an
error exit, an exit 0 nobody asked for) or leaves a worker behind fails the test that
started it, with its exit status and the tail of its output; the exits a test announces
(expect_exit(), send_signal(SIGTERM), stop(), kill()) do not.

Each case is a small test file run by a pytest of its own, whose outcome is checked here."""
import os
import resource
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET

from serve_helpers import SLOW

HERE = os.path.dirname(os.path.abspath(__file__))

INNER = '''
import os
import signal
import subprocess

from serve_helpers import *  # noqa: F401,F403 (fixtures)
from serve_helpers import server_dir


def crash(s):
    # SIGABRT: under ASan a SIGSEGV would become a sanitizer report and exit code 86.
    os.kill(s.proc.pid, signal.SIGABRT)
    s.proc.wait()


def test_unannounced_crash(init_pki, serve, tmp_path):
    crash(serve(server_dir(init_pki, tmp_path)))


def test_unannounced_crash_then_stop(init_pki, serve, tmp_path):
    s = serve(server_dir(init_pki, tmp_path))
    crash(s)
    s.stop()


def test_announced_crash(init_pki, serve, tmp_path):
    s = serve(server_dir(init_pki, tmp_path))
    s.expect_exit(-signal.SIGABRT)
    crash(s)


def test_crash_instead_of_the_announced_status(init_pki, serve, tmp_path):
    s = serve(server_dir(init_pki, tmp_path))
    s.expect_exit(0)
    crash(s)


def test_sigterm_behind_the_fixtures_back(init_pki, serve, tmp_path):
    s = serve(server_dir(init_pki, tmp_path))
    s.proc.send_signal(signal.SIGTERM)
    assert s.proc.wait() == 0


def test_announced_sigterm(init_pki, serve, tmp_path):
    s = serve(server_dir(init_pki, tmp_path))
    s.send_signal(signal.SIGTERM)
    assert s.proc.wait() == 0


def test_stop_and_kill(init_pki, serve, tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    assert serve(server_dir(init_pki, tmp_path / "a")).stop() == 0
    serve(server_dir(init_pki, tmp_path / "b")).kill()


def test_a_worker_left_behind(init_pki, serve, tmp_path):
    s = serve(server_dir(init_pki, tmp_path))
    # A process in the server's group that outlives it, as a worker that missed its
    # parent's death would.
    subprocess.Popen(["sleep", "600"], process_group=s.pgid)
    s.kill()
'''


def run_inner(tmp_path):
    """Runs INNER under pytest; returns ({test name: failure text or ''}, pytest's output)."""
    inner = tmp_path / "inner"
    inner.mkdir()
    (inner / "test_inner.py").write_text(textwrap.dedent(INNER))
    xml = tmp_path / "inner.xml"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [HERE] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else [])))
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                        "--rootdir", str(inner), f"--junitxml={xml}", str(inner)],
                       cwd=inner, env=env, capture_output=True, text=True,
                       timeout=300 * SLOW,
                       # A crashed server writes no core file.
                       preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_CORE, (0, 0)))
    assert xml.exists(), r.stdout + r.stderr
    outcomes = {}
    for case in ET.parse(xml).getroot().iter("testcase"):
        outcomes[case.get("name")] = [e.text or e.get("message") or e.tag for e in case
                                      if e.tag in ("failure", "error")]
    return outcomes, r.stdout + r.stderr


def test_the_fixture_fails_what_it_should_and_only_that(tmp_path):
    outcomes, output = run_inner(tmp_path)
    assert len(outcomes) == 8, output
    for name in ["test_announced_crash", "test_announced_sigterm", "test_stop_and_kill"]:
        assert outcomes[name] == [], (name, outcomes[name])

    def one(name):
        """The one failure of test name (a failure in the test or an error at teardown)."""
        assert len(outcomes[name]) == 1, (name, outcomes[name])
        return outcomes[name][0]

    crashed = one("test_unannounced_crash")
    assert "mtls serve exited by itself before the test stopped it, with signal SIGABRT" \
        in crashed, crashed
    # The tails of its output and of the system log come with it.
    assert "HTTPS listening on 127.0.0.1:" in crashed and "HTTPS start" in crashed, crashed

    # stop() after the crash fails in the test itself; teardown says it no more.
    stopped = one("test_unannounced_crash_then_stop")
    assert "exited by itself before the test stopped it, with signal SIGABRT" in stopped, stopped

    wrong = one("test_crash_instead_of_the_announced_status")
    assert "exited by itself with signal SIGABRT" in wrong, wrong
    assert "but the test expected status 0" in wrong, wrong

    behind = one("test_sigterm_behind_the_fixtures_back")
    assert "exited by itself before the test stopped it, with status 0" in behind, behind

    left = one("test_a_worker_left_behind")
    assert "mtls serve (signal SIGKILL) left processes of its group behind" in left, left
