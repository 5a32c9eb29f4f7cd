"""OpenSSL's record buffers (about 34 kB a connection) are kept while a
connection is busy and freed once it has been quiet for a second
(src/server/worker.c, RELEASE_BUFFERS_MS): an idle connection, whether it has
sent nothing, answered keep-alive requests, or had an answer written later
(the proxy), holds none.

Counted with bench/alloc_census.c preloaded into the server: its census of
live heap blocks by size, taken in the worker on SIGRTMIN+3. A record buffer
is the only block of 16-32 kB a connection makes. Not under the sanitizers
(their allocator cannot be preloaded over)."""
import http.client
import os
import shutil
import ssl
import signal
import subprocess

import pytest

from proxy_helpers import upstream  # noqa: F401 (fixture)
from serve_helpers import *  # noqa: F401,F403 (fixtures)
from serve_helpers import SLOW

HERE = os.path.dirname(os.path.abspath(__file__))
CENSUS_SRC = os.path.join(HERE, "..", "..", "bench", "alloc_census.c")
CONNS = 40

pytestmark = pytest.mark.skipif(SANITIZED or shutil.which("cc") is None,
                                reason="needs cc and an unsanitized build (the census is "
                                       "a preloaded allocator wrapper)")


@pytest.fixture(scope="module")
def census_lib(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("census") / "alloc_census.so")
    r = subprocess.run(["cc", "-O2", "-shared", "-fPIC", "-o", out, CENSUS_SRC, "-ldl"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return out


def record_buffers(s):
    """Blocks of 16-32 kB live in the one worker now (the census's 32768 class)."""
    (worker,) = s.worker_pids()
    before = read_text(s.err).count(f"census {worker} total")
    os.kill(worker, signal.SIGRTMIN + 3)
    wait_until(lambda: read_text(s.err).count(f"census {worker} total") > before,
               timeout=10 * SLOW, what="the worker's census")
    last = read_text(s.err).split(f"census {worker} total")[-2]
    counts = {}
    for line in last.splitlines():
        f = line.split()
        if len(f) == 5 and f[0] == "census" and f[1] == str(worker):
            counts[int(f[2])] = int(f[3])
    return counts.get(32768, 0)


def connect(s, pki):
    ctx = ssl.create_default_context(cafile=os.path.join(pki, "serverca.crt"))
    ctx.load_cert_chain(os.path.join(pki, "client.crt"), os.path.join(pki, "client.key"))
    c = http.client.HTTPSConnection("localhost", s.port, context=ctx, timeout=10 * SLOW)
    c.connect()
    return c


def get(c, path="/test"):
    c.request("GET", path)
    r = c.getresponse()
    r.read()
    return r.status


def held_connections_release_their_buffers(s, pki, busy):
    base = record_buffers(s)
    conns = [connect(s, pki) for _ in range(CONNS)]
    try:
        for c in conns:
            assert busy(c) == 200
        # A moment after their I/O the buffers are still there: kept, not freed per record.
        assert record_buffers(s) - base >= CONNS
        wait_until(lambda: record_buffers(s) - base < CONNS // 10, timeout=10 * SLOW,
                   what=f"the record buffers of {CONNS} quiet connections to be freed")
        # And a quiet connection takes up its work again.
        assert get(conns[0]) == 200
    finally:
        for c in conns:
            c.close()


def two_requests(c):
    assert get(c) == 200
    return get(c)


def test_keep_alive_connections_free_their_buffers_when_quiet(serve, init_pki, census_lib):
    s = serve(init_pki, env={"LD_PRELOAD": census_lib})
    held_connections_release_their_buffers(s, str(init_pki), two_requests)


def test_proxied_connections_free_their_buffers_when_quiet(serve, init_pki, census_lib,
                                                           upstream):
    """The proxy answers later, from outside the connection's own I/O (the worker stops the
    connection's timer while it waits): the buffers must still be freed afterwards."""
    s = serve(init_pki, "--upstream", upstream.url, env={"LD_PRELOAD": census_lib})
    held_connections_release_their_buffers(s, str(init_pki), lambda c: get(c, "/app"))


def test_connections_that_sent_nothing_hold_no_buffers(serve, init_pki, census_lib):
    s = serve(init_pki, env={"LD_PRELOAD": census_lib})
    held_connections_release_their_buffers(s, str(init_pki), lambda c: 200)
