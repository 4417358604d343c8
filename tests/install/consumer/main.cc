// A program outside the Tessera tree, built against the installed package.
#include <cstdio>

#include "tessera/common/errors.h"
#include "tessera/common/status.h"
#include "tessera/common/version.h"

int main() {
  tessera::Status s = tessera::Status::NotFound("consumer probe");
  if (tessera::ToCError(s) != TESSERA_NOTFOUND) return 1;
  std::printf("consumer linked against tessera %s: %s\n", TESSERA_VERSION,
              tessera_strerror(TESSERA_NOTFOUND));
  return 0;
}
