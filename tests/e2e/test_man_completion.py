"""Issue 12: man pages and bash and zsh completion generated from the option tables
of --help (`mtls __man DIR`, `mtls __completion bash|zsh`), and `meson install`
installing them with the binary, the systemd unit, the logrotate file and the
sysusers.d file."""
import os
import re
import shutil
import subprocess

import pytest

from conftest import MTLS, run_mtls


def commands():
    """Every command `mtls --help` lists ("serve", "cert sign", ...)."""
    text = run_mtls("--help").stdout
    block = text.split("commands:\n", 1)[1].split("\n\n", 1)[0]
    return [line[2:16].strip() for line in block.splitlines()]


def page(cmd):
    return "mtls-" + cmd.replace(" ", "-") + ".1"


def options_of(cmd):
    return re.findall(r"--([a-z0-9-]+)", run_mtls(*cmd.split(), "--help").stdout)


@pytest.fixture(scope="module")
def man_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("man")
    (d / "mtls-gone.1").write_text(".TH GONE 1\n")  # a page of a command that no longer is
    (d / "keep.txt").write_text("not a page\n")
    r = run_mtls("__man", d)
    assert r.returncode == 0, r.stderr
    assert (d / "keep.txt").exists()
    (d / "keep.txt").unlink()
    assert r.returncode == 0, r.stderr
    return d


def test_one_page_per_command(man_dir):
    expected = {"mtls.1"} | {page(c) for c in commands()}
    assert set(os.listdir(man_dir)) == expected
    assert {"mtls-serve.1", "mtls-cert-lint.1", "mtls-doctor.1"} <= expected


@pytest.mark.skipif(shutil.which("man") is None or shutil.which("groff") is None,
                    reason="man-db and groff-base are not installed (scripts/install-deps.sh test)")
def test_every_page_renders_without_warnings(man_dir):
    env = dict(os.environ, MANWIDTH="80", LC_ALL="C.UTF-8")
    for name in sorted(os.listdir(man_dir)):
        path = os.path.join(man_dir, name)
        r = subprocess.run(["man", "--warnings", "-l", path], capture_output=True, text=True,
                           env=env)
        assert r.returncode == 0 and r.stderr == "", (name, r.stderr)
        assert "NAME" in r.stdout and "mtls" in r.stdout
        r = subprocess.run(["groff", "-man", "-ww", "-z", path], capture_output=True, text=True)
        assert r.stderr == "", (name, r.stderr)


@pytest.mark.skipif(shutil.which("man") is None, reason="man-db is not installed")
def test_the_serve_page_has_every_option_of_serve_help(man_dir):
    env = dict(os.environ, MANWIDTH="200", LC_ALL="C")
    text = subprocess.run(["man", "-l", os.path.join(man_dir, "mtls-serve.1")],
                          capture_output=True, text=True, env=env).stdout
    for opt in options_of("serve"):
        assert f"--{opt}" in text, opt
    assert "--user NAME" in text
    main = subprocess.run(["man", "-l", os.path.join(man_dir, "mtls.1")], capture_output=True,
                          text=True, env=env).stdout
    for cmd in commands():
        assert page(cmd)[:-2] + "(1)" in main


def complete(script, *words):
    """What the generated completion offers after `mtls WORDS...` (the last is being typed)."""
    code = (f"source {script}\n"
            "COMP_WORDS=(mtls " + " ".join(f"'{w}'" for w in words) + ")\n"
            f"COMP_CWORD={len(words)}\n_mtls\nprintf '%s\\n' \"${{COMPREPLY[@]}}\"\n")
    r = subprocess.run(["bash", "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return r.stdout.split()


def test_bash_completion_offers_commands_and_serve_options(tmp_path):
    script = tmp_path / "mtls.bash"
    r = run_mtls("__completion", "bash")
    assert r.returncode == 0, r.stderr
    script.write_text(r.stdout)
    top = complete(script, "")
    for word in ("serve", "cert", "ca", "doctor", "help"):
        assert word in top
    assert complete(script, "se") == ["serve"]
    assert set(complete(script, "cert", "")) == {c.split()[1] for c in commands()
                                                  if c.startswith("cert ")}
    serve_opts = complete(script, "serve", "--")
    assert {f"--{o}" for o in options_of("serve")} <= set(serve_opts)
    assert "--user" in serve_opts and "--listen" in serve_opts
    assert complete(script, "serve", "--verify-client", "") == ["require", "optional"]
    assert complete(script, "cert", "sign", "--pro") == ["--profile"]


def build_dir():
    d = os.path.dirname(os.path.abspath(MTLS))
    return d if os.path.isdir(os.path.join(d, "meson-private")) else None


@pytest.mark.skipif(build_dir() is None or shutil.which("meson") is None,
                    reason="the mtls binary is not in a meson build folder")
def test_meson_install_installs_unit_logrotate_man_pages_and_completion(tmp_path):
    dest = tmp_path / "dest"
    r = subprocess.run(["meson", "install", "-C", build_dir(), "--destdir", str(dest),
                        "--no-rebuild", "--quiet"], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    files = {os.path.relpath(os.path.join(root, f), dest)
             for root, _, names in os.walk(dest) for f in names}

    def one(suffix):
        found = [f for f in files if f.endswith(suffix)]
        assert len(found) == 1, (suffix, sorted(files))
        return os.path.join(dest, found[0])

    binary = one("bin/mtls")
    unit = open(one("lib/systemd/system/mtls.service")).read()
    # The installed unit runs the installed binary.
    exec_start = re.search(r"^ExecStart=(\S+)", unit, re.M).group(1)
    assert os.path.join(dest, exec_start.lstrip("/")) == binary
    one("etc/logrotate.d/mtls")
    one("lib/sysusers.d/mtls.conf")
    one("share/bash-completion/completions/mtls")
    one("share/zsh/vendor-completions/_mtls")
    for name in ["mtls.1"] + [page(c) for c in commands()]:
        one("share/man/man1/" + name)


ZSH_DRIVE = r"""
zmodload zsh/zpty
zpty z zsh -f -i
zpty -w z "PROMPT='>'; fpath=($DIR \$fpath); autoload -Uz compinit; compinit -u -D; setopt nobeep"
want() {  # reads the pseudo-terminal until $1 shows up (stripped of escapes), for up to 10 s
    local out="" chunk
    for i in {1..200}; do
        zpty -r -t z chunk && out+=$chunk
        [[ ${${out//$'\e'\[[0-9;]#[A-Za-z]/}//$'\b'/} == *$1* ]] && return 0
        zselect -t 5
    done
    print -r -- "no '$1' in: $out"
    return 1
}
zmodload zsh/zselect
zpty -w z "echo READY-\$((6*7))"
want READY-42 || exit 1
zpty -w -n z $'mtls serve --us\t'
want 'mtls serve --user' || exit 2
zpty -w -n z $'\C-u'
zpty -w -n z $'mtls serve --verify-client \t'
want optional || exit 3
zpty -d z
"""


@pytest.mark.skipif(shutil.which("zsh") is None, reason="zsh is not installed")
def test_zsh_completion_completes_serve_options_in_a_real_zsh(tmp_path):
    r = run_mtls("__completion", "zsh")
    assert r.returncode == 0, r.stderr
    (tmp_path / "_mtls").write_text(r.stdout)
    assert subprocess.run(["zsh", "-n", str(tmp_path / "_mtls")]).returncode == 0
    r = subprocess.run(["zsh", "-f", "-c", ZSH_DRIVE.replace("$DIR", str(tmp_path))],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
