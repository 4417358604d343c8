#include "tessera/rpc/rpc.h"

#include <spdlog/spdlog.h>
#include <thrift/TConfiguration.h>
#include <thrift/TOutput.h>
#include <thrift/protocol/TBinaryProtocol.h>
#include <thrift/server/TThreadedServer.h>
#include <thrift/transport/TBufferTransports.h>
#include <thrift/transport/TServerSocket.h>
#include <thrift/transport/TSocket.h>

#include <cstdlib>

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
using apache::thrift::transport::TTransportFactory;

namespace {

std::shared_ptr<TConfiguration> Config() {
  static auto cfg = std::make_shared<TConfiguration>(kMaxFrameBytes + 1024, kMaxFrameBytes, 64);
  return cfg;
}

// Framed transports that enforce our frame limit.
class FramedFactory : public TTransportFactory {
 public:
  std::shared_ptr<TTransport> getTransport(std::shared_ptr<TTransport> trans) override {
    return std::make_shared<TFramedTransport>(trans, Config());
  }
};

// The server's serve() calls listen() again; binding once up front lets Start report a busy
// port and learn the port chosen for port 0.
class ListenOnceSocket : public TServerSocket {
 public:
  using TServerSocket::TServerSocket;
  void listen() override {
    if (listening_) return;
    TServerSocket::listen();
    listening_ = true;
  }

 private:
  bool listening_ = false;
};

}  // namespace

// Thrift prints its own transport errors to stderr; ours go through Status and spdlog instead.
const bool kQuietThrift = [] {
  apache::thrift::GlobalOutput.setOutputFunction(
      [](const char* msg) { spdlog::debug("thrift: {}", msg); });
  return true;
}();

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
                                              std::shared_ptr<TProcessor> processor) {
  auto socket = std::make_shared<ListenOnceSocket>(endpoint.host, endpoint.port);
  // A connection idle this long is closed; pooled clients reconnect transparently.
  socket->setRecvTimeout(300000);
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
  auto server = std::make_shared<TThreadedServer>(processor, socket,
                                                  std::make_shared<FramedFactory>(), protocol);
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

Result<Connection> Connect(const Endpoint& endpoint, const Timeouts& timeouts) {
  auto socket = std::make_shared<TSocket>(endpoint.host, endpoint.port, Config());
  socket->setConnTimeout(static_cast<int>(timeouts.connect.count()));
  socket->setRecvTimeout(static_cast<int>(timeouts.io.count()));
  socket->setSendTimeout(static_cast<int>(timeouts.io.count()));
  socket->setNoDelay(true);
  auto transport = std::make_shared<TFramedTransport>(socket, Config());
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
