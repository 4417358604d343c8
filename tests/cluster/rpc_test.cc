// The rpc module's framed transport and server over a real Thrift server on loopback: frames
// that arrive together, split into single bytes, large, or cut short are each read as the peer
// sent them, and stopping a server ends its idle connections at once. Every test runs against a
// server whose connections sleep between requests and one whose connections poll for them.
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <thrift/protocol/TBinaryProtocol.h>
#include <thrift/transport/TBufferTransports.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "WorkerService.h"
#include "seed.h"
#include "tessera/rpc/rpc.h"

namespace tessera::rpc {
using tessera::testing::TestSeed;
namespace {

using apache::thrift::protocol::TBinaryProtocol;
using apache::thrift::transport::TFramedTransport;
using apache::thrift::transport::TMemoryBuffer;

// Get answers the key reversed, so an answer names the request it belongs to.
class ReverseHandler : public gen::WorkerServiceNull {
 public:
  void Get(gen::GetReply& r, const std::string&, int32_t, int64_t,
           const std::string& key) override {
    if (key == "slow") std::this_thread::sleep_for(std::chrono::milliseconds(500));
    r.found = true;
    r.value.assign(key.rbegin(), key.rend());
  }
};

// The parameter: how long the server's connections poll for the next request (microseconds).
class RpcTest : public ::testing::TestWithParam<int> {
 protected:
  std::unique_ptr<Server> StartServer();
};

std::unique_ptr<Server> RpcTest::StartServer() {
  auto s = Server::Start(
      Endpoint{"127.0.0.1", 0},
      std::make_shared<gen::WorkerServiceProcessor>(std::make_shared<ReverseHandler>()),
      ServerOptions{std::chrono::microseconds(GetParam())});
  EXPECT_TRUE(s.ok()) << s.status().ToString();
  return std::move(s).value();
}

// The bytes a generated client sends for Get(key): one frame, size field included.
std::string GetFrame(const std::string& key, int32_t seqid) {
  auto mem = std::make_shared<TMemoryBuffer>();
  auto framed = std::make_shared<TFramedTransport>(mem);
  auto proto = std::make_shared<TBinaryProtocol>(framed);
  proto->writeMessageBegin("Get", apache::thrift::protocol::T_CALL, seqid);
  gen::WorkerService_Get_pargs args;
  std::string token = "t";
  int32_t shard = 0;
  int64_t epoch = 0;
  args.token = &token;
  args.shard = &shard;
  args.epoch = &epoch;
  args.key = &key;
  args.write(proto.get());
  proto->writeMessageEnd();
  framed->writeEnd();
  framed->flush();
  return mem->getBufferAsString();
}

int RawConnect(int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  EXPECT_GE(fd, 0);
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  // An answer that never comes fails the test instead of hanging it.
  timeval tv{5, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  EXPECT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0) << std::strerror(errno);
  return fd;
}

void SendAll(int fd, const std::string& bytes) {
  size_t at = 0;
  while (at < bytes.size()) {
    ssize_t n = ::send(fd, bytes.data() + at, bytes.size() - at, MSG_NOSIGNAL);
    ASSERT_GT(n, 0) << std::strerror(errno);
    at += static_cast<size_t>(n);
  }
}

// Reads one framed answer to Get from `fd` and returns its value (checks the seqid).
std::string ReadGetAnswer(int fd, int32_t seqid) {
  uint32_t size_nbo = 0;
  EXPECT_EQ(::recv(fd, &size_nbo, 4, MSG_WAITALL), 4);
  std::string body(ntohl(size_nbo), '\0');
  EXPECT_EQ(::recv(fd, body.data(), body.size(), MSG_WAITALL), static_cast<ssize_t>(body.size()));
  auto mem = std::make_shared<TMemoryBuffer>(reinterpret_cast<uint8_t*>(body.data()),
                                             static_cast<uint32_t>(body.size()));
  TBinaryProtocol proto(mem);
  std::string name;
  apache::thrift::protocol::TMessageType type;
  int32_t got_seqid = -1;
  proto.readMessageBegin(name, type, got_seqid);
  EXPECT_EQ(name, "Get");
  EXPECT_EQ(type, apache::thrift::protocol::T_REPLY);
  EXPECT_EQ(got_seqid, seqid);
  gen::GetReply reply;
  gen::WorkerService_Get_presult result;
  result.success = &reply;
  result.read(&proto);
  proto.readMessageEnd();
  EXPECT_TRUE(result.__isset.success);
  return reply.value;
}

std::string Reversed(std::string s) { return {s.rbegin(), s.rend()}; }

TEST_P(RpcTest, FramesSentTogetherOrByteByByteAreEachAnswered) {
  const uint64_t seed = TestSeed("FramesSentTogetherOrByteByByteAreEachAnswered");
  std::mt19937_64 rng(seed);
  auto server = StartServer();
  // Three requests in one send: the server reads past the first frame and must keep the rest.
  int fd = RawConnect(server->port());
  std::vector<std::string> keys;
  std::string together;
  for (int i = 0; i < 3; ++i) {
    keys.push_back("key-" + std::to_string(rng()));
    together += GetFrame(keys.back(), i + 1);
  }
  SendAll(fd, together);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(ReadGetAnswer(fd, i + 1), Reversed(keys[i]));
  // The same requests a byte at a time, with pauses so that each byte arrives on its own.
  for (int i = 0; i < 2; ++i) {
    std::string f = GetFrame(keys[i], 10 + i);
    for (char c : f) {
      SendAll(fd, std::string(1, c));
      if (rng() % 8 == 0) std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
    EXPECT_EQ(ReadGetAnswer(fd, 10 + i), Reversed(keys[i]));
  }
  // A large frame (several MiB, over any read-ahead) followed by a small one in the same send.
  std::string big(3u << 20, '\0');
  for (auto& c : big) c = static_cast<char>('a' + rng() % 26);
  SendAll(fd, GetFrame(big, 20) + GetFrame(keys[2], 21));
  EXPECT_EQ(ReadGetAnswer(fd, 20), Reversed(big));
  EXPECT_EQ(ReadGetAnswer(fd, 21), Reversed(keys[2]));
  // A small frame then a large one in one send (the buffer grows with the large one's start in
  // it), and a send that ends inside the next frame's size field.
  SendAll(fd, GetFrame(keys[0], 22) + GetFrame(big, 23));
  EXPECT_EQ(ReadGetAnswer(fd, 22), Reversed(keys[0]));
  EXPECT_EQ(ReadGetAnswer(fd, 23), Reversed(big));
  std::string two = GetFrame(keys[1], 24) + GetFrame(keys[2], 25);
  const size_t split = GetFrame(keys[1], 24).size() + 2;
  SendAll(fd, two.substr(0, split));
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  SendAll(fd, two.substr(split));
  EXPECT_EQ(ReadGetAnswer(fd, 24), Reversed(keys[1]));
  EXPECT_EQ(ReadGetAnswer(fd, 25), Reversed(keys[2]));
  // Frames around the server's 16 KiB read-ahead, all in one send: each pair's first frame is
  // sized so that the pair ends just before, at, or just after 16 KiB.
  const size_t empty_frame = GetFrame("", 0).size();
  for (size_t total : {size_t{16383}, size_t{16384}, size_t{16385}, size_t{16388}}) {
    std::string second = GetFrame(keys[0], 31);
    std::string first = GetFrame(std::string(total - second.size() - empty_frame, 'k'), 30);
    ASSERT_EQ(first.size() + second.size(), total);
    SendAll(fd, first + second);
    EXPECT_EQ(ReadGetAnswer(fd, 30).size(), total - second.size() - empty_frame) << total;
    EXPECT_EQ(ReadGetAnswer(fd, 31), Reversed(keys[0])) << total;
  }
  ::close(fd);
}

TEST_P(RpcTest, AFrameCutShortEndsOnlyItsConnection) {
  auto server = StartServer();
  for (size_t cut : {size_t{2}, size_t{4}, size_t{30}}) {
    int fd = RawConnect(server->port());
    std::string f = GetFrame("some key", 1);
    SendAll(fd, f.substr(0, cut));
    ::shutdown(fd, SHUT_WR);
    char b;
    EXPECT_EQ(::recv(fd, &b, 1, 0), 0) << "cut at " << cut << ": the server should close";
    ::close(fd);
  }
  auto conn = Connect(Endpoint{"127.0.0.1", server->port()}, Timeouts{});
  ASSERT_TRUE(conn.ok()) << conn.status().ToString();
  gen::WorkerServiceClient client(conn->protocol);
  gen::GetReply r;
  client.Get(r, "t", 0, 0, "after");
  EXPECT_EQ(r.value, "retfa");
}

TEST_P(RpcTest, BadSizeFieldsEndOnlyTheirConnection) {
  auto server = StartServer();
  // A zero size, a negative one, and one over the 64 MiB frame limit (announced, never sent).
  for (uint32_t size : {0u, 0x80000000u, (64u << 20) + 1}) {
    int fd = RawConnect(server->port());
    uint32_t nbo = htonl(size);
    SendAll(fd, std::string(reinterpret_cast<const char*>(&nbo), 4) + "xxxx");
    char b;
    EXPECT_EQ(::recv(fd, &b, 1, 0), 0) << "size " << size << ": the server should close";
    ::close(fd);
  }
  int fd = RawConnect(server->port());
  SendAll(fd, GetFrame("still here", 7));
  EXPECT_EQ(ReadGetAnswer(fd, 7), "ereh llits");
  ::close(fd);
}

TEST_P(RpcTest, StopLetsARunningCallAnswer) {
  auto server = StartServer();
  auto conn = Connect(Endpoint{"127.0.0.1", server->port()}, Timeouts{});
  ASSERT_TRUE(conn.ok()) << conn.status().ToString();
  std::string answer;
  std::thread call([&] {
    gen::WorkerServiceClient client(conn->protocol);
    gen::GetReply r;
    try {
      client.Get(r, "t", 0, 0, "slow");  // the handler takes 500 ms
      answer = r.value;
    } catch (const std::exception& e) {
      answer = std::string("error: ") + e.what();
    }
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  server->Stop();  // waits for the running handler, whose answer must still reach the caller
  call.join();
  EXPECT_EQ(answer, "wols");
}

TEST_P(RpcTest, StopEndsIdleConnectionsAtOnce) {
  auto server = StartServer();
  ClientPool<gen::WorkerServiceClient> pool;
  Endpoint ep{"127.0.0.1", server->port()};
  {
    // Two connections, each answered once and then left open and idle (pooled).
    auto a = pool.Get(ep);
    auto b = pool.Get(ep);
    ASSERT_TRUE(a.ok() && b.ok());
    gen::GetReply r;
    (*a)->Get(r, "t", 0, 0, "ab");
    EXPECT_EQ(r.value, "ba");
    (*b)->Get(r, "t", 0, 0, "cd");
    EXPECT_EQ(r.value, "dc");
  }
  // The server's threads block reading those connections (idle timeout: minutes); Stop must
  // end them rather than wait.
  auto t0 = std::chrono::steady_clock::now();
  server->Stop();
  auto took = std::chrono::steady_clock::now() - t0;
  EXPECT_LT(took, std::chrono::seconds(5));
  auto lease = pool.Get(ep);
  if (lease.ok()) {  // a pooled connection: the call on it must fail, not hang
    gen::GetReply r;
    EXPECT_ANY_THROW((*lease)->Get(r, "t", 0, 0, "x"));
  }
}

// SpinForReply in short polls until it reports an answer: false after 10 s without one.
bool PollUntilReply(apache::thrift::protocol::TProtocol* p) {
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (std::chrono::steady_clock::now() < until) {
    if (SpinForReply(p, std::chrono::milliseconds(1))) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return false;
}

// A client waiting awake for an answer: SpinForReply reports an answer that is there, never
// reports one that is not (and then ends within its budget, or sooner when yields show busy
// CPUs), and a request that comes long after the server's connection stopped polling is
// answered all the same.
TEST_P(RpcTest, SpinForReplyReportsAnAnswerThatIsThereOnly) {
  auto server = StartServer();
  auto conn = Connect(Endpoint{"127.0.0.1", server->port()}, Timeouts{});
  ASSERT_TRUE(conn.ok()) << conn.status().ToString();
  gen::WorkerServiceClient client(conn->protocol);
  for (int i = 0; i < 3; ++i) {
    const std::string key = "spin-" + std::to_string(i);
    // The answer arrives while the caller polls (or, on busy CPUs, after it gave up).
    client.send_Get("t", 0, 0, key);
    (void)SpinForReply(conn->protocol.get(), std::chrono::milliseconds(50));
    gen::GetReply r;
    client.recv_Get(r);
    EXPECT_EQ(r.value, Reversed(key));
    // Polled until the answer is there: reported.
    client.send_Get("t", 0, 0, key + "-later");
    EXPECT_TRUE(PollUntilReply(conn->protocol.get()));
    client.recv_Get(r);
    EXPECT_EQ(r.value, Reversed(key + "-later"));
    // Nothing asked: nothing is reported, and the wait ends.
    auto t0 = std::chrono::steady_clock::now();
    EXPECT_FALSE(SpinForReply(conn->protocol.get(), std::chrono::milliseconds(3)));
    EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(1));
    // Past any poll of the server's connection: its thread sleeps, and must still answer.
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  // A connection the server closed: ready (the read reports the end).
  server->Stop();
  client.send_Get("t", 0, 0, "closed");
  EXPECT_TRUE(PollUntilReply(conn->protocol.get()));
  gen::GetReply r;
  EXPECT_ANY_THROW(client.recv_Get(r));
}

INSTANTIATE_TEST_SUITE_P(SleepOrPoll, RpcTest, ::testing::Values(0, 200),
                         [](const ::testing::TestParamInfo<int>& p) {
                           return p.param == 0 ? std::string("Sleeping")
                                               : "Polling" + std::to_string(p.param) + "us";
                         });

}  // namespace
}  // namespace tessera::rpc
