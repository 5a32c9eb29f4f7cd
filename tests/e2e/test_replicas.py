"""Replicas behind HAProxy, in network namespaces (issue 14, item 2).

Five namespaces, nothing leaving the machine: the client (10.77.0.2), HAProxy
(10.77.0.1 towards the client, 10.77.N.1 towards replica N) and three
replicas (10.77.N.2), each joined to HAProxy's namespace by a veth pair.
HAProxy runs in TCP mode with `send-proxy-v2` and an mTLS health check
(GET /test every 100 ms); the replicas run `mtls serve --proxy-protocol` with
the same PKI, the same `--ticket-keys` file and the same CRL file. The
HAProxy configuration is the one docs/DEPLOYMENT.md explains.

  (a) a client resumes on another replica than the one that issued its session
  (b) the access logs show the client's own address, not HAProxy's
  (c) with one replica killed under load, every request started after HAProxy's
      stats socket first shows it DOWN succeeds
  (d) a revocation reaches every replica with one SIGHUP each: the revoked
      client, offering its old ticket, is refused by all three

Needs root, iproute2, util-linux's unshare and nsenter, and haproxy (scripts/install-deps.sh test); skipped
otherwise, saying which is missing.
"""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest

from conftest import MTLS, SANITIZED, assert_no_sanitizer_report, run_mtls, wait_until

SLOW = 4 if SANITIZED else 1
HERE = os.path.dirname(os.path.abspath(__file__))
REPLICAS = 3
PORT = 8443


