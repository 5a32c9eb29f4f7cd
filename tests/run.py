#!/usr/bin/python3
"""Runs every test mtls has and prints one closing line: "N passed, N failed".

Phases, in order:
  format     every tracked .c/.h file is formatted as .clang-format says
  unit       C unit tests (Criterion, TAP) from the normal build
  e2e        end-to-end tests (pytest) against build/mtls and real clients
  fuzz       each libFuzzer target for a short smoke run (clang build)
  asan-unit  the unit tests again, built with ASan+UBSan
  asan-e2e   the end-to-end tests again, against the ASan+UBSan binary

Usage: tests/run.py [--only PHASE[,PHASE...]] [-k PYTEST_EXPR]
"""
import argparse
import os
import subprocess
import sys
import time
import xml.etree.ElementTree as ET

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PYTHON = "/usr/bin/python3"
FUZZ_SECONDS = int(os.environ.get("MTLS_FUZZ_SECONDS", "20"))

SANITIZER_ENV = {
    # exitcode 86 keeps a sanitizer report apart from the tool's own exit codes.
    "ASAN_OPTIONS": "detect_leaks=1:abort_on_error=0:exitcode=86:strict_string_checks=1:"
                    "detect_stack_use_after_return=1:check_initialization_order=1",
    "UBSAN_OPTIONS": "halt_on_error=1:print_stacktrace=1:exitcode=86",
    "LSAN_OPTIONS": "exitcode=86",
}


def sh(cmd, **kw):
    print("+ " + " ".join(cmd), flush=True)
    return subprocess.run(cmd, cwd=ROOT, **kw)


def setup_build(builddir, extra, env=None):
    """Configures builddir (once) with extra options, then builds it.

    A build folder that `make demo` made before the test dependencies were
    installed has no unit tests (Criterion is optional there): the options
    in extra are applied to an existing folder too, which reconfigures it."""
    if not os.path.exists(os.path.join(ROOT, builddir, "build.ninja")):
        r = sh(["meson", "setup", builddir] + extra, env=env)
    else:
        r = sh(["meson", "configure", builddir] + [o for o in extra if o.startswith("-D")],
               env=env)
    if r.returncode != 0:
        return False
    return sh(["ninja", "-C", builddir], env=env).returncode == 0


