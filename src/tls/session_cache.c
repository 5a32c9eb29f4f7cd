/*
 * A TLS session cache in shared memory, so that every worker of a server
 * (processes forked after it was made, or threads) resumes the sessions any
 * of them made, as nginx's `ssl_session_cache shared:` zone does.
 *
 * One anonymous MAP_SHARED region holds a small header, an index of session
 * ids (set-associative: WAYS entries per bucket, the bucket chosen by the
 * id's first bytes, which are random) and a ring of bytes where each session
 * is stored as i2d_SSL_SESSION() wrote it, back to back. A session is found
 * by its id; its bytes are valid while the ring has not come round to them
 * again (entry pos + ring size >= head), its time has not run out, and its
 * generation is the cache's current one. So the cache is bounded in bytes and
 * in sessions, the oldest go first, and nothing needs freeing.
 *
 * A reload empties the cache by moving to a new generation: every session
 * stored before, and every one a context made before stores later, no longer
 * resumes anywhere; the reloaded context and those made after it use the new
 * one. One process-shared, robust mutex guards the region; it is held for a
 * memcpy of at most MAX_DER bytes and a scan of WAYS entries. Parsing
 * (d2i_SSL_SESSION) and encoding happen outside it. A worker that dies
 * holding the lock leaves the index in doubt: the next locker empties it.
 *
 * The SSL_CTX keeps no sessions of its own (SSL_SESS_CACHE_NO_INTERNAL):
 * every resumption reads from here, so every worker sees the same cache.
 */
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#include <openssl/ssl.h>

#include "server_internal.h"

#define WAYS 8
#define MAX_DER 4096     /* larger sessions are not cached (nginx's limit too) */
#define MEAN_SESSION 512 /* bytes per index entry: P-256 sessions are ~700 */

struct entry {
    unsigned char id[SSL_MAX_SSL_SESSION_ID_LENGTH];
    uint64_t pos;  /* where its bytes start in the ring, counted since the start */
    int64_t until; /* expiry, time_t */
    uint32_t gen;
    uint16_t len; /* 0: an empty entry */
    uint8_t id_len;
};

struct region {
    pthread_mutex_t lock;
    uint32_t gen; /* the current generation (under lock; read without it as a hint) */
    uint32_t n_buckets;
    uint64_t ring_size;
    uint64_t head; /* the next byte written, counted since the start */
    mtls_tls_session_cache_stats stats;
    struct entry index[]; /* n_buckets * WAYS, then the ring */
};

struct mtls_tls_session_cache {
    struct region *r;
    unsigned char *ring;
    size_t map_size;
};

/* What a context needs: its cache and the generation it was made for. */
struct ctx_link {
    mtls_tls_session_cache *cache;
    uint32_t gen;
};

static int link_index = -1;
static pthread_once_t link_once = PTHREAD_ONCE_INIT;

static void link_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl, void *argp)
{
    (void)parent;
    (void)ad;
    (void)idx;
    (void)argl;
    (void)argp;
    free(ptr);
}

static void link_index_init(void)
{
    link_index = SSL_CTX_get_ex_new_index(0, "mtls session cache", NULL, NULL, link_free);
}

static struct ctx_link *link_of(SSL_CTX *ctx)
{
    return link_index >= 0 ? SSL_CTX_get_ex_data(ctx, link_index) : NULL;
}

int mtls_tls_session_cache_new(size_t bytes, mtls_tls_session_cache **out, mtls_err *err)
{
    mtls_tls_session_cache *cache = NULL;
    pthread_mutexattr_t attr;
    size_t n_buckets, index_size, ring_size;
    int rc, attr_made = 0;

    *out = NULL;
    if (bytes < 64 * 1024)
        bytes = 64 * 1024;
    n_buckets = bytes / MEAN_SESSION / WAYS;
    index_size = sizeof(struct region) + n_buckets * WAYS * sizeof(struct entry);
    index_size = (index_size + 63) & ~(size_t)63;
    ring_size = bytes;
    cache = calloc(1, sizeof(*cache));
    if (cache == NULL) {
        rc = mtls_err_set(err, MTLS_E_NOMEM, "out of memory");
        goto out;
    }
    cache->map_size = index_size + ring_size;
    /* Zero-filled, and pages take memory only once touched. */
    cache->r =
        mmap(NULL, cache->map_size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (cache->r == MAP_FAILED) {
        cache->r = NULL;
        rc = mtls_err_sys(err, MTLS_E_NOMEM, errno, "cannot map the shared session cache");
        goto out;
    }
    cache->ring = (unsigned char *)cache->r + index_size;
    cache->r->n_buckets = (uint32_t)n_buckets;
    cache->r->ring_size = ring_size;
    cache->r->gen = 1;
    if (pthread_mutexattr_init(&attr) != 0) {
        rc = mtls_err_set(err, MTLS_E_NOMEM, "cannot make the session cache's lock");
        goto out;
    }
    attr_made = 1;
    if (pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED) != 0 ||
        pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST) != 0 ||
        pthread_mutex_init(&cache->r->lock, &attr) != 0) {
        rc = mtls_err_set(err, MTLS_E_NOMEM, "cannot make the session cache's lock");
        goto out;
    }
    *out = cache;
    cache = NULL;
    rc = 0;
