// The C API: a thin shell over Codec that turns Status into codes and keeps exceptions inside.
#include "tessera/erasure/ec.h"

#include <memory>
#include <new>
#include <span>

#include "tessera/erasure/codec.h"

using tessera::erasure::Codec;

struct tessera_ec {
  std::unique_ptr<Codec> codec;
};

namespace {

// Runs `fn`, mapping an escaped allocation failure (the only exception our code can raise) and
// anything unexpected onto codes, so that no exception unwinds into a C caller.
template <typename Fn>
int Guard(Fn&& fn) noexcept {
  try {
    return fn();
  } catch (const std::bad_alloc&) {
    return TESSERA_NO_SPACE;
  } catch (...) {
    return TESSERA_INTERNAL;
  }
}

}  // namespace

extern "C" {

int tessera_ec_create(const char* scheme, int k, int m, tessera_ec** out) {
  return Guard([&] {
    if (out == nullptr) return TESSERA_NULL_HANDLE;
    *out = nullptr;
    if (scheme == nullptr) return TESSERA_NULL_HANDLE;
    auto codec = Codec::Create(scheme, k, m);
    if (!codec.ok()) return tessera::ToCError(codec.status());
    *out = new tessera_ec{std::move(codec).value()};
    return TESSERA_OK;
  });
}

void tessera_ec_destroy(tessera_ec* ec) { delete ec; }

int tessera_ec_encode(tessera_ec* ec, const uint8_t* const* data, uint8_t* const* parity,
                      size_t len) {
  return Guard([&] {
    if (ec == nullptr || data == nullptr || parity == nullptr) return TESSERA_NULL_HANDLE;
    const Codec& c = *ec->codec;
    return tessera::ToCError(c.Encode(std::span(data, c.k()), std::span(parity, c.m()), len));
  });
}

int tessera_ec_decode(tessera_ec* ec, uint8_t* const* shards, const int* erased, int n_erased,
                      size_t len) {
  return Guard([&] {
    if (ec == nullptr || shards == nullptr) return TESSERA_NULL_HANDLE;
    if (n_erased < 0) return TESSERA_INVALID_ARGUMENT;
    if (erased == nullptr && n_erased > 0) return TESSERA_NULL_HANDLE;
    const Codec& c = *ec->codec;
    std::span<const int> e = n_erased == 0 ? std::span<const int>() : std::span(erased, n_erased);
    return tessera::ToCError(c.Decode(std::span(shards, c.n()), e, len));
  });
}

int tessera_ec_verify(tessera_ec* ec, const uint8_t* const* shards, size_t len) {
  return Guard([&] {
    if (ec == nullptr || shards == nullptr) return TESSERA_NULL_HANDLE;
    const Codec& c = *ec->codec;
    auto ok = c.Verify(std::span(shards, c.n()), len);
    if (!ok.ok()) return tessera::ToCError(ok.status());
    return *ok ? 1 : 0;
  });
}

}  // extern "C"
