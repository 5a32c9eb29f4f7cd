/*
 * mtls/identity.h - authorization rules on a verified client certificate
 * ("--allow cn=alice", "--allow san-uri=spiffe://example.org/ns/prod/sa/web").
 *
 * Part of the pki layer (src/pki/identity.c): a pure function of the
 * certificate, no sockets, no HTTP. The server evaluates each policy once
 * per connection; src/http matches the result per route.
 */
#ifndef MTLS_IDENTITY_H
#define MTLS_IDENTITY_H

#include <stddef.h>

#include <openssl/x509.h>

#include "mtls/base.h"

#ifdef __cplusplus
extern "C" {
#endif

/** What a rule looks at. */
typedef enum mtls_allow_kind {
    MTLS_ALLOW_CN = 0,      /* cn=NAME: a subject common name, exactly */
    MTLS_ALLOW_O,           /* o=NAME: a subject organization */
    MTLS_ALLOW_OU,          /* ou=NAME: a subject organizational unit */
    MTLS_ALLOW_SAN_DNS,     /* san-dns=NAME: a DNS SAN, ignoring case */
    MTLS_ALLOW_SAN_URI,     /* san-uri=URI: a URI SAN; '*' stands for one path segment */
    MTLS_ALLOW_SAN_EMAIL,   /* san-email=ADDR: an email SAN, ignoring case */
    MTLS_ALLOW_ISSUER,      /* issuer=DN: the issuer, "CN=ca,O=x" (RFC 2253) or "O=x, CN=ca" */
    MTLS_ALLOW_SPKI_SHA256, /* spki-sha256=HEX|BASE64: SHA-256 of the public key (a pin) */
    MTLS_ALLOW_CERT_SHA256, /* cert-sha256=HEX: SHA-256 of the certificate */
} mtls_allow_kind;

/** One rule. */
typedef struct mtls_allow_rule {
    mtls_allow_kind kind;
    char *value;              /* owned */
    unsigned char digest[32]; /* the *-sha256 kinds */
} mtls_allow_rule;

/** A policy: any rule that matches allows. Zero it, add rules, release it. */
typedef struct mtls_allow_policy {
    mtls_allow_rule *rules;
    size_t n;
    char *text; /* "cn alice, san-uri spiffe://x/ns/a" (owned, made by add) */
} mtls_allow_policy;

/**
 * Parses text ("cn=alice") and adds it to p. Returns 0, or MTLS_E_INVALID
 * with err naming the rule (unknown type, empty value, bad digest), or
 * MTLS_E_NOMEM.
 */
int mtls_allow_policy_add(mtls_allow_policy *p, const char *text, mtls_err *err);

/** Frees what p owns. NULL-safe. */
void mtls_allow_policy_release(mtls_allow_policy *p);

/**
 * 1 when cert (borrowed; NULL: no verified certificate) matches a rule of
 * p, else 0. A policy without rules allows any verified certificate.
 */
int mtls_allow_policy_match(const mtls_allow_policy *p, X509 *cert);

/**
 * Who cert is, for a refusal: "CN=bob" (its last common name), or its whole
 * subject when it has none; "a client without a verified certificate" for
 * NULL. Returns buf.
 */
char *mtls_identity_who(X509 *cert, char *buf, size_t size);

#ifdef __cplusplus
}
#endif

#endif
