// vmem microbenchmarks. Each comparison runs side by side in this one process and the summary at
// the end prints the ratios:
//  - first-touch page-fault cost of a region (anonymous and file-backed);
//  - sequential and random 4 KiB reads and writes through a region (pointer arithmetic, and the C
//    ABI with its checks) vs plain memcpy over a heap buffer of the same size, all pages resident;
//  - PageAllocator allocate/free with 1 and 2 threads vs one global mutex, as the seed's
//    VirtualMemory had.
// Run: vmem_bench [Google Benchmark flags]. Files go to $TMPDIR (default /tmp).
#include <benchmark/benchmark.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "tessera/vmem/page_allocator.h"
#include "tessera/vmem/region.h"
#include "tessera/vmem/vmem.h"

namespace tessera::vmem {
namespace {

constexpr uint64_t kPage = 4096;
constexpr uint64_t kCopyPages = 16384;  // 64 MiB: larger than the caches, so memory-bound
constexpr uint64_t kTouchPages = 4096;  // 16 MiB per first-touch round
constexpr int kAllocBatch = 64;         // pages each thread holds before freeing them

std::string TempPath(const char* name) {
  const char* dir = std::getenv("TMPDIR");
  return std::string(dir != nullptr && *dir != '\0' ? dir : "/tmp") + "/tessera-vmem-bench-" +
         std::to_string(getpid()) + "-" + name;
}

[[noreturn]] void Die(const Status& st, const char* what) {
  std::fprintf(stderr, "vmem_bench: %s: %s\n", what, st.ToString().c_str());
  std::exit(1);
}

// ---- first touch -------------------------------------------------------------------------------

void FirstTouch(benchmark::State& state, bool file) {
  const std::string path = TempPath("touch");
  for (auto _ : state) {
    unlink(path.c_str());
    auto r = file ? Region::Open(path, {}) : Region::OpenAnonymous({});
    if (!r.ok()) Die(r.status(), "open");
    if (Status st = (*r)->Grow(kTouchPages); !st.ok()) Die(st, "grow");
    uint8_t* base = (*r)->base();
    auto start = std::chrono::steady_clock::now();
    for (uint64_t p = 0; p < kTouchPages; ++p) base[p * kPage] = 1;
    auto end = std::chrono::steady_clock::now();
    state.SetIterationTime(std::chrono::duration<double>(end - start).count());
  }
  unlink(path.c_str());
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * kTouchPages));
}
// The baseline: a plain anonymous mapping, as malloc returns for large buffers.
void FirstTouchPlainMmap(benchmark::State& state) {
  for (auto _ : state) {
    void* m = mmap(nullptr, kTouchPages * kPage, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) Die(Status::NoSpace("mmap"), "mmap");
    auto* base = static_cast<uint8_t*>(m);
    auto start = std::chrono::steady_clock::now();
    for (uint64_t p = 0; p < kTouchPages; ++p) base[p * kPage] = 1;
    auto end = std::chrono::steady_clock::now();
    state.SetIterationTime(std::chrono::duration<double>(end - start).count());
    munmap(m, kTouchPages * kPage);
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * kTouchPages));
}
BENCHMARK(FirstTouchPlainMmap)->UseManualTime()->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(FirstTouch, anonymous, false)->UseManualTime()->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(FirstTouch, file, true)->UseManualTime()->Unit(benchmark::kMicrosecond);

// ---- 4 KiB copies ------------------------------------------------------------------------------

enum class Target { kMemcpy, kRegionAnon, kRegionFile, kCApiFile };

// The pages under test, made resident before timing starts.
struct CopySetup {
  std::unique_ptr<uint8_t, decltype(&std::free)> heap{nullptr, &std::free};
  std::unique_ptr<Region> region;
  tessera_vmem* vm = nullptr;
  std::vector<uint64_t> capi_pages;
  std::string path;

