#include "tessera/rpc/rpc.h"

#include <spdlog/spdlog.h>
#include <thrift/TConfiguration.h>
#include <thrift/TOutput.h>
#include <thrift/protocol/TBinaryProtocol.h>
#include <thrift/server/TThreadedServer.h>
#include <thrift/transport/TBufferTransports.h>
#include <thrift/transport/TServerSocket.h>
#include <thrift/transport/TSocket.h>

#include <arpa/inet.h>
#include <limits.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <vector>

#include "tessera/common/poll.h"

namespace tessera::rpc {

using apache::thrift::TConfiguration;
using apache::thrift::TProcessor;
using apache::thrift::protocol::TBinaryProtocol;
using apache::thrift::protocol::TBinaryProtocolFactory;
using apache::thrift::server::TThreadedServer;
using apache::thrift::transport::TFramedTransport;
using apache::thrift::transport::TServerSocket;
using apache::thrift::transport::TSocket;
using apache::thrift::transport::TTransport;
using apache::thrift::transport::TTransportException;
using apache::thrift::transport::TTransportFactory;

namespace {

std::shared_ptr<TConfiguration> Config() {
  static auto cfg = std::make_shared<TConfiguration>(kMaxFrameBytes + 1024, kMaxFrameBytes, 64);
  return cfg;
}

// Polling (ServerOptions::poll, SpinForReply) of every connection of this process shares the
// switch that busy CPUs turn off (PollYielding).
std::atomic<int64_t> g_poll_off_until{0};
std::atomic<int> g_speculative_pollers{0};  // server connections polling now (at most one)

// A framed transport into whose frame a writer can splice buffers that are sent from where they
// lie (SpliceIntoFrame): the frame goes out with one sendmsg over its own buffer and the
// spliced pieces, in order, instead of copying each piece into the frame first.
class SplicingFramedTransport : public TFramedTransport {
 public:
  using TFramedTransport::TFramedTransport;

  void Splice(const uint8_t* data, size_t len) {
    splices_.push_back({static_cast<size_t>(wBase_ - wBuf_.get()), data, len});
    spliced_ += len;
  }

  // A frame abandoned part way (its writer threw) is not sent on close: its spliced pieces may
  // already be gone.
  void close() override {
    if (!splices_.empty()) Reset();
    filled_ = ahead_ = 0;  // bytes of the old stream must not start a new one
    TFramedTransport::close();
  }

  bool peek() override { return Buffered() || transport_->peek(); }

  // A server's connection polls this long for the next request before sleeping in the read.
  void SetPoll(std::chrono::microseconds poll) { poll_ = poll; }

  // Bytes of a reply already read from the socket and not consumed yet.
  bool Buffered() const { return rBase_ < rBound_ || ahead_ < filled_; }

  // Polls the socket (PollYielding) until it is readable or `spin` has passed; true when
  // readable. `speculative`: a wait for a request that may not come (a server's connection); at
  // most one such poller runs in the process, so that busy CPUs cost one time slice, not one per
  // connection, before the slow-yield rule below stops polling. A wait for an answer that is
  // due (SpinForReply) is not limited.
  bool PollFor(std::chrono::microseconds spin, bool speculative) {
    auto* sock = dynamic_cast<TSocket*>(transport_.get());
    if (sock == nullptr || !sock->isOpen()) return false;
    pollfd p{sock->getSocketFD(), POLLIN, 0};
    // Ready also on an error or a closed peer: the read that follows reports it.
    auto readable = [&] { return ::poll(&p, 1, 0) != 0; };
    if (readable()) return true;  // what is there already is always seen
    if (speculative && g_speculative_pollers.fetch_add(1, std::memory_order_acq_rel) != 0) {
      g_speculative_pollers.fetch_sub(1, std::memory_order_acq_rel);
      return false;
    }
    struct Leave {
      bool on;
      ~Leave() {
        if (on) g_speculative_pollers.fetch_sub(1, std::memory_order_acq_rel);
      }
    } leave{speculative};
    return PollYielding(g_poll_off_until, spin, readable);
  }

  // Bytes read with this frame, its size field included (what the processor reports).
  uint32_t readEnd() override { return static_cast<uint32_t>(ahead_); }

