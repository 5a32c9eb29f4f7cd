"""contrib/: the systemd unit and the logrotate file stay in step with `mtls serve`."""
import os
import re
import shutil
import subprocess

import pytest

from conftest import MTLS, ROOT, run_mtls

UNIT = os.path.join(ROOT, "contrib", "mtls.service")


def exec_start():
    text = open(UNIT).read().replace("\\\n", " ")
    return re.search(r"^ExecStart=(.*)$", text, re.M).group(1).split()


def test_every_flag_of_the_unit_is_a_serve_flag():
    args = exec_start()
    assert args[1] == "serve"
    help_text = run_mtls("serve", "--help").stdout
    flags = [a for a in args if a.startswith("--")]
    assert flags, "ExecStart passes no flags"
    for flag in flags:
        assert re.search(rf"\s{re.escape(flag)}\b", help_text), f"{flag} is not a serve flag"


def test_the_unit_restarts_on_failure_but_not_on_bad_configuration():
    text = open(UNIT).read()
    # Exit code 2 is documented as a configuration error in `mtls serve --help`.
    assert "2  bad configuration" in run_mtls("serve", "--help").stdout
    assert "RestartPreventExitStatus=2" in text
    assert "ExecReload=/bin/kill -HUP $MAINPID" in text


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_accepts_the_unit(tmp_path):
    unit = tmp_path / "mtls.service"
    unit.write_text(open(UNIT).read().replace("/usr/local/bin/mtls", MTLS))
    # --man=no: Documentation=man:mtls-serve(1) is installed by `meson install`, not here.
    r = subprocess.run(["systemd-analyze", "verify", "--man=no", str(unit)], capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stderr


def test_the_unit_is_type_notify_with_workers_as_a_dedicated_user():
    text = open(UNIT).read()
    assert re.search(r"^Type=notify$", text, re.M)
    args = exec_start()
    user = args[args.index("--user") + 1]
    assert user != "root"
    # The main process stays root (it reloads the key): no User= in the unit.
    assert not re.search(r"^User=", text, re.M)
    sysusers = open(os.path.join(ROOT, "contrib", "mtls.sysusers")).read()
    assert re.search(rf"^u {re.escape(user)} ", sysusers, re.M)
    for option in ("NoNewPrivileges=yes", "ProtectSystem=strict", "CapabilityBoundingSet=",
                   "SystemCallFilter=@system-service"):
        assert option in text
