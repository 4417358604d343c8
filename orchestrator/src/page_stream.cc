#include "page_stream.h"

#include <optional>

#include <thrift/TApplicationException.h>
#include <thrift/protocol/TBinaryProtocol.h>
#include <thrift/protocol/TProtocolException.h>

#include "tessera/rpc/rpc.h"

namespace tessera::orchestrator {

using apache::thrift::TApplicationException;
using apache::thrift::protocol::T_EXCEPTION;
using apache::thrift::protocol::T_REPLY;
using apache::thrift::protocol::T_STOP;
using apache::thrift::protocol::T_STRING;
using apache::thrift::protocol::T_STRUCT;
using apache::thrift::protocol::TBinaryProtocol;
using apache::thrift::protocol::TMessageType;
using apache::thrift::protocol::TProtocol;
using apache::thrift::protocol::TProtocolException;
using apache::thrift::protocol::TType;

namespace {

// Ends the field being written and the struct around it.
void EndFieldAndStruct(TProtocol* oprot) {
  oprot->writeFieldEnd();
  oprot->writeFieldStop();
  oprot->writeStructEnd();
}

void EndReply(TProtocol* oprot) {
  oprot->writeMessageEnd();
  oprot->getTransport()->writeEnd();
  oprot->getTransport()->flush();
}

}  // namespace

namespace {

// The PageRun struct of `present` and `pages` (page_size bytes each).
void WritePageRun(TProtocol* oprot, const std::string& present,
                  std::span<const uint8_t* const> pages, size_t page_size) {
  oprot->writeStructBegin("PageRun");
  oprot->writeFieldBegin("present", T_STRING, 1);
  oprot->writeBinary(present);
  oprot->writeFieldEnd();
  oprot->writeFieldBegin("pages", T_STRING, 2);
  const size_t total = pages.size() * page_size;
  auto* bin = dynamic_cast<TBinaryProtocol*>(oprot);
  if (bin != nullptr && total <= INT32_MAX) {
    // A binary string is its length, then its bytes: the pages are spliced into the frame (sent
    // from where they lie when it is flushed), or copied into it page by page.
    bin->writeI32(static_cast<int32_t>(total));
    auto* trans = bin->getTransport().get();
    for (const uint8_t* p : pages) {
      if (!rpc::SpliceIntoFrame(trans, p, page_size)) {
        trans->write(p, static_cast<uint32_t>(page_size));
      }
    }
  } else {
    oprot->writeBinary(ConcatPages(pages, page_size));
  }
  EndFieldAndStruct(oprot);
}

// A T_REPLY whose result struct holds field `id` (a struct): begun here, ended by EndResult.
void BeginResult(TProtocol* oprot, const std::string& method, int32_t seqid, const char* field,
                 int16_t id) {
  oprot->writeMessageBegin(method, T_REPLY, seqid);
  oprot->writeStructBegin("result");
  oprot->writeFieldBegin(field, T_STRUCT, id);
}

void EndResult(TProtocol* oprot) {
  EndFieldAndStruct(oprot);
  EndReply(oprot);
}

}  // namespace

void WritePageRunReply(TProtocol* oprot, const std::string& method, int32_t seqid,
                       const std::string& present, std::span<const uint8_t* const> pages,
                       size_t page_size) {
  BeginResult(oprot, method, seqid, "success", 0);
  WritePageRun(oprot, present, pages, page_size);
  EndResult(oprot);
}

void WriteParityPagesReply(TProtocol* oprot, const std::string& method, int32_t seqid,
                           const std::vector<gen::GenRecord>& records, const std::string& present,
                           std::span<const uint8_t* const> pages, size_t page_size) {
  BeginResult(oprot, method, seqid, "success", 0);
  oprot->writeStructBegin("ParityPages");
  oprot->writeFieldBegin("records", apache::thrift::protocol::T_LIST, 1);
  oprot->writeListBegin(T_STRUCT, static_cast<uint32_t>(records.size()));
  for (const auto& r : records) r.write(oprot);
  oprot->writeListEnd();
  oprot->writeFieldEnd();
  oprot->writeFieldBegin("run", T_STRUCT, 2);
  WritePageRun(oprot, present, pages, page_size);
  EndFieldAndStruct(oprot);
  EndResult(oprot);
}

void WriteErrorReply(TProtocol* oprot, const std::string& method, int32_t seqid,
                     const gen::TesseraError& e) {
  BeginResult(oprot, method, seqid, "e", 1);
  e.write(oprot);
  EndResult(oprot);
}

void WriteApplicationError(TProtocol* oprot, const std::string& method, int32_t seqid,
                           const std::string& what) {
  TApplicationException x(what);
  oprot->writeMessageBegin(method, T_EXCEPTION, seqid);
  x.write(oprot);
  EndReply(oprot);
}

namespace {

// Reads PageRun's `pages` field, lending the frame's bytes when the protocol allows.
void ReadPages(TProtocol* iprot, PageRunRef* out) {
  auto* bin = dynamic_cast<TBinaryProtocol*>(iprot);
  if (bin == nullptr) {
    iprot->readBinary(out->owned);
    out->pages = nullptr;
    out->size = out->owned.size();
    return;
  }
  int32_t len = 0;
  bin->readI32(len);
  if (len < 0) throw TProtocolException(TProtocolException::NEGATIVE_SIZE);
  if (len > rpc::kMaxStringBytes) throw TProtocolException(TProtocolException::SIZE_LIMIT);
  auto* trans = bin->getTransport().get();
  uint32_t got = static_cast<uint32_t>(len);
  const uint8_t* lent = len > 0 ? trans->borrow(nullptr, &got) : nullptr;
  if (lent != nullptr) {
    out->pages = lent;
    out->size = static_cast<size_t>(len);
    trans->consume(static_cast<uint32_t>(len));
    return;
  }
  out->owned.resize(static_cast<size_t>(len));
  if (len > 0) {
    trans->readAll(reinterpret_cast<uint8_t*>(out->owned.data()), static_cast<uint32_t>(len));
  }
  out->pages = nullptr;
  out->size = out->owned.size();
}

// Reads a struct: `field(id, type)` reads the fields it knows and returns false for the others,
// which are skipped.
template <typename Field>
void ReadStruct(TProtocol* iprot, Field&& field) {
  std::string name;
  TType type;
  int16_t id;
  iprot->readStructBegin(name);
  for (;;) {
    iprot->readFieldBegin(name, type, id);
    if (type == T_STOP) break;
    if (!field(id, type)) iprot->skip(type);
    iprot->readFieldEnd();
  }
  iprot->readStructEnd();
}

void ReadPageRun(TProtocol* iprot, PageRunRef* out) {
  ReadStruct(iprot, [&](int16_t id, TType type) {
    if (id == 1 && type == T_STRING) {
      iprot->readBinary(out->present);
    } else if (id == 2 && type == T_STRING) {
      ReadPages(iprot, out);
    } else {
      return false;
    }
    return true;
  });
}

}  // namespace

PageRunRef RecvPageRun(TProtocol* iprot, const std::string& method) {
  std::string fname;
  TMessageType mtype;
  int32_t seqid = 0;
  iprot->readMessageBegin(fname, mtype, seqid);
  auto end = [&] {
    iprot->readMessageEnd();
    iprot->getTransport()->readEnd();
  };
  if (mtype == T_EXCEPTION) {
    TApplicationException x;
    x.read(iprot);
    end();
    throw x;
  }
  if (mtype != T_REPLY || fname != method) {
    iprot->skip(T_STRUCT);
    end();
    throw TApplicationException(mtype != T_REPLY ? TApplicationException::INVALID_MESSAGE_TYPE
                                                 : TApplicationException::WRONG_METHOD_NAME,
                                "unexpected answer " + fname + " to " + method);
  }
  PageRunRef out;
  bool success = false;
  std::optional<gen::TesseraError> error;
  ReadStruct(iprot, [&](int16_t id, TType type) {
    if (id == 0 && type == T_STRUCT) {
      ReadPageRun(iprot, &out);
      success = true;
    } else if (id == 1 && type == T_STRUCT) {
      error.emplace();
      error->read(iprot);
    } else {
      return false;
    }
    return true;
  });
  end();
  if (success) return out;
  if (error) throw *error;
  throw TApplicationException(TApplicationException::MISSING_RESULT,
                              method + " failed: unknown result");
}

bool RunPages(const PageRunRef& run, size_t count, size_t page_size,
              std::vector<const uint8_t*>* out) {
  return RunPages(run.present, run.data(), run.size, count, page_size, out);
}

void ServeReadParity(TProtocol* iprot, TProtocol* oprot, const std::string& method, int32_t seqid,
                     const HolderFn& holder_for) {
  ServeCall<gen::ParityService_ReadParity_args>(
      iprot, oprot, method, seqid,
      [&](const gen::ParityService_ReadParity_args& a) {
        std::shared_ptr<ParityHolder> h = holder_for(a.token);
        ParityHolder::ParityView v = h->ReadParityView(a.first_pgno, a.count);
        v.holder = std::move(h);
        return v;
      },
      [&](const ParityHolder::ParityView& v) {
        WriteParityPagesReply(oprot, method, seqid, v.records, v.present, v.pages,
                              kProtectionPageSize);
      });
}

}  // namespace tessera::orchestrator