  void flush() override {
    if (splices_.empty()) {
      TFramedTransport::flush();
      return;
    }
    const size_t own = static_cast<size_t>(wBase_ - wBuf_.get());
    const uint64_t body = own - sizeof(int32_t) + spliced_;
    if (body > static_cast<uint64_t>(kMaxFrameBytes)) {
      Reset();
      throw TTransportException(TTransportException::BAD_ARGS,
                                "a frame of " + std::to_string(body) + " bytes is over the limit");
    }
    const uint32_t size_nbo = htonl(static_cast<uint32_t>(body));
    std::memcpy(wBuf_.get(), &size_nbo, sizeof size_nbo);
    std::vector<iovec> iov;
    iov.reserve(2 * splices_.size() + 1);
    size_t at = 0;
    for (const Piece& p : splices_) {
      if (p.at > at) iov.push_back({wBuf_.get() + at, p.at - at});
      if (p.len > 0) iov.push_back({const_cast<uint8_t*>(p.data), p.len});
      at = p.at;
    }
    if (own > at) iov.push_back({wBuf_.get() + at, own - at});
    // Reset before the write, as TFramedTransport does, so that a failed write leaves the
    // transport clean for the next frame (the bytes stay in the buffer until it is written to).
    Reset();
    auto* sock = dynamic_cast<TSocket*>(transport_.get());
    if (sock == nullptr) {
      for (const iovec& v : iov) {
        transport_->write(static_cast<const uint8_t*>(v.iov_base),
                          static_cast<uint32_t>(v.iov_len));
      }
    } else {
      SendAll(sock->getSocketFD(), iov);
    }
    transport_->flush();
  }

 private:
  struct Piece {
    size_t at;  // offset in the frame buffer the piece follows
    const uint8_t* data;
    size_t len;
  };

  void Reset() {
    splices_.clear();
    spliced_ = 0;
    wBase_ = wBuf_.get() + sizeof(int32_t);
  }

  // sendmsg until every byte is sent (a blocking socket may take part of it per call).
  static void SendAll(int fd, std::vector<iovec>& iov) {
    size_t first = 0;
    while (first < iov.size()) {
      msghdr msg{};
      msg.msg_iov = iov.data() + first;
      msg.msg_iovlen = std::min<size_t>(iov.size() - first, IOV_MAX);
      const ssize_t n = ::sendmsg(fd, &msg, MSG_NOSIGNAL);
      if (n < 0) {
        if (errno == EINTR) continue;
        const int err = errno;
        throw TTransportException(err == EAGAIN || err == EWOULDBLOCK
                                      ? TTransportException::TIMED_OUT
                                      : TTransportException::NOT_OPEN,
                                  std::string("sendmsg: ") + std::strerror(err));
      }
      auto left = static_cast<size_t>(n);
      while (first < iov.size() && left >= iov[first].iov_len) left -= iov[first++].iov_len;
      if (left > 0) {
        iov[first].iov_base = static_cast<uint8_t*>(iov[first].iov_base) + left;
        iov[first].iov_len -= left;
      }
    }
  }

  // Reads the next frame with as few recv calls as the bytes arrive in: usually one for the size
  // field and the whole frame (the base class reads the size and the body separately). Bytes that
  // arrive past the frame are kept for the next one. The frame's bytes stay where they were read
  // until the next frame is read, as with the base class, so a reader may borrow them in place.
  bool readFrame() override {
    // Borrowed reads count against the message size allowance; each frame starts afresh (the
    // spliced flush() does not reset it as the base flush() does).
    resetConsumedMessageSize();
    if (ahead_ > 0) {  // bytes past the last frame move to the front
      std::memmove(in_.get(), in_.get() + ahead_, filled_ - ahead_);
      filled_ -= ahead_;
      ahead_ = 0;
    }
    if (in_cap_ == 0) Reserve(kReadAhead);
    if (filled_ == 0 && poll_.count() > 0) PollFor(poll_, /*speculative=*/true);
    while (filled_ < sizeof(int32_t)) {
      const uint32_t got = Fill(sizeof(int32_t));
      if (got == 0) {
        if (filled_ == 0) return false;  // the peer closed between frames
        throw TTransportException(TTransportException::END_OF_FILE,
                                  "the connection closed inside a frame's size field");
      }
    }
    uint32_t size_nbo;
    std::memcpy(&size_nbo, in_.get(), sizeof size_nbo);
    const auto sz = static_cast<int32_t>(ntohl(size_nbo));
    if (sz < 0) throw TTransportException("Frame size has negative value");
    if (sz > static_cast<int32_t>(maxFrameSize_)) {
      throw TTransportException(TTransportException::CORRUPTED_DATA, "Received an oversized frame");
    }
    const size_t need = sizeof(int32_t) + static_cast<size_t>(sz);
    if (need > in_cap_) Reserve(need);
    while (filled_ < need) {
      if (Fill(need) == 0) {
        throw TTransportException(
            TTransportException::END_OF_FILE,
            "the connection closed inside a frame of " + std::to_string(sz) + " bytes");
      }
    }
    ahead_ = need;
    setReadBuffer(in_.get() + sizeof(int32_t), static_cast<uint32_t>(sz));
    return true;
  }

