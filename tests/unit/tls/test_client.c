/* The client side of src/tls: URL parsing, alert names, the client SSL_CTX
 * made from files (and its refusals before anything connects), connecting
 * to each address of a name in turn. */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "mtls/client.h"

Test(url, full_url)
{
    mtls_url u;
    mtls_err err;

    cr_assert_eq(mtls_url_parse("https://localhost:8443/test", &u, &err), 0, "%s", err.msg);
    cr_assert_str_eq(u.host, "localhost");
    cr_assert_eq(u.port, 8443);
    cr_assert_str_eq(u.path, "/test");
}

Test(url, defaults_and_forms)
{
    mtls_url u;
    mtls_err err;

    cr_assert_eq(mtls_url_parse("https://example.com", &u, &err), 0);
    cr_assert_eq(u.port, 443);
    cr_assert_str_eq(u.path, "/");
    cr_assert_eq(mtls_url_parse("127.0.0.1:9/a?b=c", &u, &err), 0);
    cr_assert_str_eq(u.host, "127.0.0.1");
    cr_assert_eq(u.port, 9);
    cr_assert_str_eq(u.path, "/a?b=c");
    cr_assert_eq(mtls_url_parse("https://[::1]:8443/x", &u, &err), 0);
    cr_assert_str_eq(u.host, "::1");
    cr_assert_eq(u.port, 8443);
    cr_assert_eq(mtls_url_parse("HTTPS://h?q", &u, &err), 0);
    cr_assert_str_eq(u.path, "/?q");
}

Test(url, refusals)
{
    mtls_url u;
    mtls_err err;

    cr_assert_eq(mtls_url_parse("http://localhost/", &u, &err), MTLS_E_INVALID);
    cr_assert(strstr(err.msg, "plain http") != NULL, "%s", err.msg);
    cr_assert_eq(mtls_url_parse("https://localhost:0/", &u, &err), MTLS_E_INVALID);
    cr_assert_eq(mtls_url_parse("https://localhost:65536/", &u, &err), MTLS_E_INVALID);
    cr_assert_eq(mtls_url_parse("https://localhost:80x/", &u, &err), MTLS_E_INVALID);
    cr_assert_eq(mtls_url_parse("https:///test", &u, &err), MTLS_E_INVALID);
    cr_assert_eq(mtls_url_parse("https://[::1/", &u, &err), MTLS_E_INVALID);
    cr_assert_eq(mtls_url_parse("ftp://h/", &u, &err), MTLS_E_INVALID);
    cr_assert_eq(mtls_url_parse("https://h/a b", &u, &err), MTLS_E_INVALID);
    /* A password in the URL is refused and never repeated. */
    cr_assert_eq(mtls_url_parse("https://bob:s3cret@h:8443/", &u, &err), MTLS_E_INVALID);
    cr_assert(strstr(err.msg, "user name or password") != NULL, "%s", err.msg);
    cr_assert(strstr(err.msg, "s3cret") == NULL, "%s", err.msg);
}

Test(url, fragment_is_not_sent)
{
    mtls_url u;
    mtls_err err;

    cr_assert_eq(mtls_url_parse("https://h:9/a?b#c", &u, &err), 0, "%s", err.msg);
    cr_assert_str_eq(u.path, "/a?b");
    cr_assert_eq(u.port, 9);
    cr_assert_eq(mtls_url_parse("https://h#top", &u, &err), 0, "%s", err.msg);
    cr_assert_str_eq(u.host, "h");
    cr_assert_str_eq(u.path, "/");
    cr_assert_eq(mtls_url_parse("https://h/p?mail=a@b", &u, &err), 0, "%s", err.msg);
}

Test(names, alerts_and_outcomes)
{
    cr_assert_str_eq(mtls_alert_name(48), "unknown_ca");
    cr_assert_str_eq(mtls_alert_name(116), "certificate_required");
    cr_assert_str_eq(mtls_alert_name(45), "certificate_expired");
    cr_assert_str_eq(mtls_alert_name(250), "unknown_alert");
    cr_assert_str_eq(mtls_probe_outcome_name(MTLS_PROBE_THEY_REFUSED), "they_refused");
    cr_assert_str_eq(mtls_probe_outcome_name(MTLS_PROBE_NOT_TLS), "not_tls");
    cr_assert(mtls_is_ip_literal("127.0.0.1"));
    cr_assert(mtls_is_ip_literal("::1"));
    cr_assert(!mtls_is_ip_literal("localhost"));
}

/* ---- client SSL_CTX from files ---------------------------------------- */

static char dir[] = "/tmp/mtls-unit-client-XXXXXX";

static void write_key(EVP_PKEY *key, const char *name)
{
    char path[256];
    FILE *f;

    snprintf(path, sizeof(path), "%s/%s", dir, name);
    f = fopen(path, "w");
    cr_assert_not_null(f);
    cr_assert_eq(PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL), 1);
    fclose(f);
}

