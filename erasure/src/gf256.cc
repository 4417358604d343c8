#include "gf256.h"

#include <array>
#include <utility>
#include <vector>

#include "tessera/common/assert.h"

namespace tessera::erasure::gf {
namespace {

struct Tables {
  // exp has 510 entries so Mul can index log[a] + log[b] without a modulo.
  std::array<uint8_t, 510> exp{};
  std::array<uint8_t, 256> log{};

  constexpr Tables() {
    unsigned x = 1;
    for (int i = 0; i < 255; ++i) {
      exp[i] = static_cast<uint8_t>(x);
      log[x] = static_cast<uint8_t>(i);
      x <<= 1;
      if (x & 0x100) x ^= 0x11D;
    }
    for (int i = 255; i < 510; ++i) exp[i] = exp[i - 255];
  }
};

constexpr Tables kTables;

}  // namespace

uint8_t Mul(uint8_t a, uint8_t b) {
  if (a == 0 || b == 0) return 0;
  return kTables.exp[kTables.log[a] + kTables.log[b]];
}

uint8_t Div(uint8_t a, uint8_t b) {
  TESSERA_ASSERT(b != 0, "GF(2^8) division by zero");
  if (a == 0) return 0;
  return kTables.exp[kTables.log[a] + 255 - kTables.log[b]];
}

uint8_t Pow(uint8_t a, int e) {
  uint8_t r = 1;
  for (int i = 0; i < e; ++i) r = Mul(r, a);
  return r;
}

bool Invert(std::span<const uint8_t> m, std::span<uint8_t> out, int n) {
  const size_t nn = static_cast<size_t>(n) * n;
  TESSERA_ASSERT(m.size() >= nn && out.size() >= nn, "matrix buffers too small for n=", n);
  std::vector<uint8_t> w(m.begin(), m.begin() + nn);
  for (int r = 0; r < n; ++r) {
    for (int c = 0; c < n; ++c) out[r * n + c] = r == c ? 1 : 0;
  }
  for (int col = 0; col < n; ++col) {
    int pivot = col;
    while (pivot < n && w[pivot * n + col] == 0) ++pivot;
    if (pivot == n) return false;
    if (pivot != col) {
      for (int c = 0; c < n; ++c) {
        std::swap(w[pivot * n + c], w[col * n + c]);
        std::swap(out[pivot * n + c], out[col * n + c]);
      }
    }
    const uint8_t inv = Div(1, w[col * n + col]);
    for (int c = 0; c < n; ++c) {
      w[col * n + c] = Mul(w[col * n + c], inv);
      out[col * n + c] = Mul(out[col * n + c], inv);
    }
    for (int r = 0; r < n; ++r) {
      const uint8_t f = w[r * n + col];
      if (r == col || f == 0) continue;
      for (int c = 0; c < n; ++c) {
        w[r * n + c] ^= Mul(f, w[col * n + c]);
        out[r * n + c] ^= Mul(f, out[col * n + c]);
      }
    }
  }
  return true;
}

void MatMul(std::span<const uint8_t> a, std::span<const uint8_t> b, std::span<uint8_t> out,
            int rows, int inner, int cols) {
  for (int r = 0; r < rows; ++r) {
    for (int c = 0; c < cols; ++c) {
      uint8_t s = 0;
      for (int i = 0; i < inner; ++i) s ^= Mul(a[r * inner + i], b[i * cols + c]);
      out[r * cols + c] = s;
    }
  }
}

}  // namespace tessera::erasure::gf
