"""libmtls as a C programmer gets it (issue 11): `meson install --destdir D`,
then every example of examples/ built with cc against D's headers and mtls.pc
alone, run on a loopback port and checked with curl; each public header
compiles alone; the shared library exports mtls_* and nothing else."""
import glob
import json
import os
import re
import shutil
import subprocess
import time

import pytest

from conftest import MTLS, ROOT, SANITIZED, wait_until
from serve_helpers import *  # noqa: F401,F403 (fixtures)
from serve_helpers import curl, read_text, server_dir

pytestmark = pytest.mark.skipif(
    SANITIZED, reason="the sanitizer build's library needs the sanitizer runtime to link against")

EXAMPLES = ["hello", "whoami", "async"]


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """D: what `meson install --destdir D` of the build the tests run leaves."""
    d = tmp_path_factory.mktemp("destdir")
    build = os.path.dirname(MTLS)
    r = subprocess.run(["meson", "install", "-C", build, "--destdir", str(d), "--quiet"],
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout + r.stderr
    pcs = glob.glob(os.path.join(d, "**", "pkgconfig", "mtls.pc"), recursive=True)
    assert len(pcs) == 1, pcs
    env = dict(os.environ, PKG_CONFIG_PATH=os.path.dirname(pcs[0]), PKG_CONFIG_SYSROOT_DIR=str(d))
    flags = subprocess.run(["pkg-config", "--cflags", "--libs", "mtls"], env=env,
                           capture_output=True, text=True)
    assert flags.returncode == 0, flags.stderr
    libdir = os.path.dirname(os.path.dirname(pcs[0]))
    return {"dir": str(d), "env": env, "flags": flags.stdout.split(), "libdir": libdir}


def test_install_has_the_library_headers_pc_and_binary(installed):
    d, libdir = installed["dir"], installed["libdir"]
    assert os.path.isfile(os.path.join(libdir, "libmtls.a"))
    so = os.path.join(libdir, "libmtls.so")
    assert os.path.islink(so)
    r = subprocess.run(["readelf", "-d", so], capture_output=True, text=True)
    assert re.search(r"SONAME.*\[libmtls\.so\.0\]", r.stdout), r.stdout
    assert glob.glob(os.path.join(d, "**", "bin", "mtls"), recursive=True)
    headers = sorted(os.path.basename(h) for h in
                     glob.glob(os.path.join(d, "**", "include", "mtls", "*.h"), recursive=True))
    assert headers == ["app.h", "base.h", "version.h"], headers
    # Nothing of the source tree: the flags name D and system folders only.
    assert not [f for f in installed["flags"] if ROOT in f], installed["flags"]


def test_each_public_header_compiles_alone(installed):
    incs = glob.glob(os.path.join(installed["dir"], "**", "include"), recursive=True)
    inc = [i for i in incs if os.path.isdir(os.path.join(i, "mtls"))][0]
    for h in sorted(os.listdir(os.path.join(inc, "mtls"))):
        src = f"#include <mtls/{h}>\n"
        r = subprocess.run(["cc", "-x", "c", "-std=c17", "-Wall", "-Wextra", "-Werror", "-pedantic",
                            "-fsyntax-only", "-I", inc, "-"], input=src, capture_output=True,
                           text=True)
        assert r.returncode == 0, f"mtls/{h} does not compile alone:\n{r.stderr}"


def test_the_shared_library_exports_mtls_symbols_only(installed):
    so = os.path.join(installed["libdir"], "libmtls.so")
    r = subprocess.run(["nm", "-D", "--defined-only", so], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    names = [line.split()[-1] for line in r.stdout.splitlines() if line.strip()]
    assert "mtls_app_new" in names and "mtls_version" in names
    others = [n for n in names if not re.match(r"mtls_[a-z]", n)]
    assert not others, f"exported besides mtls_*: {others[:20]}"


def build_example(installed, name, tmp_path):
    """cc examples/NAME.c (copied away from the tree) with pkg-config's flags only."""
    src = tmp_path / f"{name}.c"
    shutil.copy(os.path.join(ROOT, "examples", f"{name}.c"), src)
    exe = tmp_path / name
    r = subprocess.run(["cc", "-std=c17", "-Wall", "-Wextra", "-Werror", str(src), "-o", str(exe),
                        *installed["flags"]], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    return str(exe)


class Example:
    """An example server on 127.0.0.1, port 0, in folder d (its logs land there)."""

    def __init__(self, exe, d, installed):
        self.out = os.path.join(d, "out.txt")
        self.err = os.path.join(d, "err.txt")
        env = dict(os.environ, LD_LIBRARY_PATH=installed["libdir"])
        with open(self.out, "w") as out, open(self.err, "w") as err:
            self.proc = subprocess.Popen([exe, "--listen", "127.0.0.1:0"], cwd=d, stdout=out,
                                         stderr=err, env=env)

        def ready():
            assert self.proc.poll() is None, f"exited {self.proc.returncode}: {read_text(self.err)}"
            return re.search(r"HTTPS listening on (\d+)\.\.\.\.", read_text(self.out))
        wait_until(ready, timeout=15, what="the example listening")
        self.port = int(ready().group(1))
        assert self.port > 0

    def stop(self):
        self.proc.terminate()
        try:
            return self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise


@pytest.fixture
def examples(installed, init_pki, tmp_path):
    started = []

    def start(name):
        d = tmp_path / name
        d.mkdir()
        server_dir(init_pki, d)
        ex = Example(build_example(installed, name, d), str(d), installed)
        ex.dir = str(d)
        started.append(ex)
        return ex
    yield start
    for ex in started:
        if ex.proc.poll() is None:
            ex.proc.kill()
            ex.proc.wait()


def get(ex, path, *extra, cert=True):
    args = ["--cacert", "serverca.crt", *extra]
    if cert:
        args += ["--cert", "client.crt", "--key", "client.key"]
    return curl(*args, "-w", "\n%{http_code}", f"https://localhost:{ex.port}{path}", cwd=ex.dir)


def test_hello_is_the_tutorials_server(examples):
    ex = examples("hello")
    ok = get(ex, "/test")
    assert ok.returncode == 0, ok.stderr
    body, status = ok.stdout.rsplit("\n", 1)
    assert status == "200" and json.loads(body) == {"message": "Hello mtls"}
    refused = get(ex, "/test", cert=False)
    assert refused.returncode in (35, 56), (refused.returncode, refused.stdout, refused.stderr)
    other = get(ex, "/nothing")
    assert other.stdout.endswith("\n404"), other.stdout
    # The tutorial's two logs, in the server's folder.
    wait_until(lambda: "GET /test" in read_text(os.path.join(ex.dir, "access.log")),
               what="the access log line")
    assert "CN=localclient" in read_text(os.path.join(ex.dir, "access.log"))
    wait_until(lambda: "no client certificate was sent" in
               read_text(os.path.join(ex.dir, "system.log")), what="the refusal in system.log")
    # SIGTERM: mtls_app_run() returns in the program, which exits 0 (the workers never return).
    assert ex.stop() == 0, read_text(ex.err)
    assert "error" not in read_text(ex.err)


def test_whoami_shows_the_client_and_path_parameters(examples):
    ex = examples("whoami")
    r = get(ex, "/whoami")
    assert r.returncode == 0, r.stderr
    assert "subject: CN=localclient\n" in r.stdout, r.stdout
    assert re.search(r"^tls: TLSv1\.[23] \S+", r.stdout, re.M), r.stdout
    assert re.search(r"^sha256: ([0-9A-F]{2}:){31}[0-9A-F]{2}$", r.stdout, re.M), r.stdout
    assert r.stdout.endswith("\n200")
    u = get(ex, "/users/bob")
    assert u.stdout == "hello, bob\n\n200", u.stdout
    assert get(ex, "/users/").stdout.endswith("\n404")
    assert get(ex, "/users/bob/x").stdout.endswith("\n404")
    assert ex.stop() == 0


def test_async_answers_after_its_timer(examples):
    ex = examples("async")
    t0 = time.monotonic()
    r = get(ex, "/slow?ms=300")
    took = time.monotonic() - t0
    assert r.returncode == 0, r.stderr
    body, status = r.stdout.rsplit("\n", 1)
    assert status == "200" and json.loads(body) == {"message": "Hello mtls", "waited_ms": 300}
    assert took >= 0.3, took
    # A client that gives up first: the timer is cancelled and the server goes on.
    cut = curl("--cacert", "serverca.crt", "--cert", "client.crt", "--key", "client.key",
               "--max-time", "0.3", f"https://localhost:{ex.port}/slow?ms=3000", cwd=ex.dir)
    assert cut.returncode == 28, cut.stderr
    again = get(ex, "/slow?ms=10")
    assert again.stdout.endswith("\n200"), again.stdout
    assert ex.stop() == 0, read_text(ex.err)


EMBED = r"""
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <mtls/app.h>

static int pid(mtls_request *req, mtls_response *res, void *ctx)
{
    char body[64];
    int n = snprintf(body, sizeof(body), "{\"pid\":%d}", (int)getpid());

    (void)req;
    (void)ctx;
    return mtls_response_send(res, body, (size_t)n);
}

/* /reload and /stop: the server asked from inside a handler, in any worker. */
static int control(mtls_request *req, mtls_response *res, void *ctx)
{
    size_t len;
    const char *what = mtls_request_param(req, "what", &len);
    int rc = len == 4 ? mtls_app_stop(ctx) : mtls_app_reload(ctx);

    (void)what;
    return mtls_response_send_json(res, rc == 0 ? 200 : 500, "{}");
}

/* POST /echo: the body back, once it is all in, with a header of the request. */
struct echo {
    mtls_response *res;
    char buf[4096];
    size_t len;
};

static void echo_data(void *ctx, const char *data, size_t len)
{
    struct echo *e = ctx;

    if (len > sizeof(e->buf) - e->len)
        len = sizeof(e->buf) - e->len;
    memcpy(e->buf + e->len, data, len);
    e->len += len;
}

static void echo_end(void *ctx)
{
    struct echo *e = ctx;

    mtls_response_send(e->res, e->buf, e->len);
    free(e);
}

static void echo_gone(void *ctx)
{
    free(ctx);
}

static int echo(mtls_request *req, mtls_response *res, void *ctx)
{
    struct echo *e = calloc(1, sizeof(*e));
    size_t len;
    const char *tag = mtls_request_header(req, "x-tag", &len);

    (void)ctx;
    if (e == NULL || tag == NULL || len > 100)
        return -1;
    e->res = res;
    mtls_response_set_status(res, 201);
    if (mtls_response_set_header(res, "X-Tag", "seen") != 0 ||
        mtls_response_set_header(res, "Content-Type", "application/octet-stream") != 0)
        return -1;
    mtls_response_on_abort(res, echo_gone, e);
    return mtls_request_read_body(req, echo_data, echo_end, e);
}

/* GET /stream: a body of unknown length (chunked), one piece now and the
   rest from a timer on the worker's loop. */
static void stream_rest(void *ctx)
{
    mtls_response *res = ctx;

    mtls_response_write(res, "-two", 4);
    mtls_response_end(res);
}

static void stream_gone(void *ctx)
{
    mtls_timer_cancel(ctx);
}

static int stream(mtls_request *req, mtls_response *res, void *ctx)
{
    mtls_timer *t;

    (void)req;
    (void)ctx;
    if (mtls_worker_loop() == NULL || mtls_response_start(res, -1) != 0 ||
        mtls_response_write(res, "one", 3) < 0)
        return -1;
    t = mtls_timer_start(50, stream_rest, res);
    if (t == NULL)
        return -1;
    mtls_response_on_abort(res, stream_gone, t);
    return 0;
}

int main(void)
{
    mtls_app *app = NULL;
    mtls_err err = {0};
    int rc = -1;

    if (MTLS_VERSION_NUMBER != mtls_version_number())
        return 3;
    if (mtls_app_new(&app, &err) == 0 && mtls_app_set(app, "listen", "127.0.0.1:0", &err) == 0 &&
        mtls_app_set(app, "workers", "2", &err) == 0 &&
        mtls_app_set(app, "worker-model", getenv("MODEL"), &err) == 0 &&
        mtls_app_route(app, "GET", "/pid", pid, NULL, &err) >= 0 &&
        mtls_app_route(app, "POST", "/echo", echo, NULL, &err) >= 0 &&
        mtls_app_route(app, "GET", "/stream", stream, NULL, &err) >= 0 &&
        mtls_app_route(app, "POST", "/ctl/:what", control, app, &err) >= 0 &&
        mtls_app_start(app, &err) == 0) {
        printf("HTTPS listening on %d....\n", mtls_app_port(app));
        fflush(stdout);
        rc = mtls_app_run(app, &err);
    }
    printf("run returned %d in %d: %s\n", rc, (int)getpid(), err.msg);
    fflush(stdout);
    mtls_app_free(app);
    return rc == 0 ? 0 : 1;
}
"""


@pytest.mark.parametrize("model", ["process", "thread"])
def test_embedding_run_reload_stop(model, installed, init_pki, tmp_path, monkeypatch):
    """Two workers: handlers run in the worker processes (or threads of the
    program); mtls_app_reload() and mtls_app_stop() work from a handler; after
    the stop mtls_app_run() returns once, in the program itself, and nowhere
    else (a worker child exits instead)."""
    server_dir(init_pki, tmp_path)
    (tmp_path / "embed.c").write_text(EMBED)
    exe = tmp_path / "embed"
    r = subprocess.run(["cc", "-std=c17", "-Wall", "-Werror", str(tmp_path / "embed.c"), "-o",
                        str(exe), *installed["flags"]], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    monkeypatch.setenv("MODEL", model)
    ex = Example(str(exe), str(tmp_path), installed)
    ex.dir = str(tmp_path)
    try:
        pids = set()
        for _ in range(10):
            g = get(ex, "/pid")
            assert g.stdout.endswith("\n200"), g.stdout
            pids.add(json.loads(g.stdout.rsplit("\n", 1)[0])["pid"])
        if model == "process":
            assert ex.proc.pid not in pids
        else:
            assert pids == {ex.proc.pid}
        assert get(ex, "/test").stdout.startswith('{"message":"Hello mtls"}')  # the built-ins stay
        for http in ("--http1.1", "--http2"):  # the same handlers answer both
            e = get(ex, "/echo", http, "-i", "-H", "X-Tag: t", "--data-binary", "x" * 3000)
            assert re.match(r"HTTP/(1\.1|2) 201", e.stdout), e.stdout[:300]
            head = e.stdout.split("\n\n", 1)[0].lower() + "\n"  # curl's text: "\n" line ends
            assert "\nx-tag: seen\n" in head, head
            assert "\ncontent-type: application/octet-stream\n" in head, head
            assert e.stdout.endswith("\n\n" + "x" * 3000 + "\n201"), e.stdout[-100:]
            st = get(ex, "/stream", http, "-i")
            assert st.stdout.endswith("\n\none-two\n200"), st.stdout
            if http == "--http1.1":
                assert "\ntransfer-encoding: chunked\n" in st.stdout.lower(), st.stdout
        assert get(ex, "/echo", "-X", "GET").stdout.endswith("\n405")
        assert get(ex, "/ctl/reload", "-X", "POST").stdout.endswith("\n200")
        wait_until(lambda: "SIGHUP: reloaded" in read_text(os.path.join(ex.dir, "system.log")),
                   what="the reload in system.log")
        assert get(ex, "/ctl/stop", "-X", "POST").stdout.endswith("\n200")
        assert ex.proc.wait(timeout=20) == 0, read_text(ex.err)
    finally:
        if ex.proc.poll() is None:
            ex.proc.kill()
            ex.proc.wait()
    lines = [line for line in read_text(ex.out).splitlines() if line.startswith("run returned")]
    assert lines == [f"run returned 0 in {ex.proc.pid}: "], read_text(ex.out)


@pytest.mark.parametrize("header", ["http.h", "http_header.h", "server.h"])
def test_layer_headers_need_no_llhttp(header):
    """The request side of src/http carries no llhttp type (the parser lives in
    src/http/http_conn.h): http.h compiles with the tree's include/ alone, and
    server.h needs OpenSSL's headers (tls.h) but not llhttp's."""
    r = subprocess.run(["cc", "-x", "c", "-std=c17", "-Wall", "-Werror", "-fsyntax-only", "-I",
                        os.path.join(ROOT, "include"), "-"], input=f"#include <mtls/{header}>\n",
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