# Each namespace is held by a process of its own (`unshare --net sleep`) and
# named by its /proc path: no `ip netns add`, so nothing is mounted on
# /run/netns, and a namespace goes away with its last process. (In a chroot
# such as fresh-debian's, `ip netns add` left mounts that outlived the test.)
def _netns_holder():
    """A process in a new network namespace, once it is there."""
    p = subprocess.Popen(["unshare", "--net", "--", "sleep", "infinity"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    own = os.readlink("/proc/self/ns/net")

    def entered():
        if p.poll() is not None:
            raise AssertionError(f"unshare --net failed: {p.stderr.read().decode().strip()}")
        try:
            return os.readlink(f"/proc/{p.pid}/ns/net") != own
        except OSError:
            return False
    wait_until(entered, timeout=10, what="a network namespace")
    return p


def _stop(p):
    if p.poll() is None:
        p.kill()
    p.wait()


def _why_skip():
    if os.geteuid() != 0:
        return "needs root (network namespaces)"
    for tool, pkg in (("ip", "iproute2"), ("unshare", "util-linux"), ("nsenter", "util-linux"),
                      ("haproxy", "haproxy")):
        if shutil.which(tool) is None:
            return f"needs {tool} ({pkg}): scripts/install-deps.sh test"
    try:
        _stop(_netns_holder())
    except AssertionError as e:
        return f"cannot create a network namespace: {e}"
    return None


_skip = _why_skip()
pytestmark = pytest.mark.skipif(_skip is not None, reason=_skip or "")


def sh(*args):
    r = subprocess.run([str(a) for a in args], capture_output=True, text=True)
    assert r.returncode == 0, f"{' '.join(map(str, args))}: {r.stderr}"
    return r.stdout


def read_text(path):
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except FileNotFoundError:
        return ""


def json_lines(path):
    return [json.loads(l) for l in read_text(path).splitlines() if l.strip()]


HAPROXY_CFG = """\
global
    stats socket {sock} mode 600 level admin
    maxconn 2000

defaults
    mode tcp
    timeout connect 2s
    timeout client 30s
    timeout server 30s
    retries 2
    option redispatch

frontend mtls
    bind 10.77.0.1:{port}
    default_backend replicas

backend replicas
    balance roundrobin
    option httpchk
    http-check send meth GET uri /test ver HTTP/1.1 hdr Host localhost
    http-check expect status 200
    default-server send-proxy-v2 check check-ssl check-sni localhost verify required ca-file {pki}/serverca.crt verifyhost localhost crt {pki}/check-client.pem inter 100ms fall 2 rise 1
{servers}
"""


class Cluster:
    """The namespaces, the replicas, HAProxy and the client; close() removes them all."""

    def __init__(self, base):
        self.base = str(base)
        self.pki = os.path.join(self.base, "pki")
        tag = f"mtls{os.getpid() % 100000}"
        self.ns_client, self.ns_lb = f"{tag}-client", f"{tag}-lb"
        self.ns_replica = [f"{tag}-r{i}" for i in range(1, REPLICAS + 1)]
        self.namespaces = {}  # name -> the process that holds it
        self.replicas = [None] * REPLICAS
        self.procs = []
        self.haproxy = self.client = None
        self.sock = os.path.join(self.base, "haproxy.sock")

    # ---- setup ----

    def make_pki(self):
        def mtls_ok(*args):
            r = run_mtls(*args, cwd=self.pki)
            assert r.returncode == 0, (args, r.stderr)
        os.makedirs(self.pki)
        mtls_ok("init", "--dir", self.pki)
        mtls_ok("cert", "issue", "--ca", "clientca", "--profile", "client", "--cn", "revokee",
                "--out", "revokee")
        mtls_ok("crl", "create", "--ca", "clientca", "--out", "clients.crl")
        with open(os.path.join(self.pki, "ticket.key"), "wb") as f:
            f.write(os.urandom(80))
        os.chmod(os.path.join(self.pki, "ticket.key"), 0o600)
        # HAProxy's health check proves a replica serves mTLS: it needs a client certificate.
        with open(os.path.join(self.pki, "check-client.pem"), "w") as f:
            for name in ("client.crt", "client.key"):
                f.write(read_text(os.path.join(self.pki, name)))

    def in_ns(self, name):
        """The command prefix that runs a program in namespace name. nsenter enters the
        network namespace alone; 'ip netns exec' also remounts /sys in a private mount
        namespace, which fails where / is no mount point (a chroot, as fresh-debian's)."""
        return ["nsenter", f"--net=/proc/{self.namespaces[name].pid}/ns/net"]

    def netns(self, name):
        self.namespaces[name] = _netns_holder()
        sh(*self.in_ns(name), "ip", "link", "set", "lo", "up")

    def link(self, ns_a, addr_a, ns_b, dev_b, addr_b):
        """A veth pair: veth0 in ns_a, dev_b in ns_b, a /24 on each end."""
        sh("ip", "link", "add", "veth0", "netns", str(self.namespaces[ns_a].pid), "type", "veth",
           "peer", "name", dev_b, "netns", str(self.namespaces[ns_b].pid))
        for ns, dev, addr in ((ns_a, "veth0", addr_a), (ns_b, dev_b, addr_b)):
            sh(*self.in_ns(ns), "ip", "addr", "add", addr + "/24", "dev", dev)
            sh(*self.in_ns(ns), "ip", "link", "set", dev, "up")

    def make_network(self):
        for name in [self.ns_client, self.ns_lb, *self.ns_replica]:
            self.netns(name)
        self.link(self.ns_client, "10.77.0.2", self.ns_lb, "client", "10.77.0.1")
        for i, ns in enumerate(self.ns_replica, 1):
            self.link(ns, f"10.77.{i}.2", self.ns_lb, f"r{i}", f"10.77.{i}.1")

    def start(self, ns, args, log):
        out = open(log, "w")
        p = subprocess.Popen([*self.in_ns(ns), *map(str, args)], stdout=out,
                             stderr=subprocess.STDOUT, start_new_session=True, cwd=self.pki)
        out.close()
        self.procs.append(p)
        return p

    def replica_dir(self, i):
        return os.path.join(self.base, f"r{i + 1}")

    def start_replica(self, i):
        d = self.replica_dir(i)
        os.makedirs(d, exist_ok=True)
        out = os.path.join(d, "serve.out")
        p = self.start(self.ns_replica[i], [
            MTLS, "serve", "--listen", f"10.77.{i + 1}.2:{PORT}", "--workers", "1",
            "--proxy-protocol", "--ticket-keys", "ticket.key", "--crl", "clients.crl",
            "--log-format", "json", "--access-log", os.path.join(d, "access.log"),
            "--system-log", os.path.join(d, "system.log")], out)
        self.replicas[i] = p

        def ready():
            assert p.poll() is None, f"replica {i + 1} exited:\n{read_text(out)}"
            return "HTTPS listening on" in read_text(out)
        wait_until(ready, timeout=15 * SLOW, what=f"replica {i + 1} listening")

    def start_haproxy(self):
        servers = "\n".join(f"    server r{i} 10.77.{i}.2:{PORT}" for i in range(1, REPLICAS + 1))
        cfg = os.path.join(self.base, "haproxy.cfg")
        with open(cfg, "w") as f:
            f.write(HAPROXY_CFG.format(sock=self.sock, port=PORT, pki=self.pki, servers=servers))
        self.haproxy = self.start(self.ns_lb, ["haproxy", "-db", "-f", cfg],
                                  os.path.join(self.base, "haproxy.out"))
        self.wait_status({f"r{i}": "UP" for i in range(1, REPLICAS + 1)})

    def start_client(self):
        self.client = subprocess.Popen(
            [*self.in_ns(self.ns_client), sys.executable,
             os.path.join(HERE, "replicas_client.py"), self.pki, "10.77.0.1", str(PORT)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, start_new_session=True)
        self.procs.append(self.client)

    # ---- use ----

    def status(self):
        """{'r1': 'UP', ...} from HAProxy's stats socket ({} when it does not answer yet)."""
        try:
            with socket.socket(socket.AF_UNIX) as s:
                s.settimeout(2)
                s.connect(self.sock)
                s.sendall(b"show stat\n")
                data = b""
                while chunk := s.recv(65536):
                    data += chunk
        except OSError:
            return {}
        rows = data.decode().splitlines()
        if not rows or not rows[0].startswith("# "):
            return {}
        head = rows[0][2:].split(",")
        out = {}
        for row in rows[1:]:
            f = dict(zip(head, row.split(",")))
            if f.get("pxname") == "replicas" and f.get("svname", "").startswith("r"):
                out[f["svname"]] = f["status"].split(" ")[0]
        return out

    def wait_status(self, want):
        def seen():
            assert self.haproxy.poll() is None, read_text(os.path.join(self.base, "haproxy.out"))
            st = self.status()
            return all(st.get(k) == v for k, v in want.items())
        wait_until(seen, timeout=15 * SLOW, what=f"haproxy to show {want} (now {self.status()})")

    def ask(self, **cmd):
        self.client.stdin.write(json.dumps(cmd) + "\n")
        self.client.stdin.flush()
        line = self.client.stdout.readline()
        assert line, "the client in its namespace exited"
        return json.loads(line)

    def access(self, i):
        return json_lines(os.path.join(self.replica_dir(i), "access.log"))

    def system(self, i):
        return json_lines(os.path.join(self.replica_dir(i), "system.log"))

    def kill_replica(self, i):
        os.killpg(self.replicas[i].pid, signal.SIGKILL)
        self.replicas[i].wait()

    # ---- teardown ----

    def close(self):
        errors = []
        if self.client is not None and self.client.poll() is None:
            self.client.stdin.close()
        for p in self.procs:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGTERM)
                    p.wait(timeout=10 * SLOW)
                except subprocess.TimeoutExpired:
                    os.killpg(p.pid, signal.SIGKILL)
                    p.wait()
                except ProcessLookupError:
                    pass
        for i in range(REPLICAS):
            try:
                assert_no_sanitizer_report(read_text(os.path.join(self.replica_dir(i),
                                                                  "serve.out")))
            except AssertionError as e:
                errors.append(str(e))
        for holder in self.namespaces.values():
            _stop(holder)
        assert not errors, "\n".join(errors)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = Cluster(tmp_path_factory.mktemp("replicas"))
    try:
        c.make_pki()
        c.make_network()
        for i in range(REPLICAS):
            c.start_replica(i)
        c.start_haproxy()
        c.start_client()
        yield c
    finally:
        c.close()


def replica_of(cluster, path):
    """The replica (0-based) whose access log has a request for path."""
    for i in range(REPLICAS):
        if any(l.get("path") == path for l in cluster.access(i)):
            return i
    return None


def test_a_client_resumes_on_another_replica(cluster):
    first = cluster.ask(op="get", path="/whoami?a=0", save="a")
    assert first["ok"] and not first["reused"], first
    for k in range(1, 4):
        r = cluster.ask(op="get", path=f"/whoami?a={k}", session="a", save="a")
        assert r["ok"] and r["reused"], (k, r)
        assert json.loads(r["body"])["client"]["subject"] == "CN=localclient", r
    wait_until(lambda: all(replica_of(cluster, f"/whoami?a={k}") is not None for k in range(4)),
               timeout=10 * SLOW, what="the four requests in the access logs")
    served = [replica_of(cluster, f"/whoami?a={k}") for k in range(4)]
    # Each ticket was issued by the replica of the request before; it resumed elsewhere.
    moved = [k for k in range(1, 4) if served[k] != served[k - 1]]
    assert moved, f"every request went to the same replica: {served}"


def test_access_logs_show_the_client_address(cluster):
    r = cluster.ask(op="get", path="/test?b=1")
    assert r["ok"], r
    wait_until(lambda: replica_of(cluster, "/test?b=1") is not None, timeout=10 * SLOW,
               what="the request in an access log")
    ours = [l for i in range(REPLICAS) for l in cluster.access(i)
            if "?a=" in l.get("path", "") or "?b=" in l.get("path", "")]
    assert ours and all(l["remote_addr"] == "10.77.0.2" for l in ours), ours
    # HAProxy's health checks send LOCAL: they keep HAProxy's own address on each link.
    for i in range(REPLICAS):
        def checks():
            return [l for l in cluster.access(i) if l.get("path") == "/test"]
        wait_until(checks, timeout=10 * SLOW, what=f"a health check of replica {i + 1}")
        assert {l["remote_addr"] for l in checks()} == {f"10.77.{i + 1}.1"}, checks()[:3]


def test_a_killed_replica_costs_no_request_once_haproxy_saw_it(cluster):
    cluster.ask(op="load_start", threads=4)
    try:
        wait_until(lambda: cluster.ask(op="load_status")["ok"] >= 30, timeout=15 * SLOW,
                   what="30 requests under load")
        cluster.kill_replica(2)
        down_seen = None

        def down():
            nonlocal down_seen
            if cluster.status().get("r3") == "DOWN":
                down_seen = time.monotonic()
            return down_seen is not None
        wait_until(down, timeout=10 * SLOW, what="haproxy to mark r3 DOWN")
        after = cluster.ask(op="load_status")["done"]
        wait_until(lambda: cluster.ask(op="load_status")["done"] >= after + 60,
                   timeout=15 * SLOW, what="60 more requests")
    finally:
        records = cluster.ask(op="load_stop")["records"]
    later = [r for r in records if r["t0"] >= down_seen]
    failed_later = [r for r in later if not r["ok"]]
    assert len(later) >= 40, f"only {len(later)} requests started after r3 was marked DOWN"
    assert not failed_later, f"{len(failed_later)} of {len(later)} failed: {failed_later[:3]}"
    # Back in service for the next test.
    cluster.start_replica(2)
    cluster.wait_status({"r3": "UP"})


def test_a_revocation_reaches_every_replica_with_one_reload_each(cluster):
    r = cluster.ask(op="get", path="/whoami?d=0", cert="revokee", save="rv")
    assert r["ok"], r
    r = cluster.ask(op="get", path="/whoami?d=1", cert="revokee", session="rv", save="rv")
    assert r["ok"] and r["reused"], r

    run = lambda *a: run_mtls(*a, cwd=cluster.pki)  # noqa: E731
    assert run("ca", "revoke", "--ca", "clientca", "revokee.crt").returncode == 0
    assert run("crl", "create", "--ca", "clientca", "--out", "clients.crl",
               "--force").returncode == 0
    # The main process logs "reload" once it has checked the files; its worker logs
    # "worker_reload" when its new handshakes use them (each replica runs one worker).
    reloads = [sum(1 for l in cluster.system(i) if l["event"] == "worker_reload")
               for i in range(REPLICAS)]
    for i in range(REPLICAS):
        cluster.replicas[i].send_signal(signal.SIGHUP)
    for i in range(REPLICAS):
        wait_until(lambda: sum(1 for l in cluster.system(i) if l["event"] == "worker_reload")
                   > reloads[i], timeout=10 * SLOW, what=f"replica {i + 1}'s worker to reload")

    def refused_by(i):
        return [l for l in cluster.system(i) if l["event"] == "handshake_rejected"
                and "revoked" in l["message"] and l["peer"].startswith("10.77.0.2:")]
    # Round robin: consecutive connections meet each replica; each offers the old ticket.
    for attempt in range(3 * REPLICAS):
        r = cluster.ask(op="get", path=f"/whoami?d=x{attempt}", cert="revokee", session="rv")
        assert not r["ok"], (attempt, r)
        if all(refused_by(i) for i in range(REPLICAS)):
            break
    wait_until(lambda: all(refused_by(i) for i in range(REPLICAS)), timeout=10 * SLOW,
               what="every replica to log the revoked client's refusal")
    # Everyone else is still served.
    assert cluster.ask(op="get", path="/whoami?d=ok")["ok"]
