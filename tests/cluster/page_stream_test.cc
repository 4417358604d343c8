// Page runs answered and received without extra copies (orchestrator/src/page_stream.h), over a
// real Thrift server on loopback: the bytes must be exactly the generated code's, both ways, for
// answers small and large (more pages than one sendmsg takes), errors included.
#include <gtest/gtest.h>
#include <thrift/transport/TBufferTransports.h>

#include <cstring>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "WorkerService.h"
#include "page_stream.h"
#include "parity_holder.h"
#include "seed.h"
#include "subprocess.h"
#include "tessera/rpc/rpc.h"

namespace tessera::orchestrator {
namespace {

constexpr size_t kPs = kProtectionPageSize;

// Page p's bytes: all zero when p % 3 == 0 (absent from the run), otherwise a pattern of p and
// the test's seed.
struct Pages {
  explicit Pages(uint64_t seed, size_t n) : bytes(n * kPs) {
    std::mt19937_64 rng(seed);
    for (size_t p = 0; p < n; ++p) {
      if (p % 3 == 0) continue;
      for (size_t i = 0; i < kPs; ++i) bytes[p * kPs + i] = static_cast<uint8_t>(rng());
    }
  }
  const uint8_t* at(size_t p) const { return bytes.data() + p * kPs; }
  // What the answer for [first, first + count) holds.
  void View(size_t first, size_t count, std::string* present,
            std::vector<const uint8_t*>* pages) const {
    present->assign(count, '\0');
    pages->clear();
    for (size_t i = 0; i < count; ++i) {
      if ((first + i) % 3 == 0) continue;
      (*present)[i] = 1;
      pages->push_back(at(first + i));
    }
  }
  std::vector<uint8_t> bytes;
};

constexpr size_t kTotal = 5000;  // pages; one answer may ask for up to 4096

gen::TesseraError Error(const std::string& message) {
  gen::TesseraError e;
  e.code = gen::ErrorCode::UNAVAILABLE;
  e.message = message;
  return e;
}

// Answers ReadImage and ReadParity with page_stream's writers. gen -1 answers a TesseraError,
// gen -2 throws a std::exception; ReadParity's first_pgno -1 answers a TesseraError.
class SplicingProcessor : public gen::WorkerServiceProcessor {
 public:
  explicit SplicingProcessor(const Pages* pages)
      : WorkerServiceProcessor(std::make_shared<gen::WorkerServiceNull>()), pages_(pages) {}

 protected:
  struct View {
    std::string present;
    std::vector<const uint8_t*> pages;
    std::vector<gen::GenRecord> records;
  };

  bool dispatchCall(apache::thrift::protocol::TProtocol* iprot,
                    apache::thrift::protocol::TProtocol* oprot, const std::string& fname,
                    int32_t seqid, void* ctx) override {
    if (fname == "ReadImage") {
      ServeCall<gen::WorkerService_ReadImage_args>(
          iprot, oprot, fname, seqid,
          [&](const auto& a) {
            if (a.gen == -1) throw Error("no generation -1 here");
            if (a.gen == -2) throw std::runtime_error("handler broke");
            View v;
            pages_->View(static_cast<size_t>(a.first_pgno), static_cast<size_t>(a.count),
                         &v.present, &v.pages);
            return v;
          },
          [&](const View& v) { WritePageRunReply(oprot, fname, seqid, v.present, v.pages, kPs); });
      return true;
    }
    if (fname == "ReadParity") {
      ServeCall<gen::ParityService_ReadParity_args>(
          iprot, oprot, fname, seqid,
          [&](const auto& a) {
            if (a.first_pgno == -1) throw Error("no parity there");
            View v;
            pages_->View(static_cast<size_t>(a.first_pgno), static_cast<size_t>(a.count),
                         &v.present, &v.pages);
            for (int i = 0; i < 3; ++i) {
              gen::GenRecord r;
              r.gen = 100 + i;
              r.descriptor = std::string(40, static_cast<char>('a' + i));
              r.last_page = static_cast<int64_t>(kTotal);
              v.records.push_back(r);
            }
            return v;
          },
          [&](const View& v) {
            WriteParityPagesReply(oprot, fname, seqid, v.records, v.present, v.pages, kPs);
          });
      return true;
    }
    return WorkerServiceProcessor::dispatchCall(iprot, oprot, fname, seqid, ctx);
  }

