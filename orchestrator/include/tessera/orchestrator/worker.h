// A worker: data plane of a Tessera cluster.
//
// One engine per worker (DATA/data.tdb), one named tree per shard. With protection, every write
// is stored in the tail at the parity holders before it commits, generations of the engine's
// pages are protected in the background, and a worker whose data directory was lost rebuilds it
// from the others (protector.h). A worker with role "parity" stores no shards: it is a parity
// holder (parity_holder.h). The node id lives in
// DATA/node_id so a restarted worker is the same node; each start is a new incarnation. Every
// request is checked: token, shard owner, shard epoch. Registration and heartbeats keep the
// worker's view of the shard map current; a heartbeat refused because a newer incarnation took
// its place makes the worker stop (it is a zombie).
//
// Thread safety: RunWorker blocks; `stop` may be set from a signal handler's thread.
#pragma once

#include <atomic>
#include <string>

#include "tessera/common/status.h"

namespace tessera::orchestrator {

struct WorkerOptions {
  std::string listen = "127.0.0.1:8082";
  std::string manager = "127.0.0.1:8081";
  std::string data_dir = "tessera-worker";
  std::string token;
  bool sync = false;               // default durability of writes that do not ask for sync
  std::string role = "worker";     // "worker" (data) or "parity" (a parity holder)
  std::string replace;             // node id whose slot this node takes over (empty data dir)
  int min_holders = 0;             // parity holders that must store a write's tail; 0: all
  int protect_every = 20000;       // commits between protected generations
  int protect_interval_ms = 2000;  // and at most this long between them
  // How long a connection polls for its next request, and a tail append for its parity holder's
  // answer, before the thread sleeps (rpc::ServerOptions::poll).
  int poll_us = 100;
};

Status RunWorker(const WorkerOptions& options, std::atomic<bool>* stop);

}  // namespace tessera::orchestrator
