"""People in browsers: content negotiation (curl) and headless Chromium with
the client certificate of `mtls cert p12` in a temporary NSS database.

Chromium (Debian `chromium`) reads $HOME/.pki/nssdb, so every browser run
gets its own HOME: the server's CA trusted (`certutil -A -t C,,`), and the
client's .p12 imported (`pk12util`) where the test wants a certificate. The
`AutoSelectCertificateForUrls` policy picks it without a dialog; on Debian
Chromium reads policies from /etc/chromium/policies/managed/, so the test
writes its own file there and removes it afterwards (and skips, saying why,
where that folder cannot be written or Chromium cannot run).
"""
import json
import os
import re
import shutil
import subprocess

import pytest

from proxy_helpers import Conn, proxy, upstream  # noqa: F401 (a fixture)
from serve_helpers import *  # noqa: F401,F403 (fixtures)
from serve_helpers import SLOW, curl, read_text, run_mtls, server_dir, wait_for_text, wait_until

POLICY_DIR = "/etc/chromium/policies/managed"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
NSS_TOOLS = shutil.which("pk12util") and shutil.which("certutil")
BROWSER_ACCEPT = ("text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,"
                  "image/webp,image/apng,*/*;q=0.8")
PASSWORD = "p12-test-password"


def chromium_args(home, url):
    return [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
            "--no-first-run", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", f"--user-data-dir={os.path.join(home, 'profile')}",
            "--dump-dom", url]


def run_chromium(home, url):
    """Chromium's DOM of url (stdout) and its messages (stderr), with HOME=home."""
    env = dict(os.environ, HOME=str(home))
    env.pop("DBUS_SESSION_BUS_ADDRESS", None)
    try:
        r = subprocess.run(chromium_args(str(home), url), env=env, capture_output=True,
                           text=True, timeout=30 * SLOW)
    except subprocess.TimeoutExpired as e:
        err = e.stderr.decode(errors="replace") if e.stderr else ""
        raise AssertionError(f"chromium did not finish loading {url}:\n{err[-2000:]}") from None
    return r.stdout, r.stderr


@pytest.fixture(scope="module")
def chromium(tmp_path_factory):
    """Skips (saying why) where headless Chromium, the NSS tools or the policy folder are missing."""
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (Debian: apt-get install chromium)")
    if not NSS_TOOLS:
        pytest.skip("pk12util/certutil are not installed (Debian: apt-get install libnss3-tools)")
    home = tmp_path_factory.mktemp("chromium-probe")
    dom, err = run_chromium(home, "data:text/html,<p id=x>chromium-runs</p>")
    if "chromium-runs" not in dom:
        pytest.skip(f"headless chromium cannot run here: {err.strip()[-400:]}")
    made = []
    path = POLICY_DIR
    while not os.path.isdir(path):
        made.append(path)
        path = os.path.dirname(path)
    try:
        os.makedirs(POLICY_DIR, exist_ok=True)
        probe = os.path.join(POLICY_DIR, f".mtls-test-probe-{os.getpid()}")
        with open(probe, "w"):
            pass
        os.unlink(probe)
    except OSError as e:
        pytest.skip(f"cannot write Chromium's policy folder {POLICY_DIR}: {e}")
    yield
    for d in made:  # the folders this module made, innermost first
        try:
            os.rmdir(d)
        except OSError:
            pass


@pytest.fixture
def autoselect(chromium):
    """Writes the AutoSelectCertificateForUrls policy for https://127.0.0.1:PORT; removed after."""
    written = []

    def write(port):
        # The same rule in every file (any port of 127.0.0.1), so that test
        # runs at the same time agree: Chromium merges the folder's files.
        rule = {"pattern": "127.0.0.1", "filter": {"ISSUER": {"CN": "client-example-ca"}}}
        os.makedirs(POLICY_DIR, exist_ok=True)
        path = os.path.join(POLICY_DIR, f"mtls-test-{os.getpid()}-{port}.json")
        with open(path, "w") as f:
            json.dump({"AutoSelectCertificateForUrls": [json.dumps(rule)]}, f)
        written.append(path)
    yield write
    for path in written:
        os.unlink(path)


