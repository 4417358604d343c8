/* Error codes shared by every Tessera C API (vmem.h, tessera.h, ec.h).
 *
 * Every function of a C API returns 0 (TESSERA_OK) on success or one of these negative codes; none
 * lets a C++ exception escape. tessera_strerror() turns a code into a fixed English sentence.
 * Codes never change meaning once released; new codes are appended. */
#ifndef TESSERA_COMMON_ERRORS_H_
#define TESSERA_COMMON_ERRORS_H_

#ifdef __cplusplus
extern "C" {
#endif

#define TESSERA_OK 0
/* General codes, one per Status code of the C++ API. */
#define TESSERA_NOTFOUND (-1)         /* key not found, or a cursor moved past its last entry */
#define TESSERA_CORRUPTION (-2)       /* a checksum or structural check failed on stored data */
#define TESSERA_IO_ERROR (-3)         /* the operating system reported an I/O failure */
#define TESSERA_INVALID_ARGUMENT (-4) /* an argument is out of range or malformed */
#define TESSERA_NO_SPACE (-5)         /* the disk (or the reserved address space) is full */
#define TESSERA_UNAVAILABLE (-6)      /* a remote node could not be reached */
#define TESSERA_BUSY (-7)     /* the resource is locked by someone else (e.g. another writer) */
#define TESSERA_INTERNAL (-8) /* a bug or an unexpected failure; the message is logged */
/* Refinements of TESSERA_INVALID_ARGUMENT. */
#define TESSERA_NULL_HANDLE (-9)         /* a handle or required pointer argument was NULL */
#define TESSERA_BAD_PAGE_SIZE (-10)      /* page size not a power of two in the supported range */
#define TESSERA_PAGE_NOT_ALLOCATED (-11) /* the page number was never allocated */
#define TESSERA_PAGE_ALREADY_FREE (-12)  /* the page was allocated once but is free now */
#define TESSERA_OUT_OF_BOUNDS (-13)      /* offset + length runs past the end of a page or buffer */
#define TESSERA_READ_ONLY (-14)          /* a write through a read-only handle or transaction */
#define TESSERA_KEY_TOO_LARGE (-15)      /* key empty or longer than the engine's maximum */
#define TESSERA_VALUE_TOO_LARGE (-16)    /* value longer than the engine's maximum */
#define TESSERA_BAD_OPTIONS (-17)        /* an options string could not be parsed */
#define TESSERA_TOO_MANY_ERASURES (-18)  /* more shards erased than the code can rebuild */
#define TESSERA_FATAL (-19)              /* a flush failed earlier; writes refused until reopen */
#define TESSERA_TXN_FINISHED (-20)       /* the transaction already committed or aborted */
/* Erasure codes (ec.h). */
#define TESSERA_BAD_SCHEME (-21)        /* unknown erasure-code scheme (xor, rs, rs-cauchy) */
#define TESSERA_BAD_SHARD_COUNT (-22)   /* k or m out of range: k >= 1, m >= 1, k + m <= 255 */
#define TESSERA_BAD_LENGTH (-23)        /* a shard length of 0 */
#define TESSERA_BAD_SHARD_INDEX (-24)   /* a shard index outside the code's shards */
#define TESSERA_DUPLICATE_ERASURE (-25) /* the same shard listed twice as erased */

/* A static, NUL-terminated description of `code`; "unknown error code" for codes not listed. */
const char* tessera_strerror(int code);

#ifdef __cplusplus
}
#endif

#ifdef __cplusplus
#include "tessera/common/status.h"

namespace tessera {
// The C code for a Status: its refinement if it carries one, otherwise its general code.
int ToCError(const Status& status);
}  // namespace tessera
#endif

#endif /* TESSERA_COMMON_ERRORS_H_ */
