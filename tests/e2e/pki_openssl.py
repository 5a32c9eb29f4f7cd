"""Test certificates made with the openssl CLI alone: the article's own
commands (section 3 and 4), plus the bad certificates a server must refuse.
These prove that certificates mtls did not make work with `mtls serve`.

Every function writes into a folder and returns the paths it made.
"""
import os
import subprocess


def openssl(*args, cwd):
    r = subprocess.run(["openssl", *[str(a) for a in args]], cwd=cwd, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, f"openssl {' '.join(map(str, args))} failed:\n{r.stderr}"
    return r


def _ext(cwd, name, text):
    path = os.path.join(cwd, name)
    with open(path, "w") as f:
        f.write(text)
    return name


def article_pki(d, server_cn="localhost", rsa=True):
    """The article's commands: client CA, client key/CSR/cert, server CA, server key/CSR/cert.

    rsa=False uses EC P-256 keys instead of `openssl genrsa` (faster).
    """
    def newkey(name):
        if rsa:
            openssl("genrsa", "-out", name, cwd=d)
        else:
            openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
                    "-out", name, cwd=d)

    keyopt = ["-newkey", "rsa:2048"] if rsa else ["-newkey", "ec", "-pkeyopt",
                                                  "ec_paramgen_curve:P-256"]
    # 3. the client side
    openssl("req", "-new", "-x509", "-nodes", "-days", "365", "-subj", "/CN=client-example-ca",
            *keyopt, "-keyout", "clientca.key", "-out", "clientca.crt", cwd=d)
    newkey("client.key")
    openssl("req", "-new", "-key", "client.key", "-subj", "/CN=localclient", "-out", "client.csr",
            cwd=d)
    openssl("x509", "-req", "-in", "client.csr", "-CA", "clientca.crt", "-CAkey", "clientca.key",
            "-CAcreateserial", "-days", "365", "-out", "client.crt", cwd=d)
    # 4. the server side
    openssl("req", "-new", "-x509", "-nodes", "-days", "365", "-subj", "/CN=server-example-ca",
            *keyopt, "-keyout", "serverca.key", "-out", "serverca.crt", cwd=d)
    newkey("server.key")
    openssl("req", "-new", "-key", "server.key", "-subj", f"/CN={server_cn}", "-out",
            "server.csr", cwd=d)
    # The article signs without extensions; curl then matches the host against the CN.
    openssl("x509", "-req", "-in", "server.csr", "-CA", "serverca.crt", "-CAkey", "serverca.key",
            "-CAcreateserial", "-days", "365", "-out", "server.crt", cwd=d)
    return {n: os.path.join(d, n) for n in ("clientca.crt", "client.key", "client.crt",
                                             "serverca.crt", "server.key", "server.crt")}


def _ec_key_and_csr(d, name, cn):
    openssl("req", "-new", "-nodes", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
            "-subj", f"/CN={cn}", "-keyout", f"{name}.key", "-out", f"{name}.csr", cwd=d)


def _sign(d, name, ca, days="365", ext=None):
    extfile = _ext(d, f"{name}.ext", ext) if ext else None
    if int(days) < 0:
        sign_expired(d, name, ca, extfile)
    else:
        args = ["x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key",
                "-CAcreateserial", "-days", days, "-out", f"{name}.crt"]
        if extfile:
            args += ["-extfile", extfile]
        openssl(*args, cwd=d)
    return os.path.join(d, f"{name}.crt"), os.path.join(d, f"{name}.key")


