// The C API: thin shims over the C++ API that never let an exception escape.
#include <cerrno>
#include <cstdlib>
#include <exception>
#include <memory>
#include <string>

#include "tessera/engine/db.h"
#include "tessera/engine/tessera.h"

using tessera::Status;
using tessera::ToCError;
using tessera::engine::Cursor;
using tessera::engine::Db;
using tessera::engine::ReadTxn;
using tessera::engine::WriteTxn;

struct tessera_db {
  std::unique_ptr<Db> db;
  bool sync = true;
};

struct tessera_txn {
  tessera_db* db;
  std::unique_ptr<ReadTxn> txn;
  WriteTxn* write = nullptr;  // same object as txn when read-write
};

struct tessera_cursor {
  std::unique_ptr<Cursor> cur;
};

namespace {

template <typename F>
int Guard(F&& f) {
  try {
    return f();
  } catch (const std::bad_alloc&) {
    return TESSERA_NO_SPACE;
  } catch (...) {
    return TESSERA_INTERNAL;
  }
}

bool ParseBool(const std::string& v, bool* out) {
  if (v == "1" || v == "true") {
    *out = true;
    return true;
  }
  if (v == "0" || v == "false") {
    *out = false;
    return true;
  }
  return false;
}

bool ParseU64(const std::string& v, uint64_t* out) {
  // Digits only: strtoull alone takes leading blanks and a sign ("-1" is 2^64 - 1).
  if (v.empty() || v.size() > 20 || v.find_first_not_of("0123456789") != std::string::npos) {
    return false;
  }
  char* end = nullptr;
  errno = 0;
  unsigned long long x = std::strtoull(v.c_str(), &end, 10);
  if (*end != '\0' || errno == ERANGE) return false;
  *out = x;
  return true;
}

int ParseOptions(const char* s, tessera::engine::Options* o, bool* sync) {
  if (s == nullptr) return TESSERA_OK;
  std::string all(s);
  size_t pos = 0;
  while (pos <= all.size()) {
    size_t end = all.find(';', pos);
    if (end == std::string::npos) end = all.size();
    std::string item = all.substr(pos, end - pos);
    pos = end + 1;
    if (item.empty()) continue;
    size_t eq = item.find('=');
    if (eq == std::string::npos) return TESSERA_BAD_OPTIONS;
    std::string k = item.substr(0, eq), v = item.substr(eq + 1);
    uint64_t n = 0;
    bool b = false;
    if (k == "page_size" && ParseU64(v, &n) && n <= UINT32_MAX) {
      o->page_size = static_cast<uint32_t>(n);
    } else if (k == "sync" && ParseBool(v, &b)) {
      *sync = b;
      o->sync = b;
    } else if (k == "read_only" && ParseBool(v, &b)) {
      o->read_only = b;
    } else if (k == "create" && ParseBool(v, &b)) {
      o->create_if_missing = b;
    } else if (k == "max_readers" && ParseU64(v, &n) && n >= 1 && n <= 4096) {
      o->max_readers = n;
    } else if (k == "map_size" && ParseU64(v, &n) && n >= 65536) {
      o->reserve_bytes = n;
    } else if (k == "commit_log" && ParseBool(v, &b)) {
      o->commit_log = b;
    } else if (k == "shrink_on_close" && ParseBool(v, &b)) {
      o->shrink_on_close = b;
    } else if (k == "group_commit_spin_us" && ParseU64(v, &n) && n <= 1000000) {
      o->group_commit_spin_us = static_cast<uint32_t>(n);
    } else if (k == "format_version" && ParseU64(v, &n) && n <= 3) {
      o->format_version = static_cast<uint32_t>(n);
    } else {
      return TESSERA_BAD_OPTIONS;
    }
  }
  return TESSERA_OK;
}

void Out(std::string_view s, const void** p, size_t* n) {
  if (p) *p = s.data();
  if (n) *n = s.size();
}

int CursorResult(tessera_cursor* c, const Status& s, const void** k, size_t* kl, const void** v,
                 size_t* vl) {
  if (!s.ok()) return ToCError(s);
  if (!c->cur->Valid()) return TESSERA_NOTFOUND;
  Out(c->cur->key(), k, kl);
  Out(c->cur->value(), v, vl);
  return TESSERA_OK;
}

}  // namespace

