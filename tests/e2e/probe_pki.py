"""Certificates made by the openssl CLI (nobody here wrote it), and small peers
for the `mtls probe` tests: openssl s_server, a plain-HTTP answerer, a port that
accepts and never speaks."""
import os
import signal
import socket
import subprocess
import threading

from conftest import free_port, wait_for_port
from pki_openssl import sign_expired


def openssl(*args, cwd=None):
    r = subprocess.run(["openssl", *[str(a) for a in args]], cwd=cwd, capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 0, f"openssl {args}: {r.stderr}"
    return r


def make_ca(d, name, cn):
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", f"{name}.key", "-out", f"{name}.crt", "-days", "30", "-subj", f"/CN={cn}",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)


def make_intermediate(d, name, cn, ca):
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={cn}", cwd=d)
    with open(os.path.join(d, f"{name}.ext"), "w") as f:
        f.write("basicConstraints=critical,CA:TRUE,pathlen:0\n"
                "keyUsage=critical,keyCertSign,cRLSign\n")
    openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key",
            "-CAcreateserial", "-out", f"{name}.crt", "-days", "30", "-extfile", f"{name}.ext",
            cwd=d)


def make_leaf(d, name, cn, ca, eku, san=None, days=30):
    """A leaf signed by ca; days=-1 makes one that has already expired."""
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={cn}", cwd=d)
    ext = ["basicConstraints=CA:FALSE", "keyUsage=critical,digitalSignature",
           f"extendedKeyUsage={eku}"]
    if san:
        ext.append(f"subjectAltName={san}")
    with open(os.path.join(d, f"{name}.ext"), "w") as f:
        f.write("\n".join(ext) + "\n")
    if days < 0:
        sign_expired(d, name, ca, f"{name}.ext")
        return
    openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key",
            "-CAcreateserial", "-out", f"{name}.crt", "-days", str(days),
            "-extfile", f"{name}.ext", cwd=d)


def make_pki(d):
    """The article's names, plus a stranger CA and expired certificates."""
    make_ca(d, "serverca", "server-example-ca")
    make_ca(d, "clientca", "client-example-ca")
    make_ca(d, "otherca", "other-ca")
    make_leaf(d, "server", "localhost", "serverca", "serverAuth", "DNS:localhost,IP:127.0.0.1")
    make_leaf(d, "client", "localclient", "clientca", "clientAuth")
    make_leaf(d, "stranger", "stranger", "otherca", "clientAuth")
    make_leaf(d, "expired", "localclient", "clientca", "clientAuth", days=-1)
    make_leaf(d, "serverish", "localclient", "clientca", "serverAuth")
    make_intermediate(d, "serverint", "server-intermediate", "serverca")
    make_leaf(d, "chained", "localhost", "serverint", "serverAuth", "DNS:localhost,IP:127.0.0.1")
    make_leaf(d, "oldserver", "localhost", "serverca", "serverAuth",
              "DNS:localhost,IP:127.0.0.1", days=-1)
    return d


class Peer:
    """A server process or thread the test started; stop() cleans it up."""

    def __init__(self, port, proc=None, stop=None):
        self.port = port
        self.proc = proc
        self._stop = stop

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._stop is not None:
            self._stop()


def start_s_server(pki, *extra, cert="server", require_client=True):
    """openssl s_server -www on a free port, requiring a client certificate
    from clientca (-Verify 1 -verify_return_error) unless told otherwise."""
    port = free_port()
    args = ["openssl", "s_server", "-accept", str(port), "-naccept", "1000", "-www", "-quiet",
            "-cert", f"{cert}.crt", "-key", f"{cert}.key"]
    if require_client:
        args += ["-CAfile", "clientca.crt", "-Verify", "1", "-verify_return_error"]
    proc = subprocess.Popen(args + list(extra), cwd=pki, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port, proc=proc)
    except Exception:
        Peer(port, proc).stop()
        raise
    return Peer(port, proc)


def start_thread_server(handle):
    """A TCP listener on a free port; handle(conn) runs for each connection."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    done = threading.Event()
    conns = []

    def loop():
        while not done.is_set():
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            conns.append(conn)
            if done.is_set():
                return
            handle(conn)

    t = threading.Thread(target=loop, daemon=True)
    t.start()
    port = sock.getsockname()[1]

    def stop():
        done.set()
        try:
            # Wake accept() so the thread ends.
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        except OSError:
            pass
        sock.close()
        t.join(timeout=5)
        for c in conns:
            c.close()

    return Peer(port, stop=stop)


def plain_http_answer(conn):
    """What a plain HTTP server (nginx on port 80) says to a TLS ClientHello."""
    try:
        conn.recv(4096)
        conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/html\r\n"
                     b"Content-Length: 11\r\nConnection: close\r\n\r\nbad request")
    except OSError:
        pass
    conn.close()


def never_answer(conn):
    """Accepts and keeps silent (the connection is closed at stop())."""
