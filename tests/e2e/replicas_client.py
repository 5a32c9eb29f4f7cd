"""The client of tests/e2e/test_replicas.py, run inside the client's network
namespace (`nsenter --net=/proc/PID/ns/net python3 replicas_client.py PKI HOST PORT`). It
reads one JSON command per line on stdin and answers one JSON line on
stdout, so that TLS sessions (which cannot leave a process) live across
commands:

  {"op": "get", "path": P, "cert": NAME, "session": S, "save": S}
      one mTLS GET on a new connection, offering session S if given and
      keeping the session it ends with as S; answers ok, status, reused,
      body, error
  {"op": "load_start", "threads": N}   new connections with one GET each, in
                                        N threads, until load_stop
  {"op": "load_status"}                 how many requests succeeded so far
  {"op": "load_stop"}                   every request: t0, t1 (monotonic), ok, error
"""
import json
import os
import socket
import ssl
import sys
import threading
import time

PKI, HOST, PORT = sys.argv[1], sys.argv[2], int(sys.argv[3])
contexts = {}
sessions = {}


def context(cert):
    # A session resumes only through the SSLContext that made it.
    if cert not in contexts:
        ctx = ssl.create_default_context(cafile=os.path.join(PKI, "serverca.crt"))
        ctx.load_cert_chain(os.path.join(PKI, cert + ".crt"), os.path.join(PKI, cert + ".key"))
        contexts[cert] = ctx
    return contexts[cert]


def get(path, cert="client", session=None):
    """Returns (status or 0, reused, body, session, error)."""
    raw = socket.create_connection((HOST, PORT), timeout=5)
    try:
        with context(cert).wrap_socket(raw, server_hostname="localhost",
                                       session=session) as s:
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
                      .encode())
            data = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
            status = int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/1.1 ") else 0
            body = data.split(b"\r\n\r\n", 1)[-1].decode(errors="replace")
            return status, s.session_reused, body, s.session, "" if status else "no answer"
    except (OSError, ssl.SSLError) as e:
        return 0, False, "", None, str(e)
    finally:
        raw.close()


class Load:
    def __init__(self, threads):
        self.records = []
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.n = 0
        self.threads = [threading.Thread(target=self.run, daemon=True) for _ in range(threads)]
        for t in self.threads:
            t.start()

    def run(self):
        while not self.stop.is_set():
            with self.lock:
                self.n += 1
                n = self.n
            t0 = time.monotonic()
            status, _, _, _, error = get(f"/test?load={n}")
            rec = {"t0": t0, "t1": time.monotonic(), "ok": status == 200,
                   "error": error or (f"status {status}" if status != 200 else "")}
            with self.lock:
                self.records.append(rec)

    def finish(self):
        self.stop.set()
        for t in self.threads:
            t.join()
        return self.records


load = None
for line in sys.stdin:
    cmd = json.loads(line)
    op = cmd["op"]
    if op == "get":
        status, reused, body, session, error = get(cmd["path"], cmd.get("cert", "client"),
                                                   sessions.get(cmd.get("session")))
        if cmd.get("save") and session is not None:
            sessions[cmd["save"]] = session
        out = {"ok": status == 200, "status": status, "reused": reused, "body": body,
               "error": error}
    elif op == "load_start":
        load = Load(cmd.get("threads", 4))
        out = {"ok": True}
    elif op == "load_status":
        with load.lock:
            out = {"ok": sum(1 for r in load.records if r["ok"]), "done": len(load.records)}
    elif op == "load_stop":
        out = {"records": load.finish()}
        load = None
    else:
        out = {"error": f"unknown op {op}"}
    sys.stdout.write(json.dumps(out) + "\n")
    sys.stdout.flush()