out:
    if (attr_made)
        pthread_mutexattr_destroy(&attr);
    mtls_tls_session_cache_free(cache);
    return rc;
}

void mtls_tls_session_cache_free(mtls_tls_session_cache *cache)
{
    if (cache == NULL)
        return;
    if (cache->r != NULL)
        munmap(cache->r, cache->map_size);
    free(cache);
}

/* Takes the lock; after a holder died, the index is emptied (its state is in doubt). */
static void lock(struct region *r)
{
    if (pthread_mutex_lock(&r->lock) == EOWNERDEAD) {
        memset(r->index, 0, (size_t)r->n_buckets * WAYS * sizeof(struct entry));
        pthread_mutex_consistent(&r->lock);
    }
}

static void unlock(struct region *r)
{
    pthread_mutex_unlock(&r->lock);
}

static struct entry *bucket_of(struct region *r, const unsigned char *id, unsigned id_len)
{
    uint32_t h = 2166136261u; /* FNV-1a over the first bytes (ids are random) */

    for (unsigned i = 0; i < id_len && i < 8; i++)
        h = (h ^ id[i]) * 16777619u;
    return &r->index[(size_t)(h % r->n_buckets) * WAYS];
}

static int live(const struct region *r, const struct entry *e, uint32_t gen, time_t now)
{
    return e->len != 0 && e->gen == gen && e->until > now && e->pos + r->ring_size >= r->head;
}

static struct entry *find(struct region *r, const unsigned char *id, unsigned id_len)
{
    struct entry *b = bucket_of(r, id, id_len);

    for (int i = 0; i < WAYS; i++) {
        if (b[i].len != 0 && b[i].id_len == id_len && memcmp(b[i].id, id, id_len) == 0)
            return &b[i];
    }
    return NULL;
}

void mtls_tls_session_cache_flush(mtls_tls_session_cache *cache, SSL_CTX *ctx)
{
    struct ctx_link *link = ctx != NULL ? link_of(ctx) : NULL;

    if (cache == NULL)
        return;
    lock(cache->r);
    cache->r->gen++;
    if (cache->r->gen == 0) /* after 2^32 reloads: entries of generation 0 are long gone */
        cache->r->gen = 1;
    if (link != NULL && link->cache == cache)
        link->gen = cache->r->gen;
    cache->r->stats.flushes++;
    unlock(cache->r);
}

void mtls_tls_session_cache_stats_get(mtls_tls_session_cache *cache,
                                      mtls_tls_session_cache_stats *out)
{
    memset(out, 0, sizeof(*out));
    if (cache == NULL)
        return;
    lock(cache->r);
    *out = cache->r->stats;
    out->generation = cache->r->gen;
    unlock(cache->r);
}

/* ---- OpenSSL's callbacks ------------------------------------------------------ */

