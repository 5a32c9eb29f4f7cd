/*
 * mtls/client.h - the TLS client side of libmtls: an SSL_CTX for a client
 * made from files, and a probe that connects to an https:// URL, records
 * everything the handshake shows (protocol, cipher, the server's chain,
 * whether it verifies, the CertificateRequest and its CA names, alerts in
 * both directions), sends GET PATH and reads the answer.
 *
 * Part of the tls layer (src/tls/client_ctx.c, src/tls/probe.c). The library
 * never prints: a caller that wants curl -v's trace passes a callback.
 */
#ifndef MTLS_CLIENT_H
#define MTLS_CLIENT_H

#include <stddef.h>
#include <sys/socket.h>

#include <openssl/ssl.h>

#include "mtls/base.h"
#include "mtls/certinfo.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- a client SSL_CTX from files ------------------------------------ */

/** Where a client's trust and identity come from. Every field may be NULL. */
typedef struct mtls_client_files {
    const char *cacert;   /* CA certificates to trust (PEM bundle or DER); NULL: the system's */
    const char *cert;     /* our certificate (PEM or DER; a PEM may carry its chain); needs key */
    const char *key;      /* our private key (PEM) */
    const char *password; /* NULL, or the password of an encrypted key (borrowed) */
} mtls_client_files;

/**
 * Makes a client SSL_CTX (TLS 1.2 and 1.3, SSL_VERIFY_PEER) from files:
 * trusts the certificates in files->cacert (or the system's default store),
 * and presents files->cert with files->key when a server asks for a client
 * certificate. Checks that the key matches the certificate before anything
 * connects (MTLS_E_INVALID, "your key 'k' does not match your certificate
 * 'c'"); files are read as mtls_cert_load_all() and mtls_key_load() read
 * them (an encrypted key needs files->password). Host-name checks are per
 * connection (see mtls_client_set_peer_name).
 * Returns a new SSL_CTX the caller frees with SSL_CTX_free(), or NULL with
 * err set (MTLS_E_NOTFOUND, MTLS_E_IO, MTLS_E_INVALID, MTLS_E_CRYPTO).
 */
SSL_CTX *mtls_client_ctx_new(const mtls_client_files *files, mtls_err *err);

/**
 * Sets what ssl verifies the server's certificate against: name is a DNS
 * name (matched against the SANs, X509_VERIFY_PARAM_set1_host) or an IP
 * address (X509_VERIFY_PARAM_set1_ip_asc). A DNS name is also sent as SNI.
 * Returns 0 or MTLS_E_INVALID / MTLS_E_CRYPTO with err set.
 */
int mtls_client_set_peer_name(SSL *ssl, const char *name, mtls_err *err);

/** Returns 1 when text is an IPv4 or IPv6 address literal (no brackets). */
int mtls_is_ip_literal(const char *text);

/* ---- URLs ----------------------------------------------------------- */

/** An https URL taken apart. Caller-owned; no release needed. */
typedef struct mtls_url {
    char host[256];  /* "localhost", "127.0.0.1", "::1" (no brackets) */
    int port;        /* 443 when the URL names none */
    char path[1024]; /* "/test"; "/" when the URL names none */
} mtls_url;

/**
 * Parses "https://HOST[:PORT][/PATH]" (also "HOST[:PORT][/PATH]" and
 * "[v6]:PORT"); a "#fragment" is dropped. Returns 0, or MTLS_E_INVALID
 * naming what is wrong (an http:// scheme, a bad port, an empty host, a
 * user name or password before '@', which the message never quotes).
 */
int mtls_url_parse(const char *text, mtls_url *url, mtls_err *err);

/* ---- connecting ----------------------------------------------------- */

/**
 * Called with one line of trace, without a newline ("Trying [::1]:8443...").
 * line is borrowed for the call only.
 */
typedef void (*mtls_client_trace_fn)(void *arg, const char *line);

