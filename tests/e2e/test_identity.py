"""Issue 9, "one identity": one serial format everywhere (the access log,
/whoami, cert show, the system log), revocation checked for the whole chain
(a revoked intermediate is refused by cert verify and by serve with the alert
certificate_revoked), CRLs that must match the client CAs, and the logged
alert always the one sent."""
import json
import os
import re
import signal
import subprocess

import pytest

from conftest import run_mtls
from pki_cli import fails, ok, openssl
from serve_helpers import *  # noqa: F401,F403 (fixtures)
from serve_helpers import SLOW, Server


def start(d, *args):
    """mtls serve on 127.0.0.1 port 0; returns the Server with .port set to the printed port."""
    s = Server(d, "--listen", "127.0.0.1:0", *args, listen=False)
    _started.append(s)
    s.wait_ready()
    m = re.search(r"HTTPS listening on (?:\S*:)?(\d+)\.\.\.\.", read_text(s.out))
    assert m, read_text(s.out)
    s.port = int(m.group(1))
    return s


_started = []


@pytest.fixture(autouse=True)
def _stop_servers():
    yield
    while _started:
        s = _started.pop()
        try:
            s.stop()
        finally:
            s.kill()


def mtls(*args, cwd):
    r = run_mtls(*args, cwd=cwd)
    assert r.returncode == 0, (args, r.stdout, r.stderr)
    return r


def test_a_serial_with_a_small_top_byte_reads_the_same_everywhere(tmp_path):
    d = tmp_path
    mtls("init", "--dir", d, cwd=d)
    serial = "08882C9F00112233445566778899AABB"
    openssl("req", "-new", "-nodes", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
            "-subj", "/CN=zero-lead", "-keyout", "zl.key", "-out", "zl.csr", cwd=d)
    with open(os.path.join(d, "zl.ext"), "w") as f:
        f.write("basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\n"
                "extendedKeyUsage=clientAuth\n")
    openssl("x509", "-req", "-in", "zl.csr", "-CA", "clientca.crt", "-CAkey", "clientca.key",
            "-set_serial", "0x" + serial, "-days", "30", "-extfile", "zl.ext", "-out", "zl.crt",
            cwd=d)
    assert openssl("x509", "-in", "zl.crt", "-noout", "-serial", cwd=d).stdout.strip() == \
        "serial=" + serial
    show = json.loads(mtls("cert", "show", "zl.crt", "--json", cwd=d).stdout)
    assert show["serial"] == serial
    assert re.search(rf"^\s*serial\s+{serial}$", mtls("cert", "show", "zl.crt", cwd=d).stdout,
                     re.M)
    s = start(d, "--log-format", "json")
    r = curl("--cacert", "serverca.crt", "--cert", "zl.crt", "--key", "zl.key",
             f"https://127.0.0.1:{s.port}/whoami", cwd=d)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["client"]["serial"] == serial
    line = wait_for_text(s.access_log, "/whoami").strip().splitlines()[-1]
    assert json.loads(line)["client_serial"] == serial
