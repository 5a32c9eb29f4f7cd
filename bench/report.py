#!/usr/bin/python3
"""Turns the JSON reports of one bench/run.sh run into one table: raw figures per
server and the ratios mtls/nginx and mtls/Express. nginx runs in two
configurations (nginx: as installed; nginx-tuned: Mozilla's session cache, no
tickets); mtls/nginx is against the cheaper of the two for each case (less
server CPU or memory, more handshakes or requests per second), and says which. Prints it and writes it, with
the machine's description, to RESULTS/<date>-<host>.md.

usage: report.py RUN_DIR RESULTS_DIR MTLS_BIN NGINX_BIN

RUN_DIR holds SERVER-KEY-WORKERS-CASE.json files written by `mtls bench --json`
(SERVER: mtls, nginx, nginx-tuned, express; KEY: ec, rsa; CASE: full, resumed, keepalive, h2,
idle, proxied: keep-alive GET /app through the server as a reverse proxy).
"""
import datetime
import json
import os
import re
import socket
import subprocess
import sys

SERVERS = [("mtls", "mtls"), ("nginx", "nginx"), ("nginx-tuned", "nginx tuned"),
           ("express", "Express")]
# Where a higher figure is the better one.
HIGHER_IS_BETTER = {"hs_s", "req_s"}
KEY_NAMES = {"ec": "ECDSA P-256", "rsa": "RSA-2048"}


def load(run_dir):
    runs = {}
    for name in os.listdir(run_dir):
        m = re.fullmatch(r"([a-z-]+)-(ec|rsa)-(\d+)-(full|resumed|keepalive|h2|idle|proxied)\.json",
                         name)
        if not m:
            continue
        with open(os.path.join(run_dir, name)) as f:
            try:
                run = json.load(f)
                run["_workers"] = int(m[3])
                runs[(m[1], m[2], int(m[3]), m[4])] = run
            except json.JSONDecodeError:
                pass
    return runs


def cmd(*args):
    try:
        r = subprocess.run(args, capture_output=True, text=True, timeout=10)
        return (r.stdout + r.stderr).strip().splitlines()[0]
    except (OSError, IndexError, subprocess.SubprocessError):
        return "unknown"


def machine(mtls, nginx):
    model = "unknown"
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    except OSError:
        pass
    commit = os.environ.get("MTLS_COMMIT") or cmd(
        "git", "-C", os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "rev-parse",
        "--short", "HEAD")
    return [
        ("host", socket.gethostname()),
        ("mtls commit", commit if re.fullmatch(r"[0-9a-f]{7,40}", commit) else "unknown"),
        ("CPU", model),
        ("cores", str(os.cpu_count())),
        ("kernel", " ".join(os.uname()[i] for i in (0, 2))),
        ("OpenSSL", cmd("openssl", "version")),
        ("mtls", cmd(mtls, "version")),
        ("nginx", cmd(nginx, "-v").replace("nginx version: ", "")),
        ("Node", cmd("node", "--version")),
    ]


def fmt(v, digits=0):
    if v is None:
        return "—"
    if digits == 0:
        return f"{v:,.0f}"
    return f"{v:,.{digits}f}"


def ratio(a, b):
    if a is None or b is None or b == 0:
        return "—"
    return f"{a / b:.2f}"


def best_nginx(mine, default, tuned, what):
    """mtls against the cheaper nginx configuration, saying which."""
    have = [(v, name) for v, name in ((default, "default"), (tuned, "tuned")) if v]
    if mine is None or not have:
        return "—"
    pick = max if what in HIGHER_IS_BETTER else min
    v, name = pick(have, key=lambda x: x[0])
    return f"{mine / v:.2f} ({name})"