/** What mtls_client_connect() found. Caller-owned. */
typedef struct mtls_client_conn {
    int fd;                       /* a connected non-blocking socket the caller closes, or -1 */
    struct sockaddr_storage addr; /* the address connected to; on failure the first one tried */
    socklen_t addr_len;           /* 0 when the name did not resolve */
    char address[64];             /* addr as text: "127.0.0.1:8443", "[::1]:8443" */
    int sys_errno;                /* why the last address failed (ETIMEDOUT: our timeout), or 0 */
} mtls_client_conn;

/**
 * Resolves host (a name or an address literal) and connects to port, trying
 * each address the name resolves to in the order the resolver gives them
 * (as curl does: "localhost" may be ::1 first, then 127.0.0.1), each within
 * timeout_ms, until one accepts. trace (may be NULL) hears "Resolving",
 * "Trying" and "Connected to" lines. Fills *out and returns 0 with out->fd
 * connected (TCP_NODELAY, non-blocking, close-on-exec); MTLS_E_NOTFOUND when
 * host does not resolve; MTLS_E_IO when no address accepted, err naming
 * each address tried and why, out->sys_errno the last reason.
 */
int mtls_client_connect(const char *host, int port, int timeout_ms, mtls_client_trace_fn trace,
                        void *trace_arg, mtls_client_conn *out, mtls_err *err);

/* ---- the probe ------------------------------------------------------ */

/** How a probe ended; the CLI turns it into a sentence and an exit code. */
typedef enum mtls_probe_outcome {
    MTLS_PROBE_OK = 0,       /* handshake done, an HTTP answer read */
    MTLS_PROBE_LOCAL,        /* our own files are wrong (before connecting) */
    MTLS_PROBE_DNS,          /* the host name does not resolve */
    MTLS_PROBE_REFUSED,      /* nothing listens (ECONNREFUSED) */
    MTLS_PROBE_TIMEOUT,      /* connect, handshake or answer took too long */
    MTLS_PROBE_NETWORK,      /* another socket error: unreachable, reset, EOF */
    MTLS_PROBE_NOT_TLS,      /* the peer answered, but not in TLS */
    MTLS_PROBE_WE_REFUSED,   /* we rejected the server's certificate */
    MTLS_PROBE_THEY_REFUSED, /* the server rejected us (alert or close) */
    MTLS_PROBE_TLS_FAILED,   /* another handshake failure (versions, ciphers) */
    MTLS_PROBE_HTTP_REFUSED, /* handshake done, but the answer was 401, 403, or a refusal of
                                our certificate (http_refuses_certificate) */
} mtls_probe_outcome;

/** How far a probe got before it ended. */
typedef enum mtls_probe_stage {
    MTLS_STAGE_RESOLVE = 0,
    MTLS_STAGE_CONNECT,
    MTLS_STAGE_HANDSHAKE,
    MTLS_STAGE_REQUEST, /* handshake done on our side, request being sent or answered */
    MTLS_STAGE_DONE,
} mtls_probe_stage;

/**
 * Called with one line of curl -v style trace, without a newline
 * ("TLSv1.3 (OUT), TLS handshake, Client hello (1)", "> GET /test HTTP/1.1").
 * line is borrowed for the call only.
 */
typedef void (*mtls_probe_trace_fn)(void *arg, const char *line);

/** What to probe and how. Caller-owned; strings borrowed for the call. */
typedef struct mtls_probe_opts {
    const char *url; /* "https://localhost:8443/test" */
    mtls_client_files files;
    const char *servername;    /* SNI and the name verified; NULL: the URL's host */
    int timeout_ms;            /* for each of connect, handshake and answer; 0: 10000 */
    size_t max_body;           /* bytes of body kept; 0: 1 MiB */
    mtls_probe_trace_fn trace; /* NULL: no trace */
    void *trace_arg;
} mtls_probe_opts;

/** An alert seen on the wire. */
typedef struct mtls_probe_alert {
    int seen;               /* 1 when one was sent/received */
    int fatal;              /* level 2 */
    int code;               /* RFC 8446 AlertDescription, e.g. 48 */
    char name[40];          /* "unknown_ca", "certificate_required" */
    mtls_probe_stage stage; /* during the handshake, or after ours completed (TLS 1.3) */
} mtls_probe_alert;