def sign_expired(d, name, ca, extfile=None):
    """Signs NAME.csr with CA (CA.crt/.key in d) into NAME.crt, valid from two days ago
    until yesterday. `openssl x509 -days -1` did this up to OpenSSL 3.3; 3.4 and later
    refuse an end date before the start, so this uses `openssl ca` with explicit dates,
    which every OpenSSL 3 takes."""
    import datetime
    now = datetime.datetime.now(datetime.timezone.utc)
    fmt = "%y%m%d%H%M%SZ"
    db = os.path.join(d, f"{ca}-expired-index.txt")
    if not os.path.exists(db):
        open(db, "w").close()
    newcerts = os.path.join(d, f"{ca}-expired-certs")
    os.makedirs(newcerts, exist_ok=True)
    cnf = _ext(d, f"{ca}-expired-ca.cnf",
               "[ca]\ndefault_ca = ca_default\n[ca_default]\n"
               f"database = {db}\nnew_certs_dir = {newcerts}\nrand_serial = yes\n"
               "default_md = sha256\nunique_subject = no\npolicy = policy_any\n"
               "[policy_any]\ncommonName = supplied\n")
    args = ["ca", "-batch", "-notext", "-config", cnf, "-cert", f"{ca}.crt", "-keyfile",
            f"{ca}.key", "-in", f"{name}.csr", "-out", f"{name}.crt",
            "-startdate", (now - datetime.timedelta(days=2)).strftime(fmt),
            "-enddate", (now - datetime.timedelta(days=1)).strftime(fmt)]
    if extfile:
        args += ["-extfile", extfile]
    openssl(*args, cwd=d)


def other_ca_client(d, cn="mallory", ca_cn="other-ca"):
    """A client certificate from a CA the server does not trust."""
    openssl("req", "-new", "-x509", "-nodes", "-days", "365", "-subj", f"/CN={ca_cn}", "-newkey",
            "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-keyout", "otherca.key", "-out",
            "otherca.crt", cwd=d)
    _ec_key_and_csr(d, "mallory", cn)
    return _sign(d, "mallory", "otherca")


def expired_client(d, ca="clientca", cn="expired-client"):
    """A client certificate from the trusted CA whose notAfter has passed (yesterday)."""
    _ec_key_and_csr(d, "expired", cn)
    return _sign(d, "expired", ca, days="-1")


def server_cert_as_client(d, ca="clientca", cn="www-as-client"):
    """A certificate from the trusted CA for serverAuth only: not a client certificate."""
    _ec_key_and_csr(d, "serveronly", cn)
    return _sign(d, "serveronly", ca, ext="basicConstraints=CA:FALSE\n"
                 "keyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n")


def client_with_eku(d, ca="clientca", cn="eku-client"):
    """A proper client certificate with extensions (clientAuth), from the trusted CA."""
    _ec_key_and_csr(d, "ekuclient", cn)
    return _sign(d, "ekuclient", ca, ext="basicConstraints=CA:FALSE\n"
                 "keyUsage=digitalSignature\nextendedKeyUsage=clientAuth\n")


def fake_ca_copy(d, ca_cn="client-example-ca"):
    """A self-signed certificate that copies the trusted CA's name, used as a client certificate."""
    openssl("req", "-new", "-x509", "-nodes", "-days", "365", "-subj", f"/CN={ca_cn}", "-newkey",
            "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-keyout", "fakeca.key", "-out",
            "fakeca.crt", cwd=d)
    return os.path.join(d, "fakeca.crt"), os.path.join(d, "fakeca.key")


def expired_server(d, ca="serverca", cn="localhost"):
    """An expired server certificate (the server warns and starts)."""
    _ec_key_and_csr(d, "oldserver", cn)
    return _sign(d, "oldserver", ca, days="-1")


def openssl_crl(d, ca="clientca", revoke=(), out="openssl.crl", crldays=None, crlsec=None):
    """A CRL made by `openssl ca -gencrl` for the CA ca (PREFIX.crt/.key in d), revoking the
    certificate files in revoke. crlsec gives a nextUpdate that many seconds from now."""
    db = os.path.join(d, f"{ca}-openssl-index.txt")
    if not os.path.exists(db):
        open(db, "w").close()
    cnf = _ext(d, f"{ca}-openssl-ca.cnf",
               "[ca]\ndefault_ca = ca_default\n[ca_default]\n"
               f"database = {db}\ncrlnumber = {db}.crlnumber\ndefault_md = sha256\n"
               "")
    if not os.path.exists(db + ".crlnumber"):
        with open(db + ".crlnumber", "w") as f:
            f.write("01\n")
    common = ["-config", cnf, "-keyfile", f"{ca}.key", "-cert", f"{ca}.crt"]
    for cert in revoke:
        openssl("ca", *common, "-revoke", cert, cwd=d)
    args = ["ca", *common, "-gencrl", "-out", out]
    if crlsec is not None:
        args += ["-crlsec", str(crlsec)]
    else:
        args += ["-crldays", str(crldays or 30)]
    openssl(*args, cwd=d)
    return os.path.join(d, out)