 private:
  const Pages* pages_;
};

// The generated way of answering ReadImage: gathers the pages into the PageRun.
class GatheringHandler : public gen::WorkerServiceNull {
 public:
  explicit GatheringHandler(const Pages* pages) : pages_(pages) {}
  void ReadImage(gen::PageRun& r, const std::string&, int64_t gen, int64_t first,
                 int32_t count) override {
    if (gen == -1) throw Error("no generation -1 here");
    std::vector<const uint8_t*> pages;
    pages_->View(static_cast<size_t>(first), static_cast<size_t>(count), &r.present, &pages);
    for (const uint8_t* p : pages) r.pages.append(reinterpret_cast<const char*>(p), kPs);
  }

 private:
  const Pages* pages_;
};

class PageStreamTest : public ::testing::Test {
 protected:
  void SetUp() override {
    seed_ = tessera::testing::TestSeed("PageStreamTest");
    pages_ = std::make_unique<Pages>(seed_, kTotal);
  }

  std::unique_ptr<rpc::Server> Serve(const std::shared_ptr<apache::thrift::TProcessor>& p) {
    rpc::Endpoint ep{"127.0.0.1", tessera::testing::FreePort()};
    auto s = rpc::Server::Start(ep, p);
    EXPECT_TRUE(s.ok()) << s.status().ToString();
    port_ = (*s)->port();
    return std::move(s).value();
  }

  std::unique_ptr<gen::WorkerServiceClient> Client() {
    auto c = rpc::Connect(rpc::Endpoint{"127.0.0.1", port_}, rpc::Timeouts{});
    EXPECT_TRUE(c.ok()) << c.status().ToString();
    return std::make_unique<gen::WorkerServiceClient>(c->protocol);
  }

  // Checks a received run against pages [first, first + count).
  void ExpectRun(const std::string& present, const uint8_t* data, size_t size, size_t first,
                 size_t count) {
    std::string want_present;
    std::vector<const uint8_t*> want;
    pages_->View(first, count, &want_present, &want);
    ASSERT_EQ(present, want_present) << "seed " << seed_;
    ASSERT_EQ(size, want.size() * kPs) << "seed " << seed_;
    for (size_t i = 0; i < want.size(); ++i) {
      ASSERT_EQ(std::memcmp(data + i * kPs, want[i], kPs), 0)
          << "present page " << i << " of the run at " << first << ", seed " << seed_;
    }
  }

