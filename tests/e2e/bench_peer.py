#!/usr/bin/python3
"""A small HTTPS server that demands a client certificate and counts what it
sees, for the tests of `mtls bench` (tests/e2e/test_bench_loadgen.py).

usage: bench_peer.py PORT CERT KEY CA

GET /forbidden answers 403, anything else 200 with a small JSON body; HTTP/1.1
keep-alive unless the request says "Connection: close". On SIGTERM it prints
{"connections": N, "requests": N, "max_open": N, "resumed": N} on stdout and exits.
"""
import asyncio
import json
import signal
import ssl
import sys

stats = {"connections": 0, "requests": 0, "max_open": 0, "resumed": 0}
open_now = 0


async def handle(reader, writer):
    global open_now
    stats["connections"] += 1
    sslobj = writer.get_extra_info("ssl_object")
    if sslobj is not None and sslobj.session_reused:
        stats["resumed"] += 1
    open_now += 1
    stats["max_open"] = max(stats["max_open"], open_now)
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            stats["requests"] += 1
            line = head.split(b"\r\n", 1)[0].decode()
            close = b"connection: close" in head.lower()
            status = "403 Forbidden" if line.split(" ")[1] == "/forbidden" else "200 OK"
            body = b'{"message":"Hello mtls"}'
            writer.write(f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n"
                         f"Content-Length: {len(body)}\r\n"
                         f"Connection: {'close' if close else 'keep-alive'}\r\n\r\n".encode()
                         + body)
            await writer.drain()
            if close:
                break
    except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
        pass
    finally:
        open_now -= 1
        writer.close()


async def main():
    port, cert, key, ca = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    ctx.load_verify_locations(ca)
    ctx.verify_mode = ssl.CERT_REQUIRED
    loop = asyncio.get_running_loop()
    # Failed handshakes (the tests' port probes) are expected: keep stderr quiet.
    loop.set_exception_handler(lambda _loop, _ctx: None)
    done = loop.create_future()
    loop.add_signal_handler(signal.SIGTERM, done.set_result, None)
    server = await asyncio.start_server(handle, "127.0.0.1", int(port), ssl=ctx, backlog=512)
    async with server:
        await done
    print(json.dumps(stats), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
