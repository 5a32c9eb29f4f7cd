/*
 * alloc_census.so: a census of a server's live heap blocks, for
 * bench/idle-census.sh. Preloaded (LD_PRELOAD) into mtls or nginx, it counts
 * every block that malloc, calloc, realloc and the aligned allocators hand
 * out and free takes back, by size class, and writes the counts when it
 * receives SIGRTMIN+3 (a signal neither server uses): two censuses, one
 * before connections are opened and one while they are held, give what each
 * held connection keeps, as blocks and bytes, by size.
 *
 * Output: one line per size class, "census PID CLASS BLOCKS BYTES", where
 * CLASS is the largest usable size of the class (16, 32, 64, ... bytes) and
 * BYTES the usable bytes of its blocks (what malloc_usable_size() says,
 * without glibc's 8-byte chunk header); a final "census PID total ..." line.
 * Written with write(2) only, from the signal handler: nothing here takes a
 * lock or allocates.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <malloc.h>
#include <signal.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#define CLASSES 40

static void *(*real_malloc)(size_t);
static void *(*real_calloc)(size_t, size_t);
static void *(*real_realloc)(void *, size_t);
static void (*real_free)(void *);
static int (*real_posix_memalign)(void **, size_t, size_t);
static void *(*real_aligned_alloc)(size_t, size_t);
static void *(*real_memalign)(size_t, size_t);

static _Atomic long blocks[CLASSES];
static _Atomic long bytes[CLASSES];

/*
 * dlsym() itself may call calloc() before real_calloc is known: those few
 * blocks come from here and are never freed to glibc.
 */
static unsigned char early[4096];
static size_t early_used;

static int is_early(const void *p)
{
    return (const unsigned char *)p >= early && (const unsigned char *)p < early + sizeof(early);
}

static int size_class(size_t n)
{
    int k = 4;

    while (k < CLASSES - 1 && ((size_t)1 << k) < n)
        k++;
    return k;
}

static void count(void *p, long sign)
{
    size_t n;
    int k;

    if (p == NULL || is_early(p))
        return;
    n = malloc_usable_size(p);
    k = size_class(n);
    atomic_fetch_add_explicit(&blocks[k], sign, memory_order_relaxed);
    atomic_fetch_add_explicit(&bytes[k], sign * (long)n, memory_order_relaxed);
}

static char *put_long(char *at, long v)
{
    char digits[24];
    int n = 0;

    if (v < 0) {
        *at++ = '-';
        v = -v;
    }
    do {
        digits[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v > 0);
    while (n > 0)
        *at++ = digits[--n];
    return at;
}

static char *put_str(char *at, const char *s)
{
    size_t n = strlen(s);

    memcpy(at, s, n);
    return at + n;
}

static void write_line(const char *label, long cls, long b, long n)
{
    char line[160], *at = line;

    at = put_str(at, "census ");
    at = put_long(at, (long)getpid());
    at = put_str(at, " ");
    if (label != NULL)
        at = put_str(at, label);
    else
        at = put_long(at, cls);
    at = put_str(at, " ");
    at = put_long(at, b);
    at = put_str(at, " ");
    at = put_long(at, n);
    *at++ = '\n';
    (void)!write(STDERR_FILENO, line, (size_t)(at - line));
}

static void report(int sig)
{
    long total_blocks = 0, total_bytes = 0;
    int saved = errno;

    (void)sig;
    for (int k = 0; k < CLASSES; k++) {
        long b = atomic_load(&blocks[k]), n = atomic_load(&bytes[k]);

        if (b == 0)
            continue;
        write_line(NULL, (long)1 << k, b, n);
        total_blocks += b;
        total_bytes += n;
    }
    write_line("total", 0, total_blocks, total_bytes);
    errno = saved;
}

__attribute__((constructor)) static void census_start(void)
{
    struct sigaction sa;

    real_calloc = dlsym(RTLD_NEXT, "calloc");
    real_malloc = dlsym(RTLD_NEXT, "malloc");
    real_realloc = dlsym(RTLD_NEXT, "realloc");
    real_free = dlsym(RTLD_NEXT, "free");
    real_posix_memalign = dlsym(RTLD_NEXT, "posix_memalign");
    real_aligned_alloc = dlsym(RTLD_NEXT, "aligned_alloc");
    real_memalign = dlsym(RTLD_NEXT, "memalign");
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = report;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGRTMIN + 3, &sa, NULL);
}

void *malloc(size_t n)
{
    void *p;

    if (real_malloc == NULL)
        census_start();
    p = real_malloc(n);
    count(p, 1);
    return p;
}

void *calloc(size_t n, size_t size)
{
    void *p;

    if (real_calloc == NULL) {
        /* Only dlsym() comes here, before the constructor has finished. */
        size_t want = (n * size + 15) & ~(size_t)15;

        if (n != 0 && want / n < size)
            return NULL;
        if (early_used + want > sizeof(early))
            return NULL;
        p = early + early_used;
        early_used += want;
        return p;
    }
    p = real_calloc(n, size);
    count(p, 1);
    return p;
}

void *realloc(void *old, size_t n)
{
    void *p;

    if (is_early(old)) {
        size_t room = (size_t)(early + sizeof(early) - (unsigned char *)old);

        p = malloc(n);
        if (p != NULL)
            memcpy(p, old, n < room ? n : room);
        return p;
    }
    count(old, -1);
    p = real_realloc(old, n);
    count(p != NULL ? p : (n == 0 ? NULL : old), 1);
    return p;
}

void free(void *p)
{
    if (p == NULL || is_early(p))
        return;
    count(p, -1);
    real_free(p);
}

int posix_memalign(void **out, size_t align, size_t n)
{
    int r = real_posix_memalign(out, align, n);

    if (r == 0)
        count(*out, 1);
    return r;
}

void *aligned_alloc(size_t align, size_t n)
{
    void *p = real_aligned_alloc(align, n);

    count(p, 1);
    return p;
}

void *memalign(size_t align, size_t n)
{
    void *p = real_memalign(align, n);

    count(p, 1);
    return p;
}
