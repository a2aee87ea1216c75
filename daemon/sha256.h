/*
 * SHA-256 (FIPS 180-4) of byte streams: the training-data digest recorded in
 * model manifests, so a bundle names exactly the data it was trained on.
 * Portable C, no dependencies; not constant-time (digests public data only).
 */
#ifndef TD_SHA256_H
#define TD_SHA256_H

#include <stddef.h>
#include <stdint.h>

#define TD_SHA256_LEN 32     /* digest bytes */
#define TD_SHA256_HEX_LEN 64 /* lowercase hex characters, without the NUL */

/* Streaming state; plain value, no resources (no free needed). */
typedef struct td_sha256 {
  uint32_t h[8];
  uint64_t nbytes;          /* total bytes hashed so far */
  unsigned char buf[64];    /* pending partial block */
  size_t buflen;
} td_sha256_t;

void td_sha256_init(td_sha256_t *c);
/* Feeds len bytes; any split of a stream into updates gives the same digest. */
void td_sha256_update(td_sha256_t *c, const void *data, size_t len);
/* Writes the digest; the state must be re-initialized before reuse. */
void td_sha256_final(td_sha256_t *c, unsigned char out[TD_SHA256_LEN]);
/* td_sha256_final, then lowercase hex into hex[TD_SHA256_HEX_LEN + 1] (NUL-terminated). */
void td_sha256_final_hex(td_sha256_t *c, char hex[TD_SHA256_HEX_LEN + 1]);
/* Lowercase hex of a digest into hex[TD_SHA256_HEX_LEN + 1] (NUL-terminated). */
void td_sha256_hex(const unsigned char digest[TD_SHA256_LEN],
                   char hex[TD_SHA256_HEX_LEN + 1]);
/* One shot: digest of one buffer. */
void td_sha256(const void *data, size_t len, unsigned char out[TD_SHA256_LEN]);

#endif