  // One read from the socket into the free end of the buffer, of at most kReadAhead bytes past
  // `target` (so what moves to the front for the next frame stays small); 0 at end of stream.
  uint32_t Fill(size_t target) {
    const size_t want = std::min(in_cap_ - filled_, target - filled_ + kReadAhead);
    const uint32_t got = transport_->read(in_.get() + filled_, static_cast<uint32_t>(want));
    filled_ += got;
    return got;
  }

  // Not zero-filled: a peer that announces a large frame and sends nothing commits no memory.
  void Reserve(size_t cap) {
    auto bigger = std::make_unique_for_overwrite<uint8_t[]>(cap);
    if (filled_ > 0) std::memcpy(bigger.get(), in_.get(), filled_);
    in_ = std::move(bigger);
    in_cap_ = cap;
  }

  static constexpr size_t kReadAhead = 16 << 10;

  std::chrono::microseconds poll_{0};

  std::vector<Piece> splices_;
  uint64_t spliced_ = 0;
  // Read side: in_[0, filled_) holds what was read; the current frame is [0, ahead_).
  std::unique_ptr<uint8_t[]> in_;
  size_t in_cap_ = 0;
  size_t filled_ = 0;
  size_t ahead_ = 0;
};

// Framed transports that enforce our frame limit.
class FramedFactory : public TTransportFactory {
 public:
  explicit FramedFactory(std::chrono::microseconds poll) : poll_(poll) {}
  std::shared_ptr<TTransport> getTransport(std::shared_ptr<TTransport> trans) override {
    auto t = std::make_shared<SplicingFramedTransport>(trans, Config());
    t->SetPoll(poll_);
    return t;
  }

 private:
  std::chrono::microseconds poll_;
};

// An accepted connection that a stopping server can interrupt by shutting its socket down.
// Thrift's own way (an interrupt pipe polled with the socket before every read) costs a poll
// call per read; shutting the reading side down wakes a blocked recv just the same. `mu` orders the
// shutdown with close(), so a descriptor number reused after close() is never shut down.
class AcceptedSocket : public TSocket {
 public:
  AcceptedSocket(THRIFT_SOCKET fd, std::shared_ptr<std::mutex> mu)
      : TSocket(fd, Config()), mu_(std::move(mu)) {}
  void close() override {
    std::lock_guard<std::mutex> l(*mu_);
    TSocket::close();
  }
  void Interrupt() {
    std::lock_guard<std::mutex> l(*mu_);
    // SHUT_RD wakes a blocked read (it then sees the end of the stream) and still lets a
    // handler that is running send its answer.
    if (isOpen()) ::shutdown(getSocketFD(), SHUT_RD);
  }

 private:
  std::shared_ptr<std::mutex> mu_;
};

// The server's serve() calls listen() again; binding once up front lets Start report a busy
// port and learn the port chosen for port 0. Accepted sockets read without Thrift's interrupt
// pipe (see AcceptedSocket); interruptChildren shuts their reading side down instead.
class ListenOnceSocket : public TServerSocket {
 public:
  ListenOnceSocket(const std::string& host, int port) : TServerSocket(host, port) {
    setInterruptableChildren(false);
  }
  void listen() override {
    if (listening_) return;
    TServerSocket::listen();
    listening_ = true;
  }
  void interruptChildren() override {
    std::vector<std::shared_ptr<AcceptedSocket>> live;
    {
      std::lock_guard<std::mutex> l(*mu_);
      stopping_ = true;
      for (auto& w : children_) {
        if (auto c = w.lock()) live.push_back(std::move(c));
      }
      children_.clear();
    }
    for (auto& c : live) c->Interrupt();
  }

 protected:
  std::shared_ptr<TSocket> createSocket(THRIFT_SOCKET fd) override {
    auto c = std::make_shared<AcceptedSocket>(fd, mu_);
    bool stopping;
    {
      std::lock_guard<std::mutex> l(*mu_);
      stopping = stopping_;
      if (!stopping) {
        // Forget the connections that have gone, so the list follows the live ones.
        std::erase_if(children_,
                      [](const std::weak_ptr<AcceptedSocket>& w) { return w.expired(); });
        children_.push_back(c);
      }
    }
    if (stopping) c->Interrupt();
    return c;
  }