  uint64_t seed_ = 0;
  std::unique_ptr<Pages> pages_;
  int port_ = 0;
};

TEST_F(PageStreamTest, SplicedAnswersReadByGeneratedAndInPlaceReceivers) {
  auto server = Serve(std::make_shared<SplicingProcessor>(pages_.get()));
  auto c = Client();
  // One page, a usual batch, and the largest answer (more pieces than one sendmsg takes).
  for (auto [first, count] :
       std::vector<std::pair<size_t, size_t>>{{1, 1}, {0, 0}, {3, 256}, {900, 4096}, {7, 300}}) {
    gen::PageRun run;
    c->ReadImage(run, "", 5, static_cast<int64_t>(first), static_cast<int32_t>(count));
    ExpectRun(run.present, reinterpret_cast<const uint8_t*>(run.pages.data()), run.pages.size(),
              first, count);
    c->send_ReadImage("", 5, static_cast<int64_t>(first), static_cast<int32_t>(count));
    PageRunRef ref = RecvPageRun(c->getInputProtocol().get(), "ReadImage");
    ExpectRun(ref.present, ref.data(), ref.size, first, count);
    EXPECT_TRUE(ref.owned.empty()) << "the pages were read in place";
    std::vector<const uint8_t*> by_index;
    ASSERT_TRUE(RunPages(ref, count, kPs, &by_index));
    for (size_t i = 0; i < count; ++i) {
      if ((first + i) % 3 == 0) {
        EXPECT_EQ(by_index[i], nullptr);
      } else {
        ASSERT_NE(by_index[i], nullptr);
        EXPECT_EQ(std::memcmp(by_index[i], pages_->at(first + i), kPs), 0);
      }
    }
    EXPECT_FALSE(RunPages(ref, count + 1, kPs, &by_index)) << "a count the run does not have";
  }
  // The server's and the client's transports splice; another kind says no (and is written to).
  auto conn = rpc::Connect(rpc::Endpoint{"127.0.0.1", port_}, rpc::Timeouts{});
  ASSERT_TRUE(conn.ok());
  EXPECT_TRUE(rpc::SpliceIntoFrame(conn->transport.get(), pages_->at(1), 0));
  apache::thrift::transport::TMemoryBuffer mem;
  EXPECT_FALSE(rpc::SpliceIntoFrame(&mem, pages_->at(1), 0));
  gen::ParityPages pp;
  c->ReadParity(pp, "", 10, 2000);
  ASSERT_EQ(pp.records.size(), 3u);
  EXPECT_EQ(pp.records[2].gen, 102);
  EXPECT_EQ(pp.records[1].descriptor, std::string(40, 'b'));
  ExpectRun(pp.run.present, reinterpret_cast<const uint8_t*>(pp.run.pages.data()),
            pp.run.pages.size(), 10, 2000);
}

TEST_F(PageStreamTest, ErrorsReachBothReceiversAndTheConnectionStaysUsable) {
  auto server = Serve(std::make_shared<SplicingProcessor>(pages_.get()));
  auto c = Client();
  gen::PageRun run;
  try {
    c->ReadImage(run, "", -1, 0, 10);
    FAIL() << "no error";
  } catch (const gen::TesseraError& e) {
    EXPECT_EQ(e.message, "no generation -1 here");
  }
  c->send_ReadImage("", -1, 0, 10);
  try {
    (void)RecvPageRun(c->getInputProtocol().get(), "ReadImage");
    FAIL() << "no error";
  } catch (const gen::TesseraError& e) {
    EXPECT_EQ(e.code, gen::ErrorCode::UNAVAILABLE);
  }
  c->send_ReadImage("", -2, 0, 10);
  EXPECT_THROW((void)RecvPageRun(c->getInputProtocol().get(), "ReadImage"),
               apache::thrift::TApplicationException);
  gen::ParityPages pp;
  EXPECT_THROW(c->ReadParity(pp, "", -1, 4), gen::TesseraError);
  // An answer to another call is refused, not misread.
  c->send_Ping("");
  EXPECT_THROW((void)RecvPageRun(c->getInputProtocol().get(), "ReadImage"),
               apache::thrift::TApplicationException);
  c->send_ReadImage("", 5, 40, 64);
  PageRunRef ref = RecvPageRun(c->getInputProtocol().get(), "ReadImage");
  ExpectRun(ref.present, ref.data(), ref.size, 40, 64);
}

TEST_F(PageStreamTest, InPlaceReceiverReadsTheGeneratedServersAnswers) {
  auto server = Serve(std::make_shared<gen::WorkerServiceProcessor>(
      std::make_shared<GatheringHandler>(pages_.get())));
  auto c = Client();
  c->send_ReadImage("", 5, 100, 1000);
  PageRunRef ref = RecvPageRun(c->getInputProtocol().get(), "ReadImage");
  ExpectRun(ref.present, ref.data(), ref.size, 100, 1000);
  c->send_ReadImage("", -1, 0, 1);
  EXPECT_THROW((void)RecvPageRun(c->getInputProtocol().get(), "ReadImage"), gen::TesseraError);
}

}  // namespace
}  // namespace tessera::orchestrator