static void store(mtls_tls_session_cache *cache, uint32_t gen, SSL_SESSION *session)
{
    struct region *r = cache->r;
    unsigned char der[MAX_DER], *p = der;
    unsigned int id_len = 0;
    const unsigned char *id = SSL_SESSION_get_id(session, &id_len);
    int len = i2d_SSL_SESSION(session, NULL);
    time_t now = time(NULL);
    struct entry *e, *b;
    uint64_t at;

    if (id_len == 0 || id_len > SSL_MAX_SSL_SESSION_ID_LENGTH)
        return;
    if (len <= 0 || len > MAX_DER) {
        lock(r);
        r->stats.too_big++;
        unlock(r);
        return;
    }
    if (i2d_SSL_SESSION(session, &p) != len)
        return;
    lock(r);
    if (gen != r->gen) /* a context from before a reload: its sessions would never resume */
        goto out;
    /* Its bytes go at the head, or at the ring's start when they would not fit before its end. */
    at = r->head;
    if (at % r->ring_size + (uint64_t)len > r->ring_size)
        at += r->ring_size - at % r->ring_size;
    r->head = at + (uint64_t)len;
    memcpy(cache->ring + at % r->ring_size, der, (size_t)len);
    e = find(r, id, id_len);
    if (e == NULL) {
        b = bucket_of(r, id, id_len);
        for (int i = 0; i < WAYS && e == NULL; i++) {
            if (!live(r, &b[i], r->gen, now))
                e = &b[i];
        }
        if (e == NULL) { /* every way is in use: the oldest goes */
            e = &b[0];
            for (int i = 1; i < WAYS; i++) {
                if (b[i].pos < e->pos)
                    e = &b[i];
            }
        }
        if (live(r, e, r->gen, now))
            r->stats.evicted++;
    }
    memcpy(e->id, id, id_len);
    e->id_len = (uint8_t)id_len;
    e->pos = at;
    e->len = (uint16_t)len;
    e->gen = r->gen;
    e->until = (int64_t)(SSL_SESSION_get_time(session) + SSL_SESSION_get_timeout(session));
    r->stats.stored++;
out:
    unlock(r);
    OPENSSL_cleanse(der, (size_t)len); /* it holds the master secret */
}

int mtls__srv_session_cache_put(SSL *ssl, SSL_SESSION *session)
{
    struct ctx_link *link = link_of(SSL_get_SSL_CTX(ssl));

    if (link == NULL)
        return 0; /* the context's own cache keeps it */
    store(link->cache, link->gen, session);
    return 0; /* the copy is in shared memory; OpenSSL drops its reference */
}

static SSL_SESSION *session_get(SSL *ssl, const unsigned char *id, int id_len, int *copy)
{
    struct ctx_link *link = link_of(SSL_get_SSL_CTX(ssl));
    unsigned char der[MAX_DER];
    const unsigned char *p = der;
    SSL_SESSION *session = NULL;
    struct region *r;
    struct entry *e;
    size_t len = 0;

    *copy = 0; /* the session returned is the caller's */
    if (link == NULL || id_len <= 0 || id_len > SSL_MAX_SSL_SESSION_ID_LENGTH)
        return NULL;
    r = link->cache->r;
    lock(r);
    e = find(r, id, (unsigned)id_len);
    if (e != NULL && live(r, e, link->gen, time(NULL)) && link->gen == r->gen) {
        len = e->len;
        memcpy(der, link->cache->ring + e->pos % r->ring_size, len);
        r->stats.hits++;
    } else {
        r->stats.misses++;
    }
    unlock(r);
    if (len > 0) {
        session = d2i_SSL_SESSION(NULL, &p, (long)len);
        OPENSSL_cleanse(der, len);
    }
    return session;
}

static void session_remove(SSL_CTX *ctx, SSL_SESSION *session)
{
    struct ctx_link *link = link_of(ctx);
    unsigned int id_len = 0;
    const unsigned char *id = SSL_SESSION_get_id(session, &id_len);
    struct entry *e;

    if (link == NULL || id_len == 0 || id_len > SSL_MAX_SSL_SESSION_ID_LENGTH)
        return;
    lock(link->cache->r);
    e = find(link->cache->r, id, id_len);
    if (e != NULL) {
        e->len = 0;
        link->cache->r->stats.removed++;
    }
    unlock(link->cache->r);
}

int mtls__srv_session_cache_attach(SSL_CTX *ctx, mtls_tls_session_cache *cache)
{
    struct ctx_link *link;

    pthread_once(&link_once, link_index_init);
    if (link_index < 0)
        return -1;
    link = calloc(1, sizeof(*link));
    if (link == NULL)
        return -1;
    link->cache = cache;
    lock(cache->r);
    link->gen = cache->r->gen;
    unlock(cache->r);
    if (!SSL_CTX_set_ex_data(ctx, link_index, link)) {
        free(link);
        return -1;
    }
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_SERVER | SSL_SESS_CACHE_NO_INTERNAL);
    SSL_CTX_sess_set_get_cb(ctx, session_get);
    SSL_CTX_sess_set_remove_cb(ctx, session_remove);
    return 0;
}