def unit_tests(builddir):
    out = subprocess.run(["meson", "introspect", "--tests", builddir], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout
    import json
    return [(t["name"], t["cmd"][0]) for t in json.loads(out) if "unit" in t.get("suite", [""])[0]
            or any("unit" in s for s in t.get("suite", []))]


def run_unit(builddir, env):
    passed = failed = 0
    tests = unit_tests(builddir)
    if not tests:
        print(f"  unit: no unit tests in {builddir} (is Criterion installed?)", flush=True)
        return 0, 1
    for name, exe in tests:
        r = subprocess.run([exe, "--tap=-", "--jobs=1"], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=600)
        ok = sum(1 for l in r.stdout.splitlines() if l.startswith("ok "))
        bad = [l for l in r.stdout.splitlines() if l.startswith("not ok ")]
        passed += ok
        failed += len(bad)
        if r.returncode != 0 and not bad:
            # A crash or a sanitizer report outside any single test.
            failed += 1
            bad.append(f"not ok - {name}: exited {r.returncode}")
        if bad:
            print(r.stdout[-4000:])
            print(r.stderr[-4000:])
        print(f"  unit {name}: {ok} passed, {len(bad)} failed", flush=True)
    return passed, failed


def run_e2e(builddir, env, label, kexpr):
    xml = os.path.join(ROOT, builddir, f"{label}-junit.xml")
    env = dict(env)
    env["MTLS_BIN"] = os.path.join(ROOT, builddir, "mtls")
    env["MTLS_BUILD"] = os.path.join(ROOT, builddir)
    cmd = [PYTHON, "-m", "pytest", "tests/e2e", "-q", "-ra", "-p", "no:cacheprovider",
           f"--junitxml={xml}"]
    if kexpr:
        cmd += ["-k", kexpr]
    if os.path.exists(xml):
        os.unlink(xml)
    r = sh(cmd, env=env, timeout=1800)
    if not os.path.exists(xml):
        return 0, 1
    root = ET.parse(xml).getroot()
    suites = [root] if root.tag == "testsuite" else list(root)
    tests = sum(int(s.get("tests", 0)) for s in suites)
    fails = sum(int(s.get("failures", 0)) + int(s.get("errors", 0)) for s in suites)
    skips = sum(int(s.get("skipped", 0)) for s in suites)
    passed = tests - fails - skips
    if r.returncode not in (0, 1) and fails == 0:
        fails = 1  # pytest itself broke (collection error, internal error)
    if tests == 0:
        fails += 1  # an empty run proves nothing
    return passed, fails


def run_format():
    files = subprocess.run(["git", "ls-files", "*.c", "*.h"], cwd=ROOT, capture_output=True,
                           text=True).stdout.split()
    if not files:
        # Not a git checkout (an exported tree): nothing to compare against.
        print("  format: no git file list, skipped", flush=True)
        return 0, 0
    r = subprocess.run(["clang-format", "--dry-run", "--Werror", *files], cwd=ROOT,
                       capture_output=True, text=True)
    if r.returncode == 0:
        print(f"  format: {len(files)} files as .clang-format says", flush=True)
        return 1, 0
    print(r.stderr[-6000:], flush=True)
    print("  format: FAILED (run 'make format')", flush=True)
    return 0, 1


def run_fuzz(env):
    builddir = "build-fuzz"
    fenv = dict(env)
    fenv["CC"] = "clang"
    if not setup_build(builddir, ["-Dfuzz=true", "-Dunit_tests=disabled", "--buildtype=debugoptimized",
                                  "-Db_sanitize=address,undefined", "-Db_lundef=false"], fenv):
        return 0, 1
    fuzzdir = os.path.join(ROOT, builddir, "fuzz")
    targets = []
    if os.path.isdir(fuzzdir):
        targets = sorted(f for f in os.listdir(fuzzdir) if f.startswith("fuzz-")
                         and os.path.isfile(os.path.join(fuzzdir, f))
                         and os.access(os.path.join(fuzzdir, f), os.X_OK))
    if not targets:
        print("  no fuzz targets were built", flush=True)
        return 0, 1
    passed = failed = 0
    for t in targets:
        name = t[len("fuzz-"):]
        corpus = os.path.join(ROOT, "fuzz", "corpus", name)
        work = os.path.join(ROOT, builddir, "corpus-" + name)
        os.makedirs(work, exist_ok=True)
        cmd = [os.path.join(fuzzdir, t), f"-max_total_time={FUZZ_SECONDS}", "-print_final_stats=1",
               f"-artifact_prefix={work}/", work]
        if os.path.isdir(corpus):
            cmd.append(corpus)
        r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=FUZZ_SECONDS * 4 + 60)
        if r.returncode == 0:
            passed += 1
            print(f"  fuzz {name}: ok ({FUZZ_SECONDS}s)", flush=True)
        else:
            failed += 1
            print(f"  fuzz {name}: FAILED\n{r.stderr[-6000:]}", flush=True)
    return passed, failed


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", default="format,unit,e2e,fuzz,asan-unit,asan-e2e")
    ap.add_argument("-k", dest="kexpr", default=None, help="pytest -k expression for e2e phases")
    args = ap.parse_args()
    phases = args.only.split(",")
    if "asan" in phases:
        phases += ["asan-unit", "asan-e2e"]
    env = dict(os.environ)
    env.pop("MAKEFLAGS", None)
    asan_env = dict(env, **SANITIZER_ENV)
    total_p = total_f = 0
    results = []
    start = time.time()

    build_ok = True
    if any(p in phases for p in ("unit", "e2e")):
        build_ok = setup_build("build", ["--buildtype=debugoptimized", "-Dunit_tests=enabled"])
    asan_ok = True
    if any(p.startswith("asan") for p in phases):
        asan_ok = setup_build("build-asan", ["--buildtype=debug", "-Db_sanitize=address,undefined",
                                             "-Db_lundef=false", "-Dunit_tests=enabled"])
    for phase in ["format", "unit", "e2e", "fuzz", "asan-unit", "asan-e2e"]:
        if phase not in phases:
            continue
        t0 = time.time()
        print(f"== {phase}", flush=True)
        if phase == "format":
            p, f = run_format()
        elif phase == "unit":
            p, f = run_unit("build", env) if build_ok else (0, 1)
        elif phase == "e2e":
            p, f = run_e2e("build", env, "e2e", args.kexpr) if build_ok else (0, 1)
        elif phase == "fuzz":
            p, f = run_fuzz(env)
        elif phase == "asan-unit":
            p, f = run_unit("build-asan", asan_env) if asan_ok else (0, 1)
        else:
            p, f = run_e2e("build-asan", dict(asan_env, MTLS_SANITIZED="1"), "asan-e2e",
                           args.kexpr) if asan_ok else (0, 1)
        results.append((phase, p, f, time.time() - t0))
        total_p += p
        total_f += f
    print("\nsummary:")
    for phase, p, f, secs in results:
        print(f"  {phase:10s} {p:4d} passed, {f:3d} failed  ({secs:.0f}s)")
    print(f"  total time {time.time() - start:.0f}s")
    print(f"{total_p} passed, {total_f} failed")
    return 0 if total_f == 0 and total_p > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
