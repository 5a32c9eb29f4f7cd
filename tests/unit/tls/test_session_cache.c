/*
 * src/tls/session_cache.c: sessions stored by one process are found by
 * another, a flush (reload) makes every older session and every older
 * context useless, the cache is bounded, expired and oversized sessions are
 * not served. Driven through OpenSSL's own session callbacks of a server
 * SSL_CTX, as a handshake would call them.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "mtls/tls.h"

static char dir[] = "/tmp/mtls-unit-sc-XXXXXX";
static char cert_path[64], key_path[64];

/* A self-signed P-256 certificate, server certificate and client CA at once. */
static void make_files(void)
{
    EVP_PKEY *key = EVP_EC_gen("P-256");
    X509 *x = X509_new();
    X509_NAME *name = X509_NAME_new();
    FILE *f;

    cr_assert_not_null(mkdtemp(dir));
    snprintf(cert_path, sizeof(cert_path), "%s/c.crt", dir);
    snprintf(key_path, sizeof(key_path), "%s/c.key", dir);
    cr_assert(key != NULL && x != NULL && name != NULL);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)"t", -1, -1, 0);
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
    X509_set_subject_name(x, name);
    X509_set_issuer_name(x, name);
    X509_gmtime_adj(X509_getm_notBefore(x), -60);
    X509_gmtime_adj(X509_getm_notAfter(x), 3600);
    X509_set_pubkey(x, key);
    cr_assert(X509_sign(x, key, EVP_sha256()) > 0);
    f = fopen(cert_path, "w");
    cr_assert(f != NULL && PEM_write_X509(f, x));
    fclose(f);
    f = fopen(key_path, "w");
    cr_assert(f != NULL && PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL));
    fclose(f);
    X509_NAME_free(name);
    X509_free(x);
    EVP_PKEY_free(key);
}

static void remove_files(void)
{
    unlink(cert_path);
    unlink(key_path);
    rmdir(dir);
}

static SSL_CTX *ctx_with(mtls_tls_session_cache *cache)
{
    mtls_tls_server_opts o;
    SSL_CTX *ctx = NULL;
    mtls_err err;

    memset(&o, 0, sizeof(o));
    o.cert_file = cert_path;
    o.key_file = key_path;
    o.client_ca_file = cert_path;
    o.session_cache = cache;
    mtls_err_clear(&err);
    cr_assert_eq(mtls_tls_server_ctx_new(&o, NULL, NULL, &ctx, &err), 0, "%s", err.msg);
    return ctx;
}

/* A TLS 1.3 session with id byte `tag` (and random others), as a handshake would make. */
static SSL_SESSION *session_for(SSL_CTX *ctx, unsigned char tag, size_t hostname_len)
{
    static const unsigned char aes128[] = {0x13, 0x01};
    unsigned char id[32], secret[48];
    SSL_SESSION *s = SSL_SESSION_new();
    SSL *ssl = SSL_new(ctx);

    cr_assert(s != NULL && ssl != NULL);
    for (size_t i = 0; i < sizeof(id); i++)
        id[i] = (unsigned char)rand();
    id[31] = tag;
    memset(secret, tag, sizeof(secret));
    cr_assert(SSL_SESSION_set1_id(s, id, sizeof(id)));
    cr_assert(SSL_SESSION_set1_master_key(s, secret, sizeof(secret)));
    cr_assert(SSL_SESSION_set_protocol_version(s, TLS1_3_VERSION));
    cr_assert(SSL_SESSION_set_cipher(s, SSL_CIPHER_find(ssl, aes128)));
    if (hostname_len > 0) {
        char *name = malloc(hostname_len + 1);

        memset(name, 'a', hostname_len);
        name[hostname_len] = '\0';
        cr_assert(SSL_SESSION_set1_hostname(s, name));
        free(name);
    }
    SSL_SESSION_set_time(s, time(NULL));
    SSL_free(ssl);
    return s;
}

/* What a handshake on ctx does with a new session: the new-session callback. */
static void put(SSL_CTX *ctx, SSL_SESSION *s)
{
    SSL *ssl = SSL_new(ctx);
    int (*new_cb)(SSL *, SSL_SESSION *) = SSL_CTX_sess_get_new_cb(ctx);

    cr_assert(ssl != NULL && new_cb != NULL);
    SSL_SESSION_up_ref(s);
    if (!new_cb(ssl, s)) /* 0: the callback kept no reference */
        SSL_SESSION_free(s);
    SSL_free(ssl);
}

/* What a handshake on ctx does with a session id a client offers: the get callback. */
static int found(SSL_CTX *ctx, SSL_SESSION *s)
{
    SSL *ssl = SSL_new(ctx);
    SSL_SESSION *(*get_cb)(SSL *, const unsigned char *, int, int *) = SSL_CTX_sess_get_get_cb(ctx);
    unsigned int len = 0;
    const unsigned char *id = SSL_SESSION_get_id(s, &len);
    int copy = 1, same = 0;
    SSL_SESSION *got;

    cr_assert(ssl != NULL && get_cb != NULL);
    got = get_cb(ssl, id, (int)len, &copy);
    if (got != NULL) {
        unsigned char a[48], b[48];

        cr_assert_eq(copy, 0);
        same = SSL_SESSION_get_master_key(got, a, sizeof(a)) == 48 &&
               SSL_SESSION_get_master_key(s, b, sizeof(b)) == 48 && memcmp(a, b, 48) == 0;
        cr_assert(same, "a different session came back");
        SSL_SESSION_free(got);
    }
    SSL_free(ssl);
    return got != NULL;
}

TestSuite(session_cache, .init = make_files, .fini = remove_files);

