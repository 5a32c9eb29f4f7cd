/*
 * A cache of client certificate chains that verified, per SSL_CTX: a
 * returning client whose exact chain (the DER of every certificate it sent)
 * verified before against this context's trust store and CRLs skips
 * X509_verify_cert() (about 140 us for a P-256 chain). It still proves that
 * it holds the key (CertificateVerify), which OpenSSL checks apart from this.
 *
 * Only successes are kept, each until the earliest notAfter in its verified
 * chain, the earliest nextUpdate of the loaded CRLs, or an hour, whichever
 * comes first. A reload makes a new SSL_CTX and so an empty cache. Each
 * SSL_CTX is used by one worker (process or thread), so there is no lock.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>

#include "server_internal.h"

#define SLOTS 1024 /* direct-mapped: a colliding chain replaces the older one */
#define MAX_AGE 3600

struct slot {
    unsigned char key[32];
    time_t until;
};

struct verify_cache {
    EVP_MD *sha256;
    time_t crl_until; /* earliest CRL nextUpdate, 0: no CRL */
    struct slot slots[SLOTS];
};

static int cache_index = -1;
static pthread_once_t cache_once = PTHREAD_ONCE_INIT;

static void cache_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl, void *argp)
{
    struct verify_cache *vc = ptr;

    (void)parent;
    (void)ad;
    (void)idx;
    (void)argl;
    (void)argp;
    if (vc == NULL)
        return;
    EVP_MD_free(vc->sha256);
    free(vc);
}

static void cache_index_init(void)
{
    cache_index = SSL_CTX_get_ex_new_index(0, "mtls verify cache", NULL, NULL, cache_free);
}

/* SHA-256 over the SHA-256 of each certificate the client sent, in order. */
static int chain_key(struct verify_cache *vc, X509 *leaf, STACK_OF(X509) * sent,
                     unsigned char key[32])
{
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    unsigned char one[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    int n = sent ? sk_X509_num(sent) : 0, ok = 0;

    if (md == NULL || EVP_DigestInit_ex(md, vc->sha256, NULL) != 1)
        goto out;
    if (!X509_digest(leaf, vc->sha256, one, &len) || EVP_DigestUpdate(md, one, len) != 1)
        goto out;
    for (int i = 0; i < n; i++) {
        X509 *x = sk_X509_value(sent, i);

        if (x == leaf)
            continue;
        if (!X509_digest(x, vc->sha256, one, &len) || EVP_DigestUpdate(md, one, len) != 1)
            goto out;
    }
    ok = EVP_DigestFinal_ex(md, key, &len) == 1 && len == 32;
out:
    EVP_MD_CTX_free(md);
    return ok;
}

static time_t not_after(X509 *x)
{
    struct tm tm;

    if (!ASN1_TIME_to_tm(X509_get0_notAfter(x), &tm))
        return 0;
    return timegm(&tm);
}

static int verify_with_cache(X509_STORE_CTX *store, void *arg)
{
    struct verify_cache *vc = arg;
    X509 *leaf = X509_STORE_CTX_get0_cert(store);
    unsigned char key[32];
    struct slot *slot = NULL;
    time_t now = time(NULL), until;
    STACK_OF(X509) * chain;
    int ok;

    if (vc != NULL && leaf != NULL &&
        chain_key(vc, leaf, X509_STORE_CTX_get0_untrusted(store), key)) {
        slot = &vc->slots[(key[0] | key[1] << 8) % SLOTS];
        if (slot->until > now && memcmp(slot->key, key, sizeof(key)) == 0)
            return 1; /* the same chain verified before; error stays X509_V_OK */
    }
    ok = X509_verify_cert(store);
    /* In optional mode the verify callback lets failures through: keep only clean passes. */
    if (ok != 1 || slot == NULL || X509_STORE_CTX_get_error(store) != X509_V_OK)
        return ok;
    until = now + MAX_AGE;
    if (vc->crl_until != 0 && vc->crl_until < until)
        until = vc->crl_until;
    chain = X509_STORE_CTX_get0_chain(store);
    for (int i = 0; chain != NULL && i < sk_X509_num(chain); i++) {
        time_t t = not_after(sk_X509_value(chain, i));

        if (t != 0 && t < until)
            until = t;
    }
    memcpy(slot->key, key, sizeof(key));
    slot->until = until;
    return ok;
}

int mtls__srv_verify_cache_attach(SSL_CTX *ctx, time_t crl_until)
{
    struct verify_cache *vc;

    pthread_once(&cache_once, cache_index_init);
    if (cache_index < 0)
        return -1;
    vc = calloc(1, sizeof(*vc));
    if (vc == NULL)
        return -1;
    vc->sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
    vc->crl_until = crl_until;
    if (vc->sha256 == NULL || !SSL_CTX_set_ex_data(ctx, cache_index, vc)) {
        EVP_MD_free(vc->sha256);
        free(vc);
        return -1;
    }
    SSL_CTX_set_cert_verify_callback(ctx, verify_with_cache, vc);
    return 0;
}

time_t mtls__srv_verify_cache_crl_until(SSL_CTX *ctx)
{
    struct verify_cache *vc = cache_index >= 0 ? SSL_CTX_get_ex_data(ctx, cache_index) : NULL;

    return vc != NULL ? vc->crl_until : 0;
}
