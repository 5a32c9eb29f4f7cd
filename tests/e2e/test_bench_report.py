"""bench/report.py: mtls against the cheaper of the two nginx configurations (issue 14)."""
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def write_run(folder, server, case, cpu_us, per_s):
    run = {
        "handshakes": 1000, "handshakes_resumed": 0, "requests": 1000, "responses": 1000,
        "handshakes_per_s": per_s, "requests_per_s": per_s, "elapsed_s": 4.0,
        "client_cpu_s": 1.0, "established": 0,
        "errors": {"total": 0},
        "server": {"cpu_s": 2.0, "cpu_us_per_handshake": cpu_us, "cpu_us_per_request": cpu_us,
                   "rss_kb_start": 0, "rss_kb_end": 0},
    }
    with open(os.path.join(folder, f"{server}-ec-1-{case}.json"), "w") as f:
        json.dump(run, f)


def report_rows(tmp_path):
    results = tmp_path / "results"
    out = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "report.py"),
                          str(tmp_path / "run"), str(results), "true", "true"],
                         capture_output=True, text=True, timeout=60, check=True)
    return {tuple(c.strip() for c in line.split("|")[1:3]): [c.strip() for c in line.split("|")]
            for line in out.stdout.splitlines() if line.startswith("| ")}


def test_ratio_is_against_the_cheaper_nginx_and_names_it(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    # full: tuned nginx is cheaper; keep-alive: nginx as installed is.
    write_run(run, "mtls", "full", 500, 2000)
    write_run(run, "nginx", "full", 1000, 900)
    write_run(run, "nginx-tuned", "full", 800, 1000)
    write_run(run, "mtls", "keepalive", 6, 50000)
    write_run(run, "nginx", "keepalive", 10, 40000)
    write_run(run, "nginx-tuned", "keepalive", 12, 30000)
    rows = report_rows(tmp_path)
    header = rows[("case", "metric")]
    col = header.index("mtls/nginx (cheaper)")
    assert rows[("full handshake, ECDSA P-256, 1 worker",
                 "server CPU µs / handshake")][col] == "0.62 (tuned)"
    assert rows[("full handshake, ECDSA P-256, 1 worker", "handshakes / s")][col] == "2.00 (tuned)"
    assert rows[("keep-alive GET /test, ECDSA P-256, 1 worker",
                 "server CPU µs / request")][col] == "0.60 (default)"
    assert rows[("keep-alive GET /test, ECDSA P-256, 1 worker",
                 "requests / s")][col] == "1.25 (default)"
    assert "nginx tuned" in header


def test_one_nginx_configuration_alone_is_compared(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    write_run(run, "mtls", "full", 500, 2000)
    write_run(run, "nginx", "full", 1000, 900)
    rows = report_rows(tmp_path)
    col = rows[("case", "metric")].index("mtls/nginx (cheaper)")
    assert rows[("full handshake, ECDSA P-256, 1 worker",
                 "server CPU µs / handshake")][col] == "0.50 (default)"
