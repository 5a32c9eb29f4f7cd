"""The tool's surface: help, version, unknown commands and exit codes."""
import re

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


def _commands():
    """Every command `mtls --help` lists, as argument lists ("ca create" -> ["ca", "create"])."""
    listing = run_mtls("--help").stdout.split("commands:\n", 1)[1].split("\n\n", 1)[0]
    names = [re.split(r"\s{2,}", line.strip())[0] for line in listing.splitlines()]
    assert "serve" in names and "version" in names and "ca create" in names
    return [n.split() for n in names]


def test_every_command_answers_help_the_same_way():
    for words in _commands():
        name = " ".join(words)
        a = run_mtls(*words, "--help")
        b = run_mtls("help", *words)
        c = run_mtls(*words, "-h")
        assert a.returncode == b.returncode == c.returncode == 0, (name, a.stderr, b.stderr)
        assert a.stdout.startswith(f"usage: mtls {name} "), (name, a.stdout[:200])
        assert a.stdout == b.stdout == c.stdout, name
        assert a.stderr == b.stderr == "", name


def test_every_command_refuses_what_it_does_not_know():
    for words in _commands():
        name = " ".join(words)
        r = run_mtls(*words, "--no-such-option")
        assert r.returncode == 2, (name, r.stdout, r.stderr)
        assert "unknown option '--no-such-option'" in r.stderr, (name, r.stderr)
        assert r.stderr.rstrip().endswith(f"try 'mtls {name} --help'"), (name, r.stderr)
    r = run_mtls("version", "extra")
    assert r.returncode == 2 and "try 'mtls version --help'" in r.stderr
    assert r.stdout == ""


def test_help_for_groups_and_unknown_names():
    r = run_mtls("help", "ca")
    assert r.returncode == 0 and "ca create" in r.stdout and r.stdout == run_mtls("ca", "--help").stdout
    r = run_mtls("help", "no-such-command")
    assert r.returncode == 2 and "try 'mtls --help'" in r.stderr
    r = run_mtls("ca", "no-such")
    assert r.returncode == 2 and "try 'mtls ca --help'" in r.stderr
    r = run_mtls("--no-such-option")
    assert r.returncode == 2 and "try 'mtls --help'" in r.stderr
