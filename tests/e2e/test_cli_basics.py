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


def test_a_word_outside_an_options_choices_is_a_usage_error(tmp_path):
    r = run_mtls("serve", "--log-format", "xml", cwd=tmp_path)
    assert r.returncode == 2
    assert "--log-format must be text or json, not 'xml'" in r.stderr
    assert "try 'mtls serve --help'" in r.stderr
    assert list(tmp_path.iterdir()) == [], "a usage error must not start anything or write logs"


def test_help_lists_exit_codes_in_order():
    r = run_mtls("probe", "--help")
    codes = [int(line.split()[0]) for line in r.stdout.split("exit codes:")[1].splitlines()
             if line.strip()[:1].isdigit()]
    assert codes == sorted(codes), codes