  explicit CopySetup(Target t) {
    switch (t) {
      case Target::kMemcpy:
        heap.reset(static_cast<uint8_t*>(std::aligned_alloc(kPage, kCopyPages * kPage)));
        std::memset(heap.get(), 1, kCopyPages * kPage);
        break;
      case Target::kRegionAnon:
      case Target::kRegionFile: {
        path = TempPath("copy");
        unlink(path.c_str());
        auto r = t == Target::kRegionFile ? Region::Open(path, {}) : Region::OpenAnonymous({});
        if (!r.ok()) Die(r.status(), "open");
        region = std::move(*r);
        if (Status st = region->Grow(kCopyPages); !st.ok()) Die(st, "grow");
        std::memset(region->base(), 1, kCopyPages * kPage);
        break;
      }
      case Target::kCApiFile: {
        path = TempPath("capi");
        unlink(path.c_str());
        if (tessera_vmem_open(path.c_str(), kPage, &vm) != TESSERA_OK) {
          std::fprintf(stderr, "vmem_bench: tessera_vmem_open failed\n");
          std::exit(1);
        }
        std::vector<uint8_t> ones(kPage, 1);
        for (uint64_t i = 0; i < kCopyPages; ++i) {
          uint64_t p;
          if (tessera_vmem_allocate_page(vm, &p) != TESSERA_OK) std::exit(1);
          tessera_vmem_write(vm, p, 0, ones.data(), kPage);
          capi_pages.push_back(p);
        }
        break;
      }
    }
  }
  ~CopySetup() {
    tessera_vmem_close(vm);
    region.reset();
    if (!path.empty()) unlink(path.c_str());
  }
  uint8_t* Page(uint64_t i) const { return heap ? heap.get() + i * kPage : region->Page(i); }
};

void Copy(benchmark::State& state, Target target, bool random, bool write) {
  CopySetup s(target);
  std::vector<uint64_t> order(kCopyPages);
  std::iota(order.begin(), order.end(), 0);
  if (random) std::shuffle(order.begin(), order.end(), std::mt19937_64(42));
  alignas(64) static uint8_t buf[kPage];
  std::memset(buf, 2, sizeof buf);
  for (auto _ : state) {
    if (target == Target::kCApiFile) {
      for (uint64_t i : order) {
        uint64_t p = s.capi_pages[i];
        int rc = write ? tessera_vmem_write(s.vm, p, 0, buf, kPage)
                       : tessera_vmem_read(s.vm, p, 0, buf, kPage);
        benchmark::DoNotOptimize(rc);
      }
    } else {
      for (uint64_t i : order) {
        if (write) {
          std::memcpy(s.Page(i), buf, kPage);
        } else {
          std::memcpy(buf, s.Page(i), kPage);
        }
      }
    }
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * kCopyPages * kPage));
}

