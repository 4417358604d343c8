/* The C API of Tessera's erasure codes, exported by libtessera_erasure.so.
 *
 * A tessera_ec is a codec of shape (k, m): k data shards, m parity shards, all `len` bytes long.
 * Shard i < k is data shard i, shard k + j is parity shard j. Any k of the k + m shards rebuild the
 * rest. Schemes:
 *   "xor"        m must be 1; parity = XOR of the data.
 *   "rs"         Reed-Solomon over GF(2^8), polynomial 0x11D, Backblaze's Vandermonde-derived
 * matrix (byte-compatible with JavaReedSolomon and klauspost/reedsolomon). "rs-cauchy" Reed-Solomon
 * with ISA-L's Cauchy matrix. Limits: k >= 1, m >= 1, k + m <= 255. Any len >= 1 and any buffer
 * alignment are accepted; 32-byte aligned buffers are fastest.
 *
 * Every function returns 0 (TESSERA_OK) or a negative TESSERA_* code from tessera/common/errors.h
 * (tessera_verify also returns 1/0); tessera_strerror() describes a code. No C++ exception escapes.
 *
 * Thread safety: one tessera_ec may be used by many threads at once (decode tables are cached per
 * erasure pattern under a lock); tessera_ec_destroy must not race with any other call on it. */
#ifndef TESSERA_ERASURE_EC_H_
#define TESSERA_ERASURE_EC_H_

#include <stddef.h>
#include <stdint.h>

#include "tessera/common/errors.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct tessera_ec tessera_ec;

/* Creates a codec into *out (set to NULL on failure).
 * Errors: TESSERA_NULL_HANDLE (scheme or out NULL), TESSERA_BAD_SCHEME, TESSERA_BAD_SHARD_COUNT
 * (k or m out of range, or m != 1 for "xor"), TESSERA_NO_SPACE (out of memory). */
int tessera_ec_create(const char* scheme, int k, int m, tessera_ec** out);

/* Frees the codec; NULL is ignored. */
void tessera_ec_destroy(tessera_ec* ec);

/* Writes the m parity shards computed from the k data shards.
 * Errors: TESSERA_NULL_HANDLE (ec, data, parity or any shard pointer NULL), TESSERA_BAD_LENGTH. */
int tessera_ec_encode(tessera_ec* ec, const uint8_t* const* data, uint8_t* const* parity,
                      size_t len);

/* shards: all k + m shards. The n_erased shards listed in `erased` are rewritten from the others,
 * which must be intact; an erased shard whose pointer is NULL is skipped (not rebuilt).
 * n_erased == 0 does nothing.
 * Errors: TESSERA_NULL_HANDLE (ec, shards or a surviving shard NULL), TESSERA_BAD_LENGTH,
 * TESSERA_INVALID_ARGUMENT (n_erased < 0), TESSERA_BAD_SHARD_INDEX, TESSERA_DUPLICATE_ERASURE,
 * TESSERA_TOO_MANY_ERASURES (n_erased > m), TESSERA_NO_SPACE (out of memory building the tables of
 * a new pattern). */
int tessera_ec_decode(tessera_ec* ec, uint8_t* const* shards, const int* erased, int n_erased,
                      size_t len);

/* Returns 1 when the parity shards match the data shards, 0 when they do not, or an error:
 * TESSERA_NULL_HANDLE, TESSERA_BAD_LENGTH, TESSERA_NO_SPACE. */
int tessera_ec_verify(tessera_ec* ec, const uint8_t* const* shards, size_t len);

#ifdef __cplusplus
}
#endif

#endif /* TESSERA_ERASURE_EC_H_ */
