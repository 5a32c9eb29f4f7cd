"""The tool's surface: help, version, unknown commands and exit codes."""
from conftest import run_mtls


def test_help_lists_commands_and_exit_codes():
    r = run_mtls("--help")
    assert r.returncode == 0
    assert "usage: mtls COMMAND" in r.stdout
    assert "exit codes:" in r.stdout
    assert "version" in r.stdout


def test_no_arguments_is_a_usage_error():
    r = run_mtls()
    assert r.returncode == 2
    assert "usage:" in r.stderr


def test_unknown_command_exits_2_with_hint():
    r = run_mtls("frobnicate")
    assert r.returncode == 2
    assert "'frobnicate' is not a command" in r.stderr
    assert "mtls --help" in r.stderr


def test_version_names_openssl():
    r = run_mtls("version")
    assert r.returncode == 0
    assert r.stdout.startswith("mtls ")
    assert "OpenSSL 3" in r.stdout


def test_write_error_on_stdout_is_reported():
    import subprocess
    from conftest import MTLS
    # /dev/full makes every write fail: the tool must notice and exit 1.
    with open("/dev/full", "w") as full:
        r = subprocess.run([MTLS, "--help"], stdout=full, stderr=subprocess.PIPE, text=True)
    assert r.returncode == 1
    assert "cannot write" in r.stderr
