/*
 * mtls/version.h - the version of libmtls these headers belong to.
 *
 * Compare MTLS_VERSION_NUMBER at compile time, mtls_version() at run time
 * (the library actually loaded). meson.build checks that these numbers are
 * the project's version.
 */
#ifndef MTLS_VERSION_H
#define MTLS_VERSION_H

#define MTLS_VERSION_MAJOR 0
#define MTLS_VERSION_MINOR 1
#define MTLS_VERSION_PATCH 0
#define MTLS_VERSION_STRING "0.1.0"
/* 0x00MMmmpp: comparable with < and >. */
#define MTLS_VERSION_NUMBER                                                                        \
    ((MTLS_VERSION_MAJOR << 16) | (MTLS_VERSION_MINOR << 8) | MTLS_VERSION_PATCH)

#ifdef __cplusplus
extern "C" {
#endif

/** The loaded library's version, "0.1.0" (static). */
const char *mtls_version(void);

/** The loaded library's MTLS_VERSION_NUMBER. */
int mtls_version_number(void);

#ifdef __cplusplus
}
#endif

#endif