Test(session_cache, a_session_stored_by_one_process_resumes_in_another)
{
    mtls_tls_session_cache *cache = NULL;
    mtls_tls_session_cache_stats st;
    SSL_CTX *ctx;
    SSL_SESSION *s;
    mtls_err err;
    pid_t pid;
    int status;

    cr_assert_eq(mtls_tls_session_cache_new(1 << 20, &cache, &err), 0);
    ctx = ctx_with(cache);
    s = session_for(ctx, 1, 0);
    cr_assert_not(found(ctx, s));
    pid = fork(); /* as the server forks its workers after making the cache */
    cr_assert(pid >= 0);
    if (pid == 0) {
        put(ctx, s);
        _exit(0);
    }
    cr_assert_eq(waitpid(pid, &status, 0), pid);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    cr_assert(found(ctx, s), "the child's session must be found by the parent");
    mtls_tls_session_cache_stats_get(cache, &st);
    cr_assert_eq(st.stored, 1);
    cr_assert_eq(st.hits, 1);
    cr_assert_eq(st.misses, 1);
    /* A fatal alert on a resumed connection makes OpenSSL drop the session. */
    SSL_CTX_sess_get_remove_cb(ctx)(ctx, s);
    cr_assert_not(found(ctx, s));
    SSL_SESSION_free(s);
    SSL_CTX_free(ctx);
    mtls_tls_session_cache_free(cache);
}

Test(session_cache, a_flush_retires_older_sessions_and_older_contexts)
{
    mtls_tls_session_cache *cache = NULL;
    mtls_tls_session_cache_stats st;
    SSL_CTX *old_ctx, *new_ctx, *later_ctx;
    SSL_SESSION *before, *by_old, *after;
    mtls_err err;

    cr_assert_eq(mtls_tls_session_cache_new(1 << 20, &cache, &err), 0);
    old_ctx = ctx_with(cache);
    new_ctx = ctx_with(cache); /* made for the reload, before the flush */
    before = session_for(old_ctx, 2, 0);
    put(old_ctx, before);
    cr_assert(found(old_ctx, before) && found(new_ctx, before));
    mtls_tls_session_cache_flush(cache, new_ctx);
    later_ctx = ctx_with(cache); /* a worker's context made after the reload */
    cr_assert_not(found(new_ctx, before), "a session from before the reload resumed");
    cr_assert_not(found(later_ctx, before));
    cr_assert_not(found(old_ctx, before), "a context from before the reload still resumes");
    /* A context from before the reload stores nothing that could resume later. */
    by_old = session_for(old_ctx, 3, 0);
    put(old_ctx, by_old);
    cr_assert_not(found(new_ctx, by_old));
    cr_assert_not(found(old_ctx, by_old));
    after = session_for(new_ctx, 4, 0);
    put(new_ctx, after);
    cr_assert(found(later_ctx, after) && found(new_ctx, after));
    mtls_tls_session_cache_stats_get(cache, &st);
    cr_assert_eq(st.flushes, 1);
    cr_assert_eq(st.stored, 2);
    SSL_SESSION_free(before);
    SSL_SESSION_free(by_old);
    SSL_SESSION_free(after);
    SSL_CTX_free(old_ctx);
    SSL_CTX_free(new_ctx);
    SSL_CTX_free(later_ctx);
    mtls_tls_session_cache_free(cache);
}

Test(session_cache, it_is_bounded_and_the_oldest_go_first)
{
    enum { N = 2000 };
    mtls_tls_session_cache *cache = NULL;
    SSL_SESSION *s[N];
    SSL_CTX *ctx, *other;
    mtls_err err;
    int kept = 0;

    cr_assert_eq(mtls_tls_session_cache_new(64 * 1024, &cache, &err), 0); /* the smallest */
    ctx = ctx_with(cache);
    other = ctx_with(cache); /* another worker: it has parsed none of them */
    for (int i = 0; i < N; i++) {
        s[i] = session_for(ctx, (unsigned char)i, 0);
        put(ctx, s[i]);
    }
    cr_assert(found(other, s[N - 1]), "the newest session must be there");
    for (int i = 0; i < N - 1; i++)
        kept += found(other, s[i]);
    cr_assert_not(found(other, s[0]), "the oldest session must have gone");
    /* 64 KiB of sessions of ~150 bytes: a few hundred at most, most of them the newest. */
    cr_assert(kept > 100 && kept < 64 * 1024 / 100, "%d kept", kept);
    for (int i = 0; i < N; i++)
        SSL_SESSION_free(s[i]);
    SSL_CTX_free(other);
    SSL_CTX_free(ctx);
    mtls_tls_session_cache_free(cache);
}

Test(session_cache, expired_and_oversized_sessions_are_not_served)
{
    mtls_tls_session_cache *cache = NULL;
    mtls_tls_session_cache_stats st;
    SSL_SESSION *old, *big;
    SSL_CTX *ctx;
    mtls_err err;

    cr_assert_eq(mtls_tls_session_cache_new(1 << 20, &cache, &err), 0);
    ctx = ctx_with(cache);
    old = session_for(ctx, 5, 0);
    put(ctx, old);
    cr_assert(found(ctx, old));
    /* The new-session callback capped it at 5 minutes from its time: 10 minutes ago. */
    SSL_SESSION_set_time(old, time(NULL) - 600);
    put(ctx, old);
    cr_assert_not(found(ctx, old), "an expired session resumed");
    big = session_for(ctx, 6, 5000);
    put(ctx, big);
    cr_assert_not(found(ctx, big));
    mtls_tls_session_cache_stats_get(cache, &st);
    cr_assert_eq(st.too_big, 1);
    SSL_SESSION_free(old);
    SSL_SESSION_free(big);
    SSL_CTX_free(ctx);
    mtls_tls_session_cache_free(cache);
}
