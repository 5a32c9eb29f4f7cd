"""An upstream for the reverse-proxy tests: Python's http.server on 127.0.0.1
port 0 (HTTP/1.1 keep-alive) in a thread, that echoes what it received and
streams bodies both ways without holding them whole.

  any path        200 JSON: method, path, headers (in order), body_len, body_sha256,
                  client_port (the TCP port mtls connected from: pool reuse shows)
  /stream/N       N bytes, chunked, in 64 KiB pieces (b"0123456789abcdef" repeated)
  /slow/S         waits S seconds, then 200
  /die            promises 1000 bytes, sends 10, closes
  /status/N       status N, a small body
"""
import hashlib
import http.server
import json
import socketserver
import threading
import time

PATTERN = b"0123456789abcdef" * 4096  # 64 KiB


def pattern_bytes(n):
    """The first n bytes of what /stream/N sends."""
    full, rest = divmod(n, len(PATTERN))
    return PATTERN * full + PATTERN[:rest]


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def read_body(self):
        """Reads the request body piece by piece; returns (length, sha256 hex)."""
        h = hashlib.sha256()
        n = 0
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                left = size
                while left:
                    piece = self.rfile.read(min(left, 65536))
                    h.update(piece)
                    n += len(piece)
                    left -= len(piece)
                self.rfile.readline()
        else:
            left = int(self.headers.get("Content-Length", "0") or 0)
            while left:
                piece = self.rfile.read(min(left, 65536))
                if not piece:
                    break
                h.update(piece)
                n += len(piece)
                left -= len(piece)
        return n, h.hexdigest()

    def send_json(self, status, obj):
        body = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Upstream", "echo")
        self.send_header("Connection", "keep-alive, X-Hop")
        self.send_header("X-Hop", "must not reach the client")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def handle_any(self):
        self.server.stats["requests"] += 1
        self.server.stats["ports"].add(self.client_address[1])
        n, digest = self.read_body()
        path = self.path
        if path.startswith("/stream/"):
            total = int(path.split("/")[2])
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            left = total
            while left:
                piece = PATTERN[:min(left, len(PATTERN))]
                self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                left -= len(piece)
            self.wfile.write(b"0\r\n\r\n")
            return
        if path.startswith("/slow/"):
            time.sleep(float(path.split("/")[2]))
        if path == "/die":
            self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n0123456789")
            self.wfile.flush()
            self.close_connection = True
            return
        if path.startswith("/status/"):
            self.send_json(int(path.split("/")[2]), {"status": int(path.split("/")[2])})
            return
        self.send_json(200, {
            "method": self.command,
            "path": path,
            "headers": [[k, v] for k, v in self.headers.items()],
            "body_len": n,
            "body_sha256": digest,
            "client_port": self.client_address[1],
        })

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = do_OPTIONS = handle_any


class _Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request, client_address):
        # mtls closing a connection mid-answer (a client that left, a timeout) is expected.
        import sys
        if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            super().handle_error(request, client_address)


class Upstream:
    """Start with Upstream(); .port; .stats; .close()."""

    def __init__(self):
        self.httpd = _Server(("127.0.0.1", 0), Handler)
        self.httpd.stats = {"requests": 0, "ports": set()}
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def stats(self):
        return self.httpd.stats

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
