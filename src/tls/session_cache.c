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
#define MEAN_SESSION 512 /* bytes per index entry: P-256 sessions are ~600 */
#define LOCAL_SLOTS 1024 /* parsed sessions kept per context */

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

/*
 * What a context needs: its cache, the generation it was made for, and the
 * sessions it made or resumed itself, parsed (a small direct-mapped table
 * in this process: a hit skips d2i_SSL_SESSION, which parses the client
 * certificate again; about 1.6 M instructions of a 4.0 M resumption).
 */
struct ctx_link {
    mtls_tls_session_cache *cache;
    uint32_t gen;
    pthread_mutex_t local_lock; /* a context may serve several threads */
    SSL_SESSION *local[LOCAL_SLOTS];
};

static int link_index = -1;
static pthread_once_t link_once = PTHREAD_ONCE_INIT;

static void link_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl, void *argp)
{
    struct ctx_link *link = ptr;

    (void)parent;
    (void)ad;
    (void)idx;
    (void)argl;
    (void)argp;
    if (link == NULL)
        return;
    for (size_t i = 0; i < LOCAL_SLOTS; i++)
        SSL_SESSION_free(link->local[i]);
    pthread_mutex_destroy(&link->local_lock);
    free(link);
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

static uint32_t id_hash(const unsigned char *id, unsigned id_len)
{
    uint32_t h = 2166136261u; /* FNV-1a over the first bytes (ids are random) */

    for (unsigned i = 0; i < id_len && i < 8; i++)
        h = (h ^ id[i]) * 16777619u;
    return h;
}

static struct entry *bucket_of(struct region *r, const unsigned char *id, unsigned id_len)
{
    return &r->index[(size_t)(id_hash(id, id_len) % r->n_buckets) * WAYS];
}

/* ---- the context's own parsed sessions ------------------------------------------ */

static int same_id(SSL_SESSION *session, const unsigned char *id, unsigned id_len)
{
    unsigned int len = 0;
    const unsigned char *sid = SSL_SESSION_get_id(session, &len);

    return len == id_len && memcmp(sid, id, id_len) == 0;
}

/* Keeps a reference to session in link's table. */
static void local_put(struct ctx_link *link, SSL_SESSION *session)
{
    unsigned int id_len = 0;
    const unsigned char *id = SSL_SESSION_get_id(session, &id_len);
    SSL_SESSION **slot = &link->local[id_hash(id, id_len) % LOCAL_SLOTS];
    SSL_SESSION *old;

    if (SSL_SESSION_up_ref(session) != 1)
        return;
    pthread_mutex_lock(&link->local_lock);
    old = *slot;
    *slot = session;
    pthread_mutex_unlock(&link->local_lock);
    SSL_SESSION_free(old);
}

/* A new reference to the session with this id in link's table, or NULL. */
static SSL_SESSION *local_get(struct ctx_link *link, const unsigned char *id, unsigned id_len)
{
    SSL_SESSION **slot = &link->local[id_hash(id, id_len) % LOCAL_SLOTS];
    SSL_SESSION *session = NULL;

    pthread_mutex_lock(&link->local_lock);
    if (*slot != NULL && same_id(*slot, id, id_len) &&
        SSL_SESSION_get_time(*slot) + SSL_SESSION_get_timeout(*slot) > time(NULL) &&
        SSL_SESSION_up_ref(*slot) == 1)
        session = *slot;
    pthread_mutex_unlock(&link->local_lock);
    return session;
}

static void local_remove(struct ctx_link *link, const unsigned char *id, unsigned id_len)
{
    SSL_SESSION **slot = &link->local[id_hash(id, id_len) % LOCAL_SLOTS];
    SSL_SESSION *old = NULL;

    pthread_mutex_lock(&link->local_lock);
    if (*slot != NULL && same_id(*slot, id, id_len)) {
        old = *slot;
        *slot = NULL;
    }
    pthread_mutex_unlock(&link->local_lock);
    SSL_SESSION_free(old);
}

/* Whether link's generation is still the cache's (no reload since its context was made). */
static int current(const struct ctx_link *link)
{
    return link->gen == __atomic_load_n(&link->cache->r->gen, __ATOMIC_ACQUIRE);
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
    uint32_t gen = cache->r->gen + 1;

    if (gen == 0) /* after 2^32 reloads: entries of generation 0 are long gone */
        gen = 1;
    __atomic_store_n(&cache->r->gen, gen, __ATOMIC_RELEASE);
    if (link != NULL && link->cache == cache)
        link->gen = gen;
    cache->r->stats.flushes++;
    unlock(cache->r);
    if (link != NULL && link->cache == cache) {
        /* What ctx parsed before belongs to the old generation. */
        for (size_t i = 0; i < LOCAL_SLOTS; i++) {
            pthread_mutex_lock(&link->local_lock);
            SSL_SESSION *old = link->local[i];
            link->local[i] = NULL;
            pthread_mutex_unlock(&link->local_lock);
            SSL_SESSION_free(old);
        }
    }
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

/* Writes session into the shared region. Returns 1 when stored. */
static int store(mtls_tls_session_cache *cache, uint32_t gen, SSL_SESSION *session)
{
    struct region *r = cache->r;
    unsigned char der[MAX_DER], *p = der;
    unsigned int id_len = 0;
    const unsigned char *id = SSL_SESSION_get_id(session, &id_len);
    int len = i2d_SSL_SESSION(session, NULL);
    time_t now = time(NULL);
    struct entry *e, *b;
    uint64_t at;
    int stored = 0;

    if (id_len == 0 || id_len > SSL_MAX_SSL_SESSION_ID_LENGTH)
        return 0;
    if (len <= 0 || len > MAX_DER) {
        lock(r);
        r->stats.too_big++;
        unlock(r);
        return 0;
    }
    if (i2d_SSL_SESSION(session, &p) != len)
        return 0;
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
    stored = 1;
out:
    unlock(r);
    OPENSSL_cleanse(der, (size_t)len); /* it holds the master secret */
    return stored;
}

int mtls__srv_session_cache_put(SSL *ssl, SSL_SESSION *session)
{
    struct ctx_link *link = link_of(SSL_get_SSL_CTX(ssl));

    if (link == NULL)
        return 0; /* the context's own cache keeps it */
    if (store(link->cache, link->gen, session))
        local_put(link, session);
    return 0; /* OpenSSL drops its reference; ours are in the table and shared memory */
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
    if (link == NULL || id_len <= 0 || id_len > SSL_MAX_SSL_SESSION_ID_LENGTH || !current(link))
        return NULL;
    r = link->cache->r;
    session = local_get(link, id, (unsigned)id_len);
    if (session != NULL) {
        __atomic_fetch_add(&r->stats.local_hits, 1, __ATOMIC_RELAXED);
        return session;
    }
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
        if (session != NULL)
            local_put(link, session);
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
    local_remove(link, id, id_len);
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
    if (pthread_mutex_init(&link->local_lock, NULL) != 0) {
        free(link);
        return -1;
    }
    link->cache = cache;
    lock(cache->r);
    link->gen = cache->r->gen;
    unlock(cache->r);
    if (!SSL_CTX_set_ex_data(ctx, link_index, link)) {
        pthread_mutex_destroy(&link->local_lock);
        free(link);
        return -1;
    }
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_SERVER | SSL_SESS_CACHE_NO_INTERNAL);
    SSL_CTX_sess_set_get_cb(ctx, session_get);
    SSL_CTX_sess_set_remove_cb(ctx, session_remove);
    return 0;
}
