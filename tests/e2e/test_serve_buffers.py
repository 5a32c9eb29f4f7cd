"""OpenSSL's record buffers (about 34 kB a connection) are freed after every
record, except on a busy connection (one that answers again within
RELEASE_BUFFERS_MS of its last answer, src/server/worker.c), which keeps them
until it has been quiet that long: a connection that has sent nothing or made
one request holds none, and a busy one, whether its answers are written at
once or later (the proxy), holds none once it is quiet.

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


def held_connections_release_their_buffers(s, pki, work):
    base = record_buffers(s)
    conns = [connect(s, pki) for _ in range(CONNS)]
    try:
        for c in conns:
            assert work(c) == 200
        wait_until(lambda: record_buffers(s) - base < CONNS // 10, timeout=10 * SLOW,
                   what=f"the record buffers of {CONNS} quiet connections to be freed")
        # And a quiet connection takes up its work again.
        assert work(conns[0]) == 200
    finally:
        for c in conns:
            c.close()


def three_requests(c, path="/test"):
    """The second answer makes the connection busy; the third then keeps its buffers."""
    assert get(c, path) == 200
    assert get(c, path) == 200
    return get(c, path)


def test_busy_keep_alive_connections_free_their_buffers_when_quiet(serve, init_pki, census_lib):
    s = serve(init_pki, env={"LD_PRELOAD": census_lib})
    held_connections_release_their_buffers(s, str(init_pki), three_requests)


def test_busy_proxied_connections_free_their_buffers_when_quiet(serve, init_pki, census_lib,
                                                                upstream):
    """The proxy answers later, from outside the connection's own I/O (the worker stops the
    connection's timer while it waits): the buffers must still be freed afterwards."""
    s = serve(init_pki, "--upstream", upstream.url, env={"LD_PRELOAD": census_lib})
    held_connections_release_their_buffers(s, str(init_pki), lambda c: three_requests(c, "/app"))


def test_connections_that_made_one_request_hold_no_buffers(serve, init_pki, census_lib):
    s = serve(init_pki, env={"LD_PRELOAD": census_lib})
    held_connections_release_their_buffers(s, str(init_pki), get)


def test_connections_that_sent_nothing_hold_no_buffers(serve, init_pki, census_lib):
    s = serve(init_pki, env={"LD_PRELOAD": census_lib})
    held_connections_release_their_buffers(s, str(init_pki), lambda c: 200)
