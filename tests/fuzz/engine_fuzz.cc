// Fuzz target: arbitrary bytes opened as an engine file, then Verify, a scan and some gets. Must
// never crash, hang or leak; any outcome that is a Status is fine.
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "tessera/engine/db.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static std::string path = [] {
    char tmpl[] = "/tmp/tessera-fuzz-XXXXXX";
    if (mkdtemp(tmpl) == nullptr) std::abort();
    return std::string(tmpl) + "/db";
  }();
  FILE* f = std::fopen(path.c_str(), "wb");
  if (f == nullptr) std::abort();
  if (size > 0 && std::fwrite(data, 1, size, f) != size) std::abort();
  std::fclose(f);
  tessera::engine::Options o;
  o.read_only = true;
  o.create_if_missing = false;
  o.reserve_bytes = uint64_t{1} << 30;
  auto db = tessera::engine::Db::Open(path, o);
  if (!db.ok()) return 0;
  (void)(*db)->Verify();
  auto txn = (*db)->BeginRead();
  if (!txn.ok()) return 0;
  auto names = (*txn)->ListTrees();
  auto cur = (*txn)->NewCursor();
  if (cur.ok()) {
    int n = 0;
    for (auto s = (*cur)->First(); s.ok() && (*cur)->Valid() && n < 100000; s = (*cur)->Next()) {
      (void)(*txn)->Get((*cur)->key());
      ++n;
    }
    for (auto s = (*cur)->Last(); s.ok() && (*cur)->Valid() && n < 200000; s = (*cur)->Prev()) ++n;
  }
  (void)(*txn)->Get("key1");
  (void)(*db)->GetStats();
  return 0;
}