def metric(run, what):
    """One number out of a run, or None."""
    if run is None:
        return None
    server = run.get("server") or {}
    if what == "cpu_hs":
        return server.get("cpu_us_per_handshake")
    if what == "cpu_req":
        return server.get("cpu_us_per_request")
    if what == "hs_s":
        return run["handshakes_per_s"]
    if what == "req_s":
        return run["requests_per_s"]
    if what == "resumed_pct":
        return 100.0 * run["handshakes_resumed"] / run["handshakes"] if run["handshakes"] else 0
    if what == "client_hs":
        return 1e6 * run["client_cpu_s"] / run["handshakes"] if run["handshakes"] else None
    if what == "client_req":
        return 1e6 * run["client_cpu_s"] / run["responses"] if run["responses"] else None
    if what == "server_busy":
        workers = run.get("_workers", 1)
        return 100.0 * server["cpu_s"] / run["elapsed_s"] / workers if server else None
    if what == "client_busy":
        return 100.0 * run["client_cpu_s"] / run["elapsed_s"]
    if what == "idle_kb":
        held = run.get("established") or 0
        if not held or not server:
            return None
        return (server["rss_kb_end"] - server["rss_kb_start"]) / held
    raise ValueError(what)


def table(runs):
    keys = sorted({k[1] for k in runs}, key=lambda k: list(KEY_NAMES).index(k))
    workers = sorted({k[2] for k in runs})
    rows = []
    notes = []

    def row(label, what_name, case, key, w, what, digits=0):
        values = []
        for server, _ in SERVERS:
            run = runs.get((server, key, w, case))
            v = metric(run, what)
            cell = fmt(v, digits)
            if run is not None and run["errors"]["total"] > 0:
                cell += f" ({run['errors']['total']} err)"
                notes.append(f"{server} {label}: errors {json.dumps(run['errors'])}")
            if case == "idle" and run is not None:
                cell += f" ({run['established']} held)" if run["established"] else ""
            values.append((v, cell))
        if what == "resumed_pct":
            ratios = ["—", "—"]  # a share is read as it is, not divided
        else:
            ratios = [best_nginx(values[0][0], values[1][0], values[2][0], what),
                      ratio(values[0][0], values[3][0])]
        rows.append([label, what_name] + [c for _, c in values] + ratios)

    for key in keys:
        for w in workers:
            tag = f"{KEY_NAMES[key]}, {w} worker{'s' if w > 1 else ''}"
            if any(k[1:] == (key, w, "full") for k in runs):
                row(f"full handshake, {tag}", "server CPU µs / handshake", "full", key, w, "cpu_hs")
                row(f"full handshake, {tag}", "handshakes / s", "full", key, w, "hs_s")
            if any(k[1:] == (key, w, "resumed") for k in runs):
                row(f"resumed handshake, {tag}", "server CPU µs / handshake", "resumed", key, w,
                    "cpu_hs")
                row(f"resumed handshake, {tag}", "handshakes / s", "resumed", key, w, "hs_s")
                row(f"resumed handshake, {tag}", "% resumed", "resumed", key, w, "resumed_pct")
            if any(k[1:] == (key, w, "keepalive") for k in runs):
                row(f"keep-alive GET /test, {tag}", "server CPU µs / request", "keepalive", key, w,
                    "cpu_req", 1)
                row(f"keep-alive GET /test, {tag}", "requests / s", "keepalive", key, w, "req_s")
            if any(k[1:] == (key, w, "h2") for k in runs):
                row(f"HTTP/2 GET /test (10 streams each), {tag}", "server CPU µs / request", "h2",
                    key, w, "cpu_req", 1)
                row(f"HTTP/2 GET /test (10 streams each), {tag}", "requests / s", "h2", key, w,
                    "req_s")
            if any(k[1:] == (key, w, "proxied") for k in runs):
                row(f"proxied keep-alive GET /app, {tag}", "server CPU µs / request", "proxied",
                    key, w, "cpu_req", 1)
                row(f"proxied keep-alive GET /app, {tag}", "requests / s", "proxied", key, w,
                    "req_s")
            if any(k[1:] == (key, w, "idle") for k in runs):
                row(f"idle mTLS connections, {tag}", "server RSS kB / connection", "idle", key, w,
                    "idle_kb", 1)
    client_rows = []
    for key in keys:
        for w in workers:
            for case, what, name in (
                    ("full", "client_hs", "load generator CPU µs / handshake"),
                    ("full", "client_busy", "load generator busy % (one core)"),
                    ("full", "server_busy", "server busy % (of its workers' cores)"),
                    ("keepalive", "client_req", "load generator CPU µs / request"),
                    ("keepalive", "client_busy", "load generator busy % (one core)"),
                    ("keepalive", "server_busy", "server busy % (of its workers' cores)")):
                digits = 1 if what == "client_req" else 0
                cells = [fmt(metric(runs.get((s, key, w, case)), what), digits)
                         for s, _ in SERVERS]
                if any(c != "—" for c in cells):
                    label = "full handshake" if case == "full" else "keep-alive"
                    client_rows.append([f"{label}, {KEY_NAMES[key]}, {w} worker"
                                        f"{'s' if w > 1 else ''}", name] + cells)
    return rows, client_rows, notes