extern "C" {

int tessera_db_open(const char* path, const char* options, tessera_db** out) {
  if (path == nullptr || out == nullptr) return TESSERA_NULL_HANDLE;
  *out = nullptr;
  return Guard([&] {
    tessera::engine::Options o;
    bool sync = true;
    if (int rc = ParseOptions(options, &o, &sync); rc != TESSERA_OK) return rc;
    auto db = Db::Open(path, o);
    if (!db.ok()) return ToCError(db.status());
    *out = new tessera_db{std::move(db).value(), sync};
    return TESSERA_OK;
  });
}

void tessera_db_close(tessera_db* db) {
  try {
    delete db;
  } catch (...) {
  }
}

int tessera_txn_begin(tessera_db* db, int read_only, tessera_txn** out) {
  if (db == nullptr || out == nullptr) return TESSERA_NULL_HANDLE;
  *out = nullptr;
  return Guard([&] {
    auto t = std::make_unique<tessera_txn>();
    t->db = db;
    if (read_only) {
      auto r = db->db->BeginRead();
      if (!r.ok()) return ToCError(r.status());
      t->txn = std::move(r).value();
    } else {
      auto w = db->db->BeginWrite();
      if (!w.ok()) return ToCError(w.status());
      t->write = w->get();
      t->txn = std::move(w).value();
    }
    *out = t.release();
    return TESSERA_OK;
  });
}

int tessera_txn_commit(tessera_txn* txn) {
  if (txn == nullptr) return TESSERA_NULL_HANDLE;
  std::unique_ptr<tessera_txn> owned(txn);
  return Guard([&] {
    if (txn->write == nullptr) return TESSERA_OK;
    return ToCError(txn->write->Commit(tessera::engine::WriteOptions{txn->db->sync}));
  });
}

void tessera_txn_abort(tessera_txn* txn) {
  try {
    delete txn;  // WriteTxn's destructor aborts
  } catch (...) {
  }
}

int tessera_get(tessera_txn* txn, const void* key, size_t klen, const void** val, size_t* vlen) {
  if (txn == nullptr || (key == nullptr && klen > 0)) return TESSERA_NULL_HANDLE;
  // No key that put refuses can be stored: say so, as the header promises, not NOTFOUND.
  if (klen == 0 || klen > tessera::engine::kMaxKeySize) return TESSERA_KEY_TOO_LARGE;
  return Guard([&] {
    auto v = txn->txn->Get(std::string_view(static_cast<const char*>(key), klen));
    if (!v.ok()) return ToCError(v.status());
    Out(*v, val, vlen);
    return TESSERA_OK;
  });
}

int tessera_put(tessera_txn* txn, const void* key, size_t klen, const void* val, size_t vlen) {
  if (txn == nullptr || (key == nullptr && klen > 0) || (val == nullptr && vlen > 0)) {
    return TESSERA_NULL_HANDLE;
  }
  if (txn->write == nullptr) return TESSERA_READ_ONLY;
  return Guard([&] {
    return ToCError(txn->write->Put(std::string_view(static_cast<const char*>(key), klen),
                                    std::string_view(static_cast<const char*>(val), vlen)));
  });
}

int tessera_del(tessera_txn* txn, const void* key, size_t klen) {
  if (txn == nullptr || (key == nullptr && klen > 0)) return TESSERA_NULL_HANDLE;
  if (txn->write == nullptr) return TESSERA_READ_ONLY;
  return Guard([&] {
    return ToCError(txn->write->Delete(std::string_view(static_cast<const char*>(key), klen)));
  });
}

int tessera_cursor_open(tessera_txn* txn, tessera_cursor** out) {
  if (txn == nullptr || out == nullptr) return TESSERA_NULL_HANDLE;
  *out = nullptr;
  return Guard([&] {
    auto c = txn->txn->NewCursor();
    if (!c.ok()) return ToCError(c.status());
    *out = new tessera_cursor{std::move(c).value()};
    return TESSERA_OK;
  });
}

int tessera_cursor_seek(tessera_cursor* c, const void* key, size_t klen, const void** k, size_t* kl,
                        const void** v, size_t* vl) {
  if (c == nullptr || (key == nullptr && klen > 0)) return TESSERA_NULL_HANDLE;
  return Guard([&] {
    Status s = c->cur->Seek(std::string_view(static_cast<const char*>(key), klen));
    return CursorResult(c, s, k, kl, v, vl);
  });
}

int tessera_cursor_first(tessera_cursor* c, const void** k, size_t* kl, const void** v,
                         size_t* vl) {
  if (c == nullptr) return TESSERA_NULL_HANDLE;
  return Guard([&] { return CursorResult(c, c->cur->First(), k, kl, v, vl); });
}

int tessera_cursor_next(tessera_cursor* c, const void** k, size_t* kl, const void** v, size_t* vl) {
  if (c == nullptr) return TESSERA_NULL_HANDLE;
  return Guard([&] {
    if (!c->cur->Valid()) return TESSERA_NOTFOUND;
    return CursorResult(c, c->cur->Next(), k, kl, v, vl);
  });
}

void tessera_cursor_close(tessera_cursor* c) {
  try {
    delete c;
  } catch (...) {
  }
}

}  // extern "C"