/**
 * Everything a probe found. Filled by mtls_probe(), released by
 * mtls_probe_result_release(); every pointer is owned by the struct.
 */
typedef struct mtls_probe_result {
    mtls_probe_outcome outcome;
    mtls_probe_stage stage;
    char message[MTLS_ERR_MSG_MAX]; /* a technical one-liner of what failed, or "" */
    int sys_errno;                  /* errno of a network failure, or 0 */

    mtls_url url;
    char peer_name[256]; /* the name verified and sent as SNI (unless an IP) */
    char address[64];    /* "127.0.0.1:8443", the address connected to, or "" */

    char protocol[16];    /* "TLSv1.3" once negotiated, else "" */
    char cipher[64];      /* "TLS_AES_256_GCM_SHA384" */
    char plain_text[128]; /* not TLS: the first line the peer sent, printable */

    mtls_cert_info *chain; /* the server's chain as it was sent, leaf first */
    size_t n_chain;

    int verify_done;                    /* 1 once the chain was checked */
    long verify_code;                   /* X509_V_OK or the first X509_V_ERR_* */
    char verify_reason[128];            /* X509_verify_cert_error_string() */
    int verify_depth;                   /* where in the chain it failed */
    char verify_subject[MTLS_NAME_MAX]; /* the certificate at that depth */
    char verify_issuer[MTLS_NAME_MAX];  /* its issuer: the CA we lacked, for unknown CA */
    char verify_issuer_cn[256];

    int cert_requested; /* the server sent a CertificateRequest */
    char **ca_names;    /* the CA names it listed (one-line form), may be none */
    size_t n_ca_names;
    int have_ours;       /* we had a certificate to offer */
    mtls_cert_info ours; /* ours (valid when have_ours) */
    int ours_sent;       /* we sent it (the server asked) */
    int ours_matches;    /* 1: its issuer is among ca_names; 0: not; -1: no list to judge by */

    mtls_probe_alert alert_received;
    mtls_probe_alert alert_sent;

    int http_status;      /* 200, or 0 before an answer */
    char http_reason[64]; /* "OK" */
    char *body;           /* the body (NUL-terminated), or NULL */
    size_t body_len;
    int body_truncated;
    /* The answer refuses our certificate (or our lack of one): 495, 496, or a
       4xx whose reason or body names a certificate, as nginx answers. */
    int http_refuses_certificate;
} mtls_probe_result;

/**
 * Connects to opts->url, performs the TLS handshake (verifying the server
 * against opts->files.cacert and the host name), sends "GET PATH" and reads
 * the answer, filling result. A failure of the connection, the handshake or
 * the request is a finding, not an error: it returns 0 with
 * result->outcome saying what happened. It returns a negative MTLS_E_* with
 * err set only when the probe could not start at all (a bad URL); result
 * must still be released then. SIGPIPE is blocked in the calling thread
 * while it runs (a server that closes early must not kill the caller).
 */
int mtls_probe(const mtls_probe_opts *opts, mtls_probe_result *result, mtls_err *err);

/** Frees what result owns. NULL-safe, safe on a zeroed struct. */
void mtls_probe_result_release(mtls_probe_result *result);

/** "unknown_ca" for 48, "certificate_required" for 116, "alert_N" otherwise. */
const char *mtls_alert_name(int code);

/** The stable name of an outcome, as in --json: "ok", "we_refused", "they_refused"... */
const char *mtls_probe_outcome_name(mtls_probe_outcome outcome);

/**
 * The whole finding as a new cJSON object (url, address, protocol, cipher,
 * chain[] of mtls_cert_info objects, verify{}, certificate_request{},
 * client_certificate{}, alerts, http{}). The caller owns it (cJSON_Delete).
 * NULL when out of memory.
 */
cJSON *mtls_probe_result_to_json(const mtls_probe_result *result);

#ifdef __cplusplus
}
#endif

#endif
