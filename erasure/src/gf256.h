// Scalar GF(2^8) arithmetic and small matrix algebra for building coding matrices.
//
// Only the set-up path uses this (building the encode matrix once per codec and one decode matrix
// per erasure pattern); the data path runs ISA-L's vectorised kernels on tables derived from these
// matrices. The field is GF(2)[x] / (x^8 + x^4 + x^3 + x^2 + 1), polynomial 0x11D, with generator
// 2, which is what ISA-L's tables, Backblaze's JavaReedSolomon and klauspost/reedsolomon all use.
//
// Thread safety: the log/exp tables are built once by a constant-initialised object and are
// read-only afterwards; every function is safe to call from any thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

namespace tessera::erasure::gf {

uint8_t Mul(uint8_t a, uint8_t b);
// a / b for b != 0 (asserted: dividing by zero is a bug in the caller's matrix code).
uint8_t Div(uint8_t a, uint8_t b);
// a^e with 0^0 = 1, the convention the Vandermonde definition relies on.
uint8_t Pow(uint8_t a, int e);

// Inverts the n×n row-major matrix `m` into `out` by Gauss-Jordan elimination. Returns false when
// `m` is singular (then `out` is unspecified). `m` is left untouched.
bool Invert(std::span<const uint8_t> m, std::span<uint8_t> out, int n);

// out (rows×cols) = a (rows×inner) · b (inner×cols), all row-major.
void MatMul(std::span<const uint8_t> a, std::span<const uint8_t> b, std::span<uint8_t> out,
            int rows, int inner, int cols);

}  // namespace tessera::erasure::gf