#define COPY_BENCH(name, target)                                  \
  BENCHMARK_CAPTURE(Copy, seq_read_##name, target, false, false); \
  BENCHMARK_CAPTURE(Copy, seq_write_##name, target, false, true); \
  BENCHMARK_CAPTURE(Copy, rand_read_##name, target, true, false); \
  BENCHMARK_CAPTURE(Copy, rand_write_##name, target, true, true)
COPY_BENCH(memcpy, Target::kMemcpy);
COPY_BENCH(region_anon, Target::kRegionAnon);
COPY_BENCH(region_file, Target::kRegionFile);
COPY_BENCH(capi_file, Target::kCApiFile);

// ---- allocators --------------------------------------------------------------------------------

// The seed's design: every allocate and free takes one process-wide mutex. It keeps the same
// per-page states and free list as PageAllocator so both do the same bookkeeping.
class GlobalMutexAllocator {
 public:
  explicit GlobalMutexAllocator(uint64_t max_pages) : state_(max_pages, 0) {
    free_.reserve(max_pages);
  }
  bool Allocate(uint64_t* page) {
    std::lock_guard lock(mu_);
    uint64_t p;
    if (!free_.empty()) {
      p = free_.back();
      free_.pop_back();
    } else {
      if (next_ == state_.size()) return false;
      p = next_++;
    }
    state_[p] = 1;
    *page = p;
    return true;
  }
  bool Free(uint64_t page) {
    std::lock_guard lock(mu_);
    if (page >= next_ || state_[page] != 1) return false;
    state_[page] = 2;
    free_.push_back(page);
    return true;
  }

 private:
  std::mutex mu_;
  std::vector<uint8_t> state_;
  std::vector<uint64_t> free_;
  uint64_t next_ = 0;
};

struct SharedAllocators {
  std::unique_ptr<Region> region;
  std::unique_ptr<PageAllocator> ours;
  GlobalMutexAllocator global{1 << 20};
  SharedAllocators() {
    region = std::move(Region::OpenAnonymous({}).value());
    ours = std::move(PageAllocator::Open(region.get()).value());
  }
};

SharedAllocators& Shared() {
  static SharedAllocators s;  // built once, before any benchmark thread touches it
  return s;
}

void AllocFreeOurs(benchmark::State& state) {
  PageAllocator& a = *Shared().ours;
  uint64_t pages[kAllocBatch];
  for (auto _ : state) {
    for (auto& p : pages) {
      auto r = a.Allocate();
      if (!r.ok()) Die(r.status(), "allocate");
      p = *r;
    }
    for (uint64_t p : pages) {
      if (!a.Free(p).ok()) Die(Status::Internal("free failed"), "free");
    }
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * 2 * kAllocBatch));
}

void AllocFreeGlobalMutex(benchmark::State& state) {
  GlobalMutexAllocator& a = Shared().global;
  uint64_t pages[kAllocBatch];
  for (auto _ : state) {
    for (auto& p : pages) {
      if (!a.Allocate(&p)) Die(Status::Internal("full"), "allocate");
    }
    for (uint64_t p : pages) {
      if (!a.Free(p)) Die(Status::Internal("free failed"), "free");
    }
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * 2 * kAllocBatch));
}

BENCHMARK(AllocFreeOurs)->Threads(1)->Threads(2)->UseRealTime();
BENCHMARK(AllocFreeGlobalMutex)->Threads(1)->Threads(2)->UseRealTime();

// ---- summary -----------------------------------------------------------------------------------

// Prints the usual console output and keeps each run's rate for the ratio table.
class RatioReporter : public benchmark::ConsoleReporter {
 public:
  void ReportRuns(const std::vector<Run>& runs) override {
    ConsoleReporter::ReportRuns(runs);
    for (const auto& run : runs) {
      if (run.run_type != Run::RT_Iteration) continue;
      for (const char* key : {"bytes_per_second", "items_per_second"}) {
        auto it = run.counters.find(key);
        if (it != run.counters.end()) rates_[run.benchmark_name()].push_back(it->second.value);
      }
    }
  }

  // Median over repetitions; 0 when the benchmark did not run (filtered out).
  double Rate(const std::string& name) const {
    auto it = rates_.find(name);
    if (it == rates_.end() || it->second.empty()) return 0;
    std::vector<double> v = it->second;
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
  }

 private:
  std::map<std::string, std::vector<double>> rates_;
};

void PrintSummary(const RatioReporter& rep) {
  constexpr double kGiB = 1024.0 * 1024 * 1024;
  std::printf("\n== vmem summary (ratios > 1 mean faster than the baseline)\n");
  double plain = rep.Rate("FirstTouchPlainMmap/manual_time");
  if (plain > 0) std::printf("first touch, plain mmap  %8.0f ns per page\n", 1e9 / plain);
  for (const char* kind : {"anonymous", "file"}) {
    double rate = rep.Rate(std::string("FirstTouch/") + kind + "/manual_time");
    if (rate > 0 && plain > 0) {
      std::printf("first touch, region %-9s %8.0f ns per page (%.2fx the plain mmap's time)\n",
                  kind, 1e9 / rate, plain / rate);
    }
  }
  std::printf("%-11s %10s  %-28s %-28s %-28s\n", "4 KiB copy", "memcpy", "region anon (ratio)",
              "region file (ratio)", "C ABI file (ratio)");
  for (const char* op : {"seq_read", "seq_write", "rand_read", "rand_write"}) {
    double base = rep.Rate(std::string("Copy/") + op + "_memcpy");
    if (base <= 0) continue;
    std::printf("%-11s %7.2f GiB/s", op, base / kGiB);
    for (const char* t : {"region_anon", "region_file", "capi_file"}) {
      double r = rep.Rate(std::string("Copy/") + op + "_" + t);
      std::printf("  %7.2f GiB/s (%5.2fx)        ", r / kGiB, r / base);
    }
    std::printf("\n");
  }
  for (int threads : {1, 2}) {
    std::string suffix = "/real_time/threads:" + std::to_string(threads);
    double ours = rep.Rate("AllocFreeOurs" + suffix);
    double global = rep.Rate("AllocFreeGlobalMutex" + suffix);
    if (ours <= 0 || global <= 0) continue;
    std::printf(
        "allocate+free, %d thread(s): PageAllocator %6.1f M ops/s, global mutex %6.1f M "
        "ops/s, ratio %.2fx\n",
        threads, ours / 1e6, global / 1e6, ours / global);
  }
}

}  // namespace
}  // namespace tessera::vmem

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  tessera::vmem::RatioReporter reporter;
  benchmark::RunSpecifiedBenchmarks(&reporter);
  tessera::vmem::PrintSummary(reporter);
  benchmark::Shutdown();
  return 0;
}