def markdown(header, rows):
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    out = ["| " + " | ".join(h.ljust(widths[i]) for i, h in enumerate(header)) + " |",
           "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    for r in rows:
        out.append("| " + " | ".join(str(c).ljust(widths[i]) for i, c in enumerate(r)) + " |")
    return "\n".join(out)


def main():
    run_dir, results_dir, mtls, nginx = sys.argv[1:5]
    runs = load(run_dir)
    if not runs:
        sys.exit("bench: no results to report")
    rows, client_rows, notes = table(runs)
    names = [n for _, n in SERVERS]
    text = markdown(["case", "metric"] + names + ["mtls/nginx (cheaper)", "mtls/Express"], rows)
    print(text)
    for n in notes:
        print("note: " + n)
    now = datetime.datetime.now(datetime.timezone.utc)
    host = socket.gethostname()
    env = {k: v for k, v in os.environ.items() if k.startswith("BENCH_")}
    doc = [f"# mtls bench, {now:%Y-%m-%d %H:%M} UTC, {host}", "",
           "Made by `make bench` (bench/run.sh). CPU is the server's own user + system time",
           "from /proc/PID/stat summed over its processes (all threads), divided by the",
           "handshakes or requests `mtls bench` completed; RSS is VmRSS summed the same way.",
           "Ratios below 1 mean mtls spends less (or, for throughput, serves less).",
           "nginx runs as installed (\"nginx\") and with Mozilla's recommendation",
           "(\"nginx tuned\": ssl_session_cache shared:SSL:10m; ssl_session_tickets off;);",
           "mtls/nginx is against the cheaper of the two in each row (for throughput,",
           "the faster), named in brackets.", "",
           "## Machine", ""]
    doc += [f"- {k}: {v}" for k, v in machine(mtls, nginx)]
    doc += [f"- settings: {', '.join(f'{k}={v}' for k, v in sorted(env.items())) or 'defaults'}",
            "", "## Results", "", text, ""]
    if notes:
        doc += ["Errors during the runs:", ""] + [f"- {n}" for n in notes] + [""]
    doc += ["## Who was busy", "",
            "What `mtls bench` itself spent in the same runs (it does the client's half of",
            "every handshake and request), and how busy each side was. Handshakes/s and",
            "requests/s measure the server only where the server is near 100 %; where the",
            "load generator is, they measure the load generator.", "",
            markdown(["case", "metric"] + names, client_rows), ""]
    os.makedirs(results_dir, exist_ok=True)
    path = os.path.join(results_dir, f"{now:%Y-%m-%d}-{host}.md")
    with open(path + ".tmp", "w") as f:
        f.write("\n".join(doc))
    os.replace(path + ".tmp", path)
    print(f"bench: written to {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