static void write_cert(EVP_PKEY *key, const char *name)
{
    X509 *x = X509_new();
    char path[256];
    FILE *f;

    X509_set_version(x, X509_VERSION_3);
    ASN1_INTEGER_set(X509_get_serialNumber(x), 7);
    X509_gmtime_adj(X509_getm_notBefore(x), 0);
    X509_gmtime_adj(X509_getm_notAfter(x), 86400L);
    X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_UTF8,
                               (const unsigned char *)"localclient", -1, -1, 0);
    X509_set_issuer_name(x, X509_get_subject_name(x));
    X509_set_pubkey(x, key);
    cr_assert_gt(X509_sign(x, key, EVP_sha256()), 0);
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    f = fopen(path, "w");
    cr_assert_not_null(f);
    cr_assert_eq(PEM_write_X509(f, x), 1);
    fclose(f);
    X509_free(x);
}

static char *in_dir(const char *name)
{
    static char paths[16][256];
    static int next;
    char *p = paths[next++ % 16];

    snprintf(p, 256, "%s/%s", dir, name);
    return p;
}

static void setup(void)
{
    EVP_PKEY *a = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    EVP_PKEY *b = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    FILE *f;

    cr_assert_not_null(mkdtemp(dir));
    write_key(a, "a.key");
    write_cert(a, "a.crt");
    write_key(b, "b.key");
    f = fopen(in_dir("enc.key"), "w");
    cr_assert_not_null(f);
    cr_assert_eq(PEM_write_PKCS8PrivateKey(f, a, EVP_aes_256_cbc(), NULL, 0, NULL, "pw"), 1);
    fclose(f);
    f = fopen(in_dir("garbage.pem"), "w");
    fputs("not a certificate\n", f);
    fclose(f);
    EVP_PKEY_free(a);
    EVP_PKEY_free(b);
}

static void teardown(void)
{
    const char *names[] = {"a.key", "a.crt", "b.key", "enc.key", "garbage.pem"};

    for (size_t i = 0; i < 5; i++)
        unlink(in_dir(names[i]));
    rmdir(dir);
}

TestSuite(client_ctx, .init = setup, .fini = teardown);

Test(client_ctx, matching_pair_and_ca)
{
    mtls_client_files files = {
        .cacert = in_dir("a.crt"), .cert = in_dir("a.crt"), .key = in_dir("a.key")};
    mtls_err err;
    SSL_CTX *ctx = mtls_client_ctx_new(&files, &err);

    cr_assert_not_null(ctx, "%s", err.msg);
    cr_assert_not_null(SSL_CTX_get0_certificate(ctx));
    cr_assert_eq(SSL_CTX_get_verify_mode(ctx), SSL_VERIFY_PEER);
    SSL_CTX_free(ctx);
}

Test(client_ctx, key_not_matching_certificate)
{
    mtls_client_files files = {.cert = in_dir("a.crt"), .key = in_dir("b.key")};
    mtls_err err;

    cr_assert_null(mtls_client_ctx_new(&files, &err));
    cr_assert_eq(err.code, MTLS_E_INVALID);
    cr_assert(strstr(err.msg, "does not match your certificate") != NULL, "%s", err.msg);
    cr_assert(strstr(err.msg, "b.key") != NULL, "%s", err.msg);
}

Test(client_ctx, missing_and_bad_files)
{
    mtls_client_files missing = {.cacert = in_dir("nope.crt")};
    mtls_client_files garbage = {.cacert = in_dir("garbage.pem")};
    mtls_client_files half = {.cert = in_dir("a.crt")};
    mtls_err err;

    cr_assert_null(mtls_client_ctx_new(&missing, &err));
    cr_assert_eq(err.code, MTLS_E_NOTFOUND, "%d %s", err.code, err.msg);
    cr_assert(strstr(err.msg, "nope.crt") != NULL, "%s", err.msg);
    cr_assert_null(mtls_client_ctx_new(&garbage, &err));
    cr_assert(strstr(err.msg, "garbage.pem") != NULL, "%s", err.msg);
    cr_assert_null(mtls_client_ctx_new(&half, &err));
    cr_assert(strstr(err.msg, "--key") != NULL, "%s", err.msg);
}

Test(client_ctx, encrypted_key_and_files_of_the_wrong_kind)
{
    mtls_client_files no_pw = {.cert = in_dir("a.crt"), .key = in_dir("enc.key")};
    mtls_client_files pw = {.cert = in_dir("a.crt"), .key = in_dir("enc.key"), .password = "pw"};
    mtls_client_files key_as_ca = {.cacert = in_dir("a.key")};
    mtls_client_files key_as_cert = {.cert = in_dir("a.key"), .key = in_dir("a.key")};
    mtls_err err;
    SSL_CTX *ctx;

    cr_assert_null(mtls_client_ctx_new(&no_pw, &err));
    cr_assert(strstr(err.msg, "is encrypted: pass its password") != NULL, "%s", err.msg);
    ctx = mtls_client_ctx_new(&pw, &err);
    cr_assert_not_null(ctx, "%s", err.msg);
    SSL_CTX_free(ctx);
    cr_assert_null(mtls_client_ctx_new(&key_as_ca, &err));
    cr_assert(strstr(err.msg, "holds a private key, not a certificate: --cacert needs") != NULL,
              "%s", err.msg);
    cr_assert_null(mtls_client_ctx_new(&key_as_cert, &err));
    cr_assert(strstr(err.msg, "holds a private key, not a certificate") != NULL, "%s", err.msg);
}

