// Page runs (gen::PageRun) answered and received without extra copies of their pages.
// Internal to orchestrator/.
//
// A rebuild moves every page of a worker's image through Thrift. The generated code copies each
// page twice more than the sockets need: the answering survivor first gathers its pages into
// PageRun::pages and the protocol then copies that string into the frame; the rebuilder copies
// the string back out of the frame it received. Here the survivor writes each page from where it
// lies (its pinned snapshot) straight into the frame, and the rebuilder reads the pages in place
// in the frame it received.
//
// The bytes on the wire are exactly the generated code's (a T_REPLY whose result struct holds
// the PageRun in field 0 or a TesseraError in field 1), so either end works with generated code
// at the other. Only TBinaryProtocol (what rpc:: speaks) takes the copy-free path; with another
// protocol these functions go through a string as the generated code does.
//
// Thread safety: none of their own; a connection is used by one thread at a time.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "ParityService.h"
#include "convert.h"
#include "parity_holder.h"

namespace apache::thrift::protocol {
class TProtocol;
}

namespace tessera::orchestrator {

// A received PageRun's pages where they lie: in the connection's frame buffer (valid until the
// next call on that connection), or in `owned` when the protocol cannot lend its buffer.
struct PageRunRef {
  std::string present;             // one byte per page: nonzero when the page is in data()
  const uint8_t* pages = nullptr;  // in the frame; null when the pages are in `owned`
  size_t size = 0;                 // bytes at data(): the present pages back to back
  std::string owned;
  // Where the pages are (computed on use: `owned` may have moved since it was read).
  const uint8_t* data() const {
    return pages != nullptr ? pages : reinterpret_cast<const uint8_t*>(owned.data());
  }
};

// Writes the reply to call `seqid` of `method` whose success is the PageRun of `present` and the
// pages at `pages` (page_size bytes each, one per nonzero byte of `present`, in order), then
// flushes the frame.
void WritePageRunReply(apache::thrift::protocol::TProtocol* oprot, const std::string& method,
                       int32_t seqid, const std::string& present,
                       std::span<const uint8_t* const> pages, size_t page_size);

// The same for a ParityPages answer (ReadParity): `records`, then the PageRun.
void WriteParityPagesReply(apache::thrift::protocol::TProtocol* oprot, const std::string& method,
                           int32_t seqid, const std::vector<gen::GenRecord>& records,
                           const std::string& present, std::span<const uint8_t* const> pages,
                           size_t page_size);

// Writes the reply to call `seqid` of `method` that carries the error `e` (field 1).
void WriteErrorReply(apache::thrift::protocol::TProtocol* oprot, const std::string& method,
                     int32_t seqid, const gen::TesseraError& e);

// Writes the reply to call `seqid` of `method` that reports an unexpected failure (a
// TApplicationException, as the generated processor answers a handler's std::exception).
void WriteApplicationError(apache::thrift::protocol::TProtocol* oprot, const std::string& method,
                           int32_t seqid, const std::string& what);

// Serves one call the way the generated processor does, with the answer written by `write`:
// reads the arguments (ArgsT, the generated <Service>_<method>_args), runs `answer(args)`, and
// answers a TesseraError or another exception from it as the generated code would.
template <typename ArgsT, typename Answer, typename Write>
void ServeCall(apache::thrift::protocol::TProtocol* iprot,
               apache::thrift::protocol::TProtocol* oprot, const std::string& method, int32_t seqid,
               Answer&& answer, Write&& write) {
  ArgsT args;
  args.read(iprot);
  iprot->readMessageEnd();
  iprot->getTransport()->readEnd();
  decltype(answer(args)) result;
  try {
    result = answer(args);
  } catch (const gen::TesseraError& e) {
    WriteErrorReply(oprot, method, seqid, e);
    return;
  } catch (const std::exception& e) {
    WriteApplicationError(oprot, method, seqid, e.what());
    return;
  }
  write(result);
}

// Serves a ParityService ReadParity call from the holder `holder_for(token)` returns (it checks
// the token and throws as a handler would), with the pages from where they lie in its map; the
// answer keeps that holder alive until it is sent.
using HolderFn = std::function<std::shared_ptr<ParityHolder>(const std::string& token)>;
void ServeReadParity(apache::thrift::protocol::TProtocol* iprot,
                     apache::thrift::protocol::TProtocol* oprot, const std::string& method,
                     int32_t seqid, const HolderFn& holder_for);

// Reads the reply to `method` from `iprot` (after the generated send_<method>). Throws as the
// generated recv_<method> does: the TesseraError the server answered, TApplicationException, or
// a transport or protocol exception.
PageRunRef RecvPageRun(apache::thrift::protocol::TProtocol* iprot, const std::string& method);

// The pages of `run` by index: entry i points at page i, or is null for an absent (all-zero)
// page. false when the run is malformed (its sizes disagree with `count` and `page_size`).
bool RunPages(const PageRunRef& run, size_t count, size_t page_size,
              std::vector<const uint8_t*>* out);

}  // namespace tessera::orchestrator
