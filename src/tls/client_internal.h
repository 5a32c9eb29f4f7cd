/* Internal helpers of the tls layer's client side (connect.c, probe.c). */
#ifndef MTLS_TLS_CLIENT_INTERNAL_H
#define MTLS_TLS_CLIENT_INTERNAL_H

/** Milliseconds on the monotonic clock. */
long long mtls__now_ms(void);

/**
 * Waits for events (POLLIN, POLLOUT) on fd until deadline (mtls__now_ms()
 * time). Returns 1 ready, 0 timed out, -1 error (errno set).
 */
int mtls__wait_fd(int fd, short events, long long deadline);

#endif