def nss_home(tmp_path, name, d, p12=None):
    """A HOME whose NSS database trusts the server's CA and holds p12 (when given)."""
    home = tmp_path / name
    db = home / ".pki" / "nssdb"
    db.mkdir(parents=True)
    sql = f"sql:{db}"
    subprocess.run(["certutil", "-N", "-d", sql, "--empty-password"], check=True,
                   capture_output=True)
    subprocess.run(["certutil", "-A", "-d", sql, "-n", "mtls-test-server-ca", "-t", "C,,",
                    "-i", os.path.join(d, "serverca.crt")], check=True, capture_output=True)
    if p12 is not None:
        r = subprocess.run(["pk12util", "-d", sql, "-i", p12, "-W", PASSWORD],
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stdout + r.stderr
    return home


def make_p12(d, prefix):
    pw = os.path.join(d, "p12.pw")
    with open(pw, "w") as f:
        f.write(PASSWORD + "\n")
    r = run_mtls("cert", "p12", "--cert", f"{prefix}.crt", "--key", f"{prefix}.key", "--out",
                 f"{prefix}.p12", "--password-file", pw, cwd=d)
    assert r.returncode == 0, r.stderr
    return os.path.join(d, f"{prefix}.p12")


def main_text(dom):
    """The page's words without markup (entities left as they are)."""
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", dom))


# ---- headless Chromium ------------------------------------------------------------


def test_chromium_with_the_p12_reads_who_it_is(init_pki, serve, tmp_path, autoselect):
    d = server_dir(init_pki, tmp_path)
    s = serve(d)
    home = nss_home(tmp_path, "home", d, make_p12(d, "client"))
    autoselect(s.port)
    dom, err = run_chromium(home, f"https://127.0.0.1:{s.port}/")
    assert "Who you are" in dom, err[-2000:]
    words = main_text(dom)
    assert "You are CN=localclient ." in words, words
    assert "Issued by CN=client-example-ca" in words, words
    assert re.search(r"expires in 36[45] days", words), words
    assert "TLSv1.3" in words, words
    log = wait_for_log(s.access_log, "/", 200)
    assert "CN=localclient" in log and '" 404 ' not in log, log


def test_chromium_shows_a_hostile_common_name_as_text(init_pki, serve, tmp_path, autoselect):
    d = server_dir(init_pki, tmp_path)
    cn = "<script>document.title='owned'</script><b>&amp;"
    r = run_mtls("cert", "issue", "--ca", "clientca", "--profile", "client", "--cn", cn,
                 "--out", "evil", cwd=d)
    assert r.returncode == 0, r.stderr
    s = serve(d)
    home = nss_home(tmp_path, "home", d, make_p12(d, "evil"))
    autoselect(s.port)
    dom, err = run_chromium(home, f"https://127.0.0.1:{s.port}/whoami")
    assert "Who you are" in dom, err[-2000:]
    assert "<title>Who you are - mtls</title>" in dom, dom
    assert "<script" not in dom and "<b>" not in dom, dom
    assert "CN=\"&lt;script&gt;document.title='owned'&lt;/script&gt;&lt;b&gt;&amp;amp;\"" in dom, dom


def test_chromium_without_a_certificate_is_told_how_to_get_one(init_pki, serve, tmp_path,
                                                               autoselect):
    d = server_dir(init_pki, tmp_path)
    s = serve(d, "--verify-client", "optional")
    home = nss_home(tmp_path, "home", d)
    autoselect(s.port)
    dom, err = run_chromium(home, f"https://127.0.0.1:{s.port}/")
    words = main_text(dom)
    assert "A client certificate is needed" in words, err[-2000:]
    assert "no client certificate was sent" in words, words
    assert "accepts client certificates issued by CN=client-example-ca" in words, words
    assert "mtls cert p12" in words and "pk12util" in words, words
    wait_for_log(s.access_log, "/", 403)


def test_chromium_reports_the_refused_handshake_in_require_mode(init_pki, serve, tmp_path,
                                                                autoselect):
    d = server_dir(init_pki, tmp_path)
    s = serve(d)
    home = nss_home(tmp_path, "home", d)
    autoselect(s.port)
    dom, err = run_chromium(home, f"https://127.0.0.1:{s.port}/")
    # TLS 1.3: the server's alert comes after the client's Finished; Chromium
    # names it ERR_BAD_SSL_CLIENT_AUTH_CERT, or sees the socket closed first.
    failed = re.search(r"Page load failed: net::(ERR_[A-Z_]+)", err)
    assert failed, err[-2000:]
    assert failed.group(1) in ("ERR_BAD_SSL_CLIENT_AUTH_CERT", "ERR_SSL_CLIENT_AUTH_CERT_NEEDED",
                               "ERR_SOCKET_NOT_CONNECTED", "ERR_CONNECTION_CLOSED",
                               "ERR_CONNECTION_RESET"), failed.group(1)
    assert "Who you are" not in dom
    wait_for_text(s.system_log, "handshake rejected")


def wait_for_log(path, target, status):
    """Waits for an access-log line of GET target answered status, over HTTP/1.1 or HTTP/2
    (curl and Chromium choose HTTP/2 by ALPN); returns the log."""
    line = re.compile(rf'"GET {re.escape(target)} HTTP/(?:1\.1|2\.0)" {status} ')
    wait_until(lambda: line.search(read_text(path)), what=f"GET {target} {status} in {path}")
    return read_text(path)


# ---- content negotiation, with curl ---------------------------------------------


def get(d, port, path, accept=None, cert=True):
    args = ["--cacert", "serverca.crt", "-i"]
    if cert:
        args += ["--cert", "client.crt", "--key", "client.key"]
    if accept is not None:
        args += ["-H", f"Accept: {accept}"]
    r = curl(*args, f"https://localhost:{port}{path}", cwd=d)
    assert r.returncode == 0, r.stderr
    head, _, body = r.stdout.replace("\r\n", "\n").partition("\n\n")
    return head.lower(), body


def test_programs_keep_the_json_and_browsers_get_a_strict_page(init_pki, serve, tmp_path):
    d = server_dir(init_pki, tmp_path)
    s = serve(d)
    for accept in (None, "*/*", "application/json", "application/json, text/html",
                   "text/html;q=0.5, application/json"):
        head, body = get(d, s.port, "/whoami", accept)
        assert "content-type: application/json" in head, (accept, head)
        assert "vary: accept" in head
        who = json.loads(body)
        assert who["client"]["subject"] == "CN=localclient"
        assert re.fullmatch(r"expires in 36[45] days", who["client"]["expires"])
        assert who["tls"]["resumed"] is False
    head, body = get(d, s.port, "/", "*/*")
    assert json.loads(body)["client"]["subject"] == "CN=localclient"  # / is /whoami for programs
    for path in ("/", "/whoami"):
        head, body = get(d, s.port, path, BROWSER_ACCEPT)
        assert re.match(r"http/(1\.1|2) 200", head), head
        assert "content-type: text/html; charset=utf-8" in head
        assert "content-security-policy: default-src 'none'; style-src 'unsafe-inline';" in head
        assert "x-content-type-options: nosniff" in head and "vary: accept" in head
        assert "You are <strong>CN=localclient</strong>" in body
        assert "<script" not in body and "src=" not in body and "href=\"http" not in body
    # /test is the article's answer whatever the Accept.
    head, body = get(d, s.port, "/test", BROWSER_ACCEPT)
    assert body == '{"message":"Hello mtls"}'


def test_not_found_method_and_favicon(init_pki, serve, tmp_path):
    d = server_dir(init_pki, tmp_path)
    s = serve(d)
    head, body = get(d, s.port, "/nowhere", BROWSER_ACCEPT)
    assert re.match(r"http/(1\.1|2) 404", head) and "text/html" in head, head
    assert "<title>Not found - mtls</title>" in body and "<code>/nowhere</code>" in body
    head, body = get(d, s.port, "/nowhere")
    assert json.loads(body) == {"error": "not found"}
    r = curl("--cacert", "serverca.crt", "--cert", "client.crt", "--key", "client.key", "-i",
             "-X", "POST", "-H", f"Accept: {BROWSER_ACCEPT}", f"https://localhost:{s.port}/test",
             cwd=d)
    assert re.match(r"HTTP/(1\.1|2) 405", r.stdout), r.stdout
    assert "POST is not allowed on <code>/test</code>. Allowed: GET, HEAD." in r.stdout
    head, body = get(d, s.port, "/favicon.ico", BROWSER_ACCEPT)
    assert re.match(r"http/(1\.1|2) 204", head) and body == "", head
    log = wait_for_log(s.access_log, "/favicon.ico", 204)
    assert not re.search(r'favicon\.ico HTTP/[\d.]+" 404', log)


def test_refused_and_denied_clients_get_pages_that_explain(init_pki, serve, tmp_path):
    d = server_dir(init_pki, tmp_path)
    s = serve(d, "--verify-client", "optional", "--allow", "cn=alice")
    head, body = get(d, s.port, "/whoami", BROWSER_ACCEPT, cert=False)
    assert re.match(r"http/(1\.1|2) 403", head) and "text/html" in head, head
    assert "no client certificate was sent" in body
    assert "issued by <strong>CN=client-example-ca</strong>" in body
    head, body = get(d, s.port, "/favicon.ico", BROWSER_ACCEPT, cert=False)
    assert re.match(r"http/(1\.1|2) 204", head), head
    head, body = get(d, s.port, "/whoami", BROWSER_ACCEPT)
    assert re.match(r"http/(1\.1|2) 403", head), head
    assert "Your certificate is not allowed here" in body
    assert "CN=localclient is not allowed on /whoami; allowed: cn alice" in body, body
    assert "mtls cert p12" in body
    head, body = get(d, s.port, "/whoami")
    assert json.loads(body)["error"] == "forbidden"
    log = wait_for_text(s.system_log, "CN=localclient is not allowed on /whoami")
    assert "favicon" not in log, log


def test_behind_a_proxy_the_application_keeps_its_home_page_and_icon(serve, tmp_path, init_pki,
                                                                     upstream):
    s = proxy(serve, tmp_path, init_pki, upstream.url)
    c = Conn(s.port, init_pki)
    for path in ("/", "/favicon.ico"):
        status, _, body = c.request("GET", path, headers=[("Accept", BROWSER_ACCEPT)])
        assert status == 200 and json.loads(body)["path"] == path, body
    status, headers, body = c.request("GET", "/whoami", headers=[("Accept", BROWSER_ACCEPT)])
    assert status == 200 and b"You are <strong>CN=localclient</strong>" in body
    c.close()
