// Thrift plumbing shared by the manager, the workers and the client: addresses, a threaded server
// with bounded frames and strings, and a pool of client connections with timeouts.
//
// Limits (kMaxFrameBytes, kMaxStringBytes, kMaxContainerItems) bound what a peer can make us
// allocate: a frame or string over them, or bytes that are not Thrift, end that connection with a
// log line and never affect the server or other connections.
//
// Thread safety: Server is started and stopped from one thread; ClientPool is thread-safe, and a
// Lease is used by one thread.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "tessera/common/status.h"

namespace apache::thrift {
class TProcessor;
namespace server {
class TServer;
}
namespace protocol {
class TProtocol;
}
namespace transport {
class TTransport;
}
}  // namespace apache::thrift

namespace tessera::rpc {

inline constexpr int kMaxFrameBytes = 64 << 20;     // one request or reply
inline constexpr int kMaxStringBytes = 48 << 20;    // one key, value or string field
inline constexpr int kMaxContainerItems = 1 << 20;  // items of one list
inline constexpr size_t kMaxPooledPerAddress = 64;  // idle connections kept per address

struct Endpoint {
  std::string host;
  int port = 0;
  std::string ToString() const { return host + ":" + std::to_string(port); }
  // "host:port"; the port must be 0..65535 (0: any free port, for servers).
  static Result<Endpoint> Parse(const std::string& s);
};

// How long a server's connection, having answered, polls for the next request before its thread
// sleeps in the read (0, the default here; the manager and workers use 100 us). A request that
// comes while it polls is read without waking a sleeping thread, which costs tens of
// microseconds where an idle CPU wakes slowly (a virtual machine's). The poller yields between
// polls; a thread that yielded to a busy one waits out that thread's time slice, where a
// sleeping thread would run as soon as it is woken (with two busy threads on a 2-CPU machine,
// 16 connections' mean latency went from 61 to 570 us), so once a yield takes over 200 us
// every poller of the process sleeps at once for 100 ms, and at most one connection of the
// process polls at a time, so that busy CPUs cost one time slice per pause rather than one per
// connection. It costs up to `poll` of CPU per request that does not follow soon.
struct ServerOptions {
  std::chrono::microseconds poll{0};
};

// A TThreadedServer on `endpoint` in a background thread.
class Server {
 public:
  static Result<std::unique_ptr<Server>> Start(
      const Endpoint& endpoint, const std::shared_ptr<apache::thrift::TProcessor>& processor,
      const ServerOptions& options = {});
  ~Server();  // Stop()
  void Stop();
  int port() const { return port_; }

 private:
  Server() = default;
  std::shared_ptr<apache::thrift::server::TServer> server_;
  std::thread thread_;
  int port_ = 0;
};

// A connected transport + protocol for one call sequence.
struct Connection {
  std::shared_ptr<apache::thrift::transport::TTransport> transport;
  std::shared_ptr<apache::thrift::protocol::TProtocol> protocol;
};

struct Timeouts {
  std::chrono::milliseconds connect{1000};
  std::chrono::milliseconds io{10000};
};

Result<Connection> Connect(const Endpoint& endpoint, const Timeouts& timeouts);

// Appends `len` bytes at `data` to the frame being written on `transport` (a transport of this
// module's servers or connections) without copying them: they are sent from where they lie when
// the frame is flushed, so they must stay valid and unchanged until then. false when
// `transport` is of another kind (the caller writes the bytes normally).
bool SpliceIntoFrame(apache::thrift::transport::TTransport* transport, const uint8_t* data,
                     size_t len);

// Waits up to `spin` for a reply on the connection of `protocol` (made by Connect) by polling
// its socket, yielding the CPU between polls, instead of sleeping in the read that follows (see
// ServerOptions::poll, for when that pays): for a caller whose reply is due soon. True when a
// reply (or an error or close) is ready to read; the caller reads it as usual either way.
bool SpinForReply(apache::thrift::protocol::TProtocol* protocol, std::chrono::microseconds spin);

// Idle connections per address; a failed call's connection is dropped, not returned.
template <typename ClientT>
class ClientPool {
 public:
  explicit ClientPool(Timeouts t = {}) : timeouts_(t) {}

  class Lease {
   public:
    Lease(ClientPool* pool, std::string addr, std::unique_ptr<ClientT> c)
        : pool_(pool), addr_(std::move(addr)), client_(std::move(c)) {}
    Lease(Lease&&) = default;
    ~Lease() {
      if (client_ && ok_) pool_->Return(addr_, std::move(client_));
    }
    ClientT* operator->() { return client_.get(); }
    void Broken() { ok_ = false; }  // the connection failed: do not reuse it

   private:
    ClientPool* pool_;
    std::string addr_;
    std::unique_ptr<ClientT> client_;
    bool ok_ = true;
  };

  Result<Lease> Get(const Endpoint& ep) {
    std::string addr = ep.ToString();
    {
      std::lock_guard<std::mutex> l(mu_);
      for (auto& [a, v] : idle_) {
        if (a == addr && !v.empty()) {
          auto c = std::move(v.back());
          v.pop_back();
          return Lease(this, addr, std::move(c));
        }
      }
    }
    TESSERA_ASSIGN_OR_RETURN(Connection conn, Connect(ep, timeouts_));
    return Lease(this, addr, std::make_unique<ClientT>(conn.protocol));
  }

  void Clear() {
    std::lock_guard<std::mutex> l(mu_);
    idle_.clear();
  }

 private:
  void Return(const std::string& addr, std::unique_ptr<ClientT> c) {
    std::lock_guard<std::mutex> l(mu_);
    for (auto& [a, v] : idle_) {
      if (a == addr) {
        if (v.size() < kMaxPooledPerAddress) v.push_back(std::move(c));
        return;
      }
    }
    idle_.emplace_back(addr, std::vector<std::unique_ptr<ClientT>>());
    idle_.back().second.push_back(std::move(c));
  }

  Timeouts timeouts_;
  std::mutex mu_;
  std::vector<std::pair<std::string, std::vector<std::unique_ptr<ClientT>>>> idle_;
};

}  // namespace tessera::rpc
