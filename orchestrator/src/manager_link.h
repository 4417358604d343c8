// ManagerLink: calls "the manager" when there may be several (Raft replicas, of which only the
// leader answers). It remembers the last leader, follows NOT_LEADER replies to the leader they
// name, and moves on to the next address when one cannot be reached, until a time budget runs
// out. Internal to orchestrator/.
//
// Thread safety: Call may run on many threads at once; the remembered leader is an atomic hint.
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "convert.h"
#include "tessera/rpc/rpc.h"

namespace tessera::orchestrator {

class ManagerLink {
 public:
  // `list`: "HOST:PORT" or "HOST:PORT,HOST:PORT,..." (any managers of the cluster).
  static Result<std::vector<rpc::Endpoint>> ParseList(const std::string& list) {
    std::vector<rpc::Endpoint> out;
    size_t pos = 0;
    for (;;) {
      size_t comma = list.find(',', pos);
      std::string a =
          list.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
      auto ep = rpc::Endpoint::Parse(a);
      if (!ep.ok()) return ep.status().WithContext("--manager '" + list + "'");
      out.push_back(*ep);
      if (comma == std::string::npos) break;
      pos = comma + 1;
    }
    return out;
  }

  ManagerLink(std::vector<rpc::Endpoint> managers, rpc::Timeouts timeouts)
      : managers_(std::move(managers)), pool_(timeouts) {}

  std::string Describe() const {
    std::string s;
    for (const auto& ep : managers_) s += (s.empty() ? "" : ",") + ep.ToString();
    return s;
  }
  std::string Current() const { return managers_[cur_.load() % managers_.size()].ToString(); }

  // Runs f(client) on the leader. Returns Ok when f returned; Unavailable naming the managers
  // when none answered as leader within `budget`. A TesseraError other than NOT_LEADER from f
  // propagates to the caller.
  template <typename F>
  Status Call(F&& f, std::chrono::milliseconds budget) {
    const auto deadline = std::chrono::steady_clock::now() + budget;
    auto backoff = std::chrono::milliseconds(20);
    std::string last;
    size_t misses = 0;  // consecutive addresses that failed without naming a leader
    for (;;) {
      size_t i = cur_.load() % managers_.size();
      const rpc::Endpoint& ep = managers_[i];
      auto lease = pool_.Get(ep);
      bool hinted = false;
      if (!lease.ok()) {
        last = "manager " + ep.ToString() + ": " + lease.status().message();
      } else {
        try {
          f(*lease);
          return Status::Ok();
        } catch (const gen::TesseraError& e) {
          if (e.code != gen::ErrorCode::NOT_LEADER) throw;
          last = e.message;
          if (!e.leader.empty()) {
            for (size_t j = 0; j < managers_.size(); ++j) {
              if (managers_[j].ToString() == e.leader && j != i) {
                cur_.store(j);
                hinted = true;
              }
            }
          }
        } catch (const std::exception& e) {
          lease->Broken();
          last = "manager " + ep.ToString() + ": " + e.what();
        }
      }
      if (!hinted) {
        cur_.compare_exchange_strong(i, (i + 1) % managers_.size());
        ++misses;
      }
      if (std::chrono::steady_clock::now() >= deadline) {
        return Status::Unavailable(
            (managers_.size() > 1 ? "no leader among managers " + Describe() + ": " : "") + last);
      }
      if (!hinted && misses % managers_.size() == 0) {
        // Every address tried: an election is under way or the managers are down.
        std::this_thread::sleep_for(
            std::min(backoff, std::chrono::duration_cast<std::chrono::milliseconds>(
                                  deadline - std::chrono::steady_clock::now())));
        backoff = std::min(backoff * 2, std::chrono::milliseconds(200));
      }
    }
  }

 private:
  std::vector<rpc::Endpoint> managers_;
  rpc::ClientPool<gen::ManagerServiceClient> pool_;
  std::atomic<size_t> cur_{0};
};

}  // namespace tessera::orchestrator
