// A program outside the Tessera tree, built against the installed package.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "tessera/common/errors.h"
#include "tessera/common/status.h"
#include "tessera/common/version.h"
#include "tessera/engine/db.h"
#include "tessera/engine/tessera.h"
#include "tessera/erasure/codec.h"
#include "tessera/erasure/ec.h"
#include "tessera/vmem/region.h"
#include "tessera/vmem/vmem.h"

int main() {
  tessera::Status s = tessera::Status::NotFound("consumer probe");
  if (tessera::ToCError(s) != TESSERA_NOTFOUND) return 1;
  // tessera::erasure through both APIs: rebuild a lost shard of an rs 2+1 stripe.
  auto codec = tessera::erasure::Codec::Create("rs", 2, 1);
  if (!codec.ok()) return 2;
  uint8_t a[5] = {1, 2, 3, 4, 5}, b[5] = {9, 8, 7, 6, 5}, p[5] = {};
  const uint8_t* data[] = {a, b};
  uint8_t* parity[] = {p};
  if (!(*codec)->Encode(data, parity, sizeof(a)).ok()) return 3;
  tessera_ec* ec = nullptr;
  if (tessera_ec_create("rs", 2, 1, &ec) != TESSERA_OK) return 4;
  uint8_t lost[5] = {};
  uint8_t* shards[] = {lost, b, p};
  const int erased[] = {0};
  const int rc = tessera_ec_decode(ec, shards, erased, 1, sizeof(a));
  tessera_ec_destroy(ec);
  if (rc != TESSERA_OK) return 5;
  for (int i = 0; i < 5; ++i) {
    if (lost[i] != a[i]) return 6;
  }
  // tessera::vmem through both APIs: a region that grows in place, and a page via the C ABI.
  auto region = tessera::vmem::Region::OpenAnonymous({});
  if (!region.ok() || !(*region)->Grow(2).ok()) return 7;
  (*region)->Page(1)[0] = 42;
  tessera_vmem* vm = nullptr;
  if (tessera_vmem_open(nullptr, 4096, &vm) != TESSERA_OK) return 8;
  uint64_t page = 0;
  uint8_t in[3] = {1, 2, 3}, out[3] = {};
  if (tessera_vmem_allocate_page(vm, &page) != TESSERA_OK ||
      tessera_vmem_write(vm, page, 10, in, 3) != TESSERA_OK ||
      tessera_vmem_read(vm, page, 10, out, 3) != TESSERA_OK || out[2] != 3 ||
      tessera_vmem_free_page(vm, page) != TESSERA_OK ||
      tessera_vmem_free_page(vm, page) != TESSERA_PAGE_ALREADY_FREE) {
    tessera_vmem_close(vm);
    return 9;
  }
  tessera_vmem_close(vm);
  // tessera::engine through both APIs: a database file written with C++ and read with C.
  char dir[] = "/tmp/tessera-consumer-XXXXXX";
  if (mkdtemp(dir) == nullptr) return 10;
  std::string path = std::string(dir) + "/db";
  {
    auto db = tessera::engine::Db::Open(path);
    if (!db.ok() || !(*db)->Put("hello", "world").ok()) return 11;
  }
  tessera_db* cdb = nullptr;
  tessera_txn* txn = nullptr;
  const void* v = nullptr;
  size_t vl = 0;
  if (tessera_db_open(path.c_str(), "read_only=1", &cdb) != TESSERA_OK ||
      tessera_txn_begin(cdb, 1, &txn) != TESSERA_OK ||
      tessera_get(txn, "hello", 5, &v, &vl) != TESSERA_OK ||
      std::string((const char*)v, vl) != "world") {
    return 12;
  }
  tessera_txn_abort(txn);
  tessera_db_close(cdb);
  std::remove(path.c_str());
  std::remove(dir);
  std::printf("consumer linked against tessera %s: %s\n", TESSERA_VERSION,
              tessera_strerror(TESSERA_NOTFOUND));
  return 0;
}