 private:
  bool listening_ = false;
  // Guards children_ and stopping_, and orders shutdowns with close() (shared with the sockets).
  std::shared_ptr<std::mutex> mu_ = std::make_shared<std::mutex>();
  std::vector<std::weak_ptr<AcceptedSocket>> children_;
  bool stopping_ = false;
};

}  // namespace

// Thrift prints its own transport errors to stderr; ours go through Status and spdlog instead.
const bool kQuietThrift = [] {
  apache::thrift::GlobalOutput.setOutputFunction(
      [](const char* msg) { spdlog::debug("thrift: {}", msg); });
  return true;
}();

bool SpliceIntoFrame(TTransport* transport, const uint8_t* data, size_t len) {
  auto* t = dynamic_cast<SplicingFramedTransport*>(transport);
  if (t == nullptr) return false;
  t->Splice(data, len);
  return true;
}

Result<Endpoint> Endpoint::Parse(const std::string& s) {
  size_t colon = s.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == s.size()) {
    return Status::InvalidArgument("address '" + s + "' is not HOST:PORT");
  }
  Endpoint e;
  e.host = s.substr(0, colon);
  std::string port = s.substr(colon + 1);
  char* end = nullptr;
  long p = std::strtol(port.c_str(), &end, 10);
  if (*end != '\0' || p < 0 || p > 65535) {
    return Status::InvalidArgument("address '" + s + "' has a bad port '" + port + "'");
  }
  e.port = static_cast<int>(p);
  return e;
}

Result<std::unique_ptr<Server>> Server::Start(const Endpoint& endpoint,
                                              const std::shared_ptr<TProcessor>& processor,
                                              const ServerOptions& options) {
  auto socket = std::make_shared<ListenOnceSocket>(endpoint.host, endpoint.port);
  // A connection idle this long is closed; pooled clients reconnect transparently.
  socket->setRecvTimeout(300000);
  // A peer that stops reading an answer for this long loses the connection, rather than hold
  // the answering thread (and what the answer is sent from: a snapshot, a read transaction).
  socket->setSendTimeout(60000);
  try {
    socket->listen();
  } catch (const std::exception& e) {
    return Status::Unavailable("cannot listen on " + endpoint.ToString() + ": " + e.what());
  }
  std::unique_ptr<Server> s(new Server());
  s->port_ = socket->getPort();
  auto protocol = std::make_shared<TBinaryProtocolFactory>(kMaxStringBytes, kMaxContainerItems,
                                                           /*strict_read=*/true,
                                                           /*strict_write=*/true);
  auto server = std::make_shared<TThreadedServer>(
      processor, socket, std::make_shared<FramedFactory>(options.poll), protocol);
  s->server_ = server;
  s->thread_ = std::thread([server, ep = endpoint.ToString()] {
    try {
      server->serve();
    } catch (const std::exception& e) {
      spdlog::error("server on {} stopped: {}", ep, e.what());
    }
  });
  return s;
}

Server::~Server() { Stop(); }

void Server::Stop() {
  if (server_) server_->stop();
  if (thread_.joinable()) thread_.join();
  server_.reset();
}

bool SpinForReply(apache::thrift::protocol::TProtocol* protocol, std::chrono::microseconds spin) {
  auto* t = dynamic_cast<SplicingFramedTransport*>(protocol->getTransport().get());
  if (t == nullptr) return false;
  if (t->Buffered()) return true;
  return t->PollFor(spin, /*speculative=*/false);
}

Result<Connection> Connect(const Endpoint& endpoint, const Timeouts& timeouts) {
  auto socket = std::make_shared<TSocket>(endpoint.host, endpoint.port, Config());
  socket->setConnTimeout(static_cast<int>(timeouts.connect.count()));
  socket->setRecvTimeout(static_cast<int>(timeouts.io.count()));
  socket->setSendTimeout(static_cast<int>(timeouts.io.count()));
  socket->setNoDelay(true);
  auto transport = std::make_shared<SplicingFramedTransport>(socket, Config());
  try {
    transport->open();
  } catch (const std::exception& e) {
    return Status::Unavailable("cannot connect to " + endpoint.ToString() + ": " + e.what());
  }
  Connection c;
  c.transport = transport;
  c.protocol =
      std::make_shared<TBinaryProtocol>(transport, kMaxStringBytes, kMaxContainerItems, true, true);
  return c;
}

}  // namespace tessera::rpc
