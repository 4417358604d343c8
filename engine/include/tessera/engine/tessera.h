/* Tessera engine C API.
 *
 * A database is one file. Open it with tessera_db_open, run transactions (any number of read-only
 * ones at once, one read-write one at a time), close it with tessera_db_close. Every function
 * returns 0 (TESSERA_OK) or a negative code from tessera/common/errors.h; tessera_strerror()
 * describes a code. No C++ exception crosses this API.
 *
 * Caveats (as with any memory-mapped store):
 *  - Pointers returned by tessera_get and the cursor functions point into the database mapping.
 *    They are valid until the transaction ends (in a write transaction, only until its next
 *    tessera_put or tessera_del: a write may move or reuse the page they point into), and must
 *    not be written through.
 *  - A write transaction blocks other writers until it commits or aborts; keep it short. It is
 *    committed or aborted by the thread that began it; a thread that begins a second write
 *    transaction while it holds one waits for itself forever.
 *  - A put or del that fails with TESSERA_NO_SPACE, TESSERA_CORRUPTION or TESSERA_FATAL leaves
 *    the write transaction able only to abort: later puts, dels and the commit return that
 *    error. (TESSERA_NOTFOUND, TESSERA_KEY_TOO_LARGE and TESSERA_VALUE_TOO_LARGE change nothing.)
 *  - A handle must not be used after it has been closed/committed/aborted; a transaction or cursor
 *    is used by one thread at a time. The tessera_db handle itself is thread-safe.
 *  - Close every cursor and end every transaction before tessera_db_close.
 */
#ifndef TESSERA_ENGINE_TESSERA_H_
#define TESSERA_ENGINE_TESSERA_H_

#include <stddef.h>

#include "tessera/common/errors.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct tessera_db tessera_db;
typedef struct tessera_txn tessera_txn;
typedef struct tessera_cursor tessera_cursor;

/* Opens or creates the database file `path` (a lock is held on the file itself while open for
 * writing; sync commits may keep a commit log `<path>-log` beside it, and `<path>-readers`
 * beside it holds the snapshots of read-only handles). `options` is NULL or
 * "key=value;key=value" (N: decimal digits only; a repeated key's last value counts) with keys:
 *   page_size=N    power of two 4096..65536, used when the file is created (default 4096)
 *   sync=0|1       whether commits flush before returning (default 1)
 *   read_only=0|1  open without writing the file or locking it (default 0); the handle keeps
 *                  the newest commit at open as its snapshot and registers it in
 *                  `<path>-readers`, so a live writer reuses none of its pages while it is
 *                  open (where that file cannot be opened, the handle still opens, says so,
 *                  and reading a page the writer reused is TESSERA_CORRUPTION)
 *   create=0|1     create the file if missing (default 1)
 *   max_readers=N  concurrent read transactions, 1..4096 (default 126)
 *   map_size=N     bytes of address space reserved; the file's size limit (default 64 GiB)
 *   commit_log=0|1 let a sync commit append to `<path>-log` instead of flushing the file's
 *                  pages when no unflushed commit precedes it; replayed at open (default 1)
 *   format_version=N  format of a file this call creates: 3 (the default, also 0); 2, whose
 *                  large values carry a page header (a 4 KiB value takes two pages); or 1,
 *                  the first format (whole-page checksums); an existing file keeps its own
 *   shrink_on_close=0|1  at close, when a quarter of the file (and at least 8 MiB) is free,
 *                  move the pages in use at its end down and truncate it (default 1)
 *   group_commit_spin_us=N  0..1000000: a writer waiting for another's group commit polls for
 *                  it this long, yielding the CPU, before it sleeps (default 0: sleeps at once);
 *                  faster where idle CPUs wake slowly; stops for a while when yields show busy
 *                  CPUs
 * Errors: TESSERA_NULL_HANDLE (path or out NULL), TESSERA_BAD_OPTIONS (unknown key or bad
 * value), TESSERA_BAD_PAGE_SIZE, TESSERA_BUSY (another writer has the file open),
 * TESSERA_NOTFOUND (missing and create=0, or its directory missing), TESSERA_CORRUPTION (not a
 * Tessera file, an empty file opened read-only, a file cut short of a whole page, or no valid meta
 * page), TESSERA_INVALID_ARGUMENT (map_size smaller than the file, an empty path), TESSERA_IO_ERROR
 * (e.g. a directory), TESSERA_NO_SPACE. */