Test(client_ctx, peer_name_dns_and_ip)
{
    mtls_client_files none = {0};
    mtls_err err;
    SSL_CTX *ctx = mtls_client_ctx_new(&none, &err);
    SSL *ssl;

    cr_assert_not_null(ctx, "%s", err.msg);
    ssl = SSL_new(ctx);
    cr_assert_eq(mtls_client_set_peer_name(ssl, "localhost", &err), 0, "%s", err.msg);
    cr_assert_str_eq(SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name), "localhost");
    SSL_free(ssl);
    ssl = SSL_new(ctx);
    cr_assert_eq(mtls_client_set_peer_name(ssl, "127.0.0.1", &err), 0, "%s", err.msg);
    /* An address is never sent as SNI. */
    cr_assert_null(SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name));
    cr_assert_eq(mtls_client_set_peer_name(ssl, "", &err), MTLS_E_INVALID);
    SSL_free(ssl);
    SSL_CTX_free(ctx);
}

Test(probe, bad_url_is_an_error_not_a_finding)
{
    mtls_probe_opts opts = {.url = "http://localhost/"};
    mtls_probe_result res;
    mtls_err err;

    cr_assert_eq(mtls_probe(&opts, &res, &err), MTLS_E_INVALID);
    mtls_probe_result_release(&res);
}

Test(probe, refused_port_is_a_finding)
{
    mtls_probe_opts opts = {.url = "https://127.0.0.1:1/"};
    mtls_probe_result res;
    mtls_err err;
    cJSON *json;

    cr_assert_eq(mtls_probe(&opts, &res, &err), 0, "%s", err.msg);
    cr_assert_eq(res.outcome, MTLS_PROBE_REFUSED);
    cr_assert_eq(res.stage, MTLS_STAGE_CONNECT);
    json = mtls_probe_result_to_json(&res);
    cr_assert_not_null(json);
    cr_assert_str_eq(cJSON_GetObjectItem(json, "outcome")->valuestring, "connection_refused");
    cJSON_Delete(json);
    mtls_probe_result_release(&res);
}

/* ---- mtls_client_connect: every address in turn --------------------- */

static int listen_loopback(int *port)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(sa);
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    cr_assert(fd >= 0);
    cr_assert_eq(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    cr_assert_eq(listen(fd, 4), 0);
    cr_assert_eq(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
    *port = ntohs(sa.sin_port);
    return fd;
}

static void collect(void *arg, const char *line)
{
    char *all = arg;

    strncat(all, line, 4000 - strlen(all));
    strncat(all, "\n", 4000 - strlen(all));
}

Test(connect, localhost_reaches_a_server_on_127_0_0_1_only)
{
    /* Whatever /etc/hosts says first for localhost (Debian: ::1), the
     * address that accepts is found. */
    char trace[4096] = "", want[64];
    mtls_client_conn conn;
    mtls_err err;
    int port, lfd = listen_loopback(&port);

    cr_assert_eq(mtls_client_connect("localhost", port, 2000, collect, trace, &conn, &err), 0, "%s",
                 err.msg);
    snprintf(want, sizeof(want), "127.0.0.1:%d", port);
    cr_assert_str_eq(conn.address, want);
    cr_assert(conn.fd >= 0);
    cr_assert_eq(conn.addr.ss_family, AF_INET);
    cr_assert(strstr(trace, "Trying 127.0.0.1:") != NULL, "%s", trace);
    cr_assert(strstr(trace, "Connected to localhost (127.0.0.1:") != NULL, "%s", trace);
    close(conn.fd);
    close(lfd);
}

Test(connect, every_refusal_is_named)
{
    mtls_client_conn conn;
    mtls_err err;
    int port, lfd = listen_loopback(&port);
    char want[64];

    close(lfd); /* nothing listens there now */
    cr_assert_eq(mtls_client_connect("127.0.0.1", port, 2000, NULL, NULL, &conn, &err), MTLS_E_IO);
    cr_assert_eq(conn.fd, -1);
    cr_assert_eq(conn.sys_errno, ECONNREFUSED);
    snprintf(want, sizeof(want), "cannot connect to '127.0.0.1' port %d: 127.0.0.1:%d: ", port,
             port);
    cr_assert(strncmp(err.msg, want, strlen(want)) == 0, "%s", err.msg);
    cr_assert_gt(conn.addr_len, 0, "the first address tried is kept");
    cr_assert_eq(mtls_client_connect("no-such-host.invalid", 443, 2000, NULL, NULL, &conn, &err),
                 MTLS_E_NOTFOUND);
    cr_assert(strstr(err.msg, "cannot resolve 'no-such-host.invalid'") != NULL, "%s", err.msg);
    cr_assert_eq(conn.addr_len, 0);
}