int tessera_db_open(const char* path, const char* options, tessera_db** out);

/* Closes the database (flushing commits made with sync=0, and shrinking a mostly free file
 * unless shrink_on_close=0). NULL is ignored. */
void tessera_db_close(tessera_db* db);

/* Begins a transaction: read_only != 0 gives a snapshot that never blocks; otherwise the single
 * write transaction (blocks while another is active). Errors: TESSERA_NULL_HANDLE,
 * TESSERA_READ_ONLY (write txn on a read-only db), TESSERA_BUSY (too many readers),
 * TESSERA_FATAL (an earlier flush or commit-log write failed). */
int tessera_txn_begin(tessera_db* db, int read_only, tessera_txn** out);

/* Commits (a read-only txn just ends). Always frees txn, also on error. Errors:
 * TESSERA_NULL_HANDLE, TESSERA_FATAL / TESSERA_IO_ERROR (a flush or the commit log's write
 * failed: the commit is not acknowledged, and the database refuses writes until reopened; a
 * reopen finds it absent unless the failed flush had already put it on disk), TESSERA_NO_SPACE. */
int tessera_txn_commit(tessera_txn* txn);

/* Discards the transaction's changes and frees txn. NULL is ignored. */
void tessera_txn_abort(tessera_txn* txn);

/* Looks up key. *val points into the mapping, valid until the txn ends. Errors:
 * TESSERA_NULL_HANDLE, TESSERA_NOTFOUND, TESSERA_KEY_TOO_LARGE (empty or > 1024 bytes),
 * TESSERA_CORRUPTION (a damaged page; the message names it in the C++ API). */
int tessera_get(tessera_txn* txn, const void* key, size_t klen, const void** val, size_t* vlen);

/* Inserts or replaces. Errors: TESSERA_NULL_HANDLE, TESSERA_READ_ONLY (read-only txn),
 * TESSERA_KEY_TOO_LARGE, TESSERA_VALUE_TOO_LARGE (> 1 GiB), TESSERA_NO_SPACE, TESSERA_FATAL. */
int tessera_put(tessera_txn* txn, const void* key, size_t klen, const void* val, size_t vlen);

/* Deletes key. Errors: as tessera_put, and TESSERA_NOTFOUND when the key is absent. */
int tessera_del(tessera_txn* txn, const void* key, size_t klen);

/* Opens a cursor on the txn's snapshot (in a write txn it sees the txn's own writes, and a write
 * invalidates it: reposition it with seek or first). Errors: TESSERA_NULL_HANDLE. */
int tessera_cursor_open(tessera_txn* txn, tessera_cursor** out);

/* Positions at the first key >= key and returns it. TESSERA_NOTFOUND when there is none. */
int tessera_cursor_seek(tessera_cursor* c, const void* key, size_t klen, const void** k, size_t* kl,
                        const void** v, size_t* vl);

/* Positions at the first key. TESSERA_NOTFOUND when the database is empty. */
int tessera_cursor_first(tessera_cursor* c, const void** k, size_t* kl, const void** v, size_t* vl);

/* Moves to the next key. TESSERA_NOTFOUND past the last key (the cursor then stays at the end);
 * TESSERA_INVALID_ARGUMENT when a write in the txn invalidated the cursor. */
int tessera_cursor_next(tessera_cursor* c, const void** k, size_t* kl, const void** v, size_t* vl);

/* Closes the cursor. NULL is ignored. */
void tessera_cursor_close(tessera_cursor* c);

#ifdef __cplusplus
}
#endif

#endif /* TESSERA_ENGINE_TESSERA_H_ */
