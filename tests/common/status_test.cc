#include <gtest/gtest.h>

#include <cerrno>
#include <memory>
#include <string>

#include "tessera/common/errors.h"
#include "tessera/common/status.h"

namespace tessera {
namespace {

TEST(StatusTest, DefaultIsOk) {
  Status s;
  EXPECT_TRUE(s.ok());
  EXPECT_EQ(s.code(), StatusCode::kOk);
  EXPECT_EQ(s.ToString(), "ok");
  EXPECT_EQ(ToCError(s), TESSERA_OK);
}

TEST(StatusTest, EachFactoryCarriesItsCodeAndMessage) {
  struct Case {
    Status s;
    StatusCode code;
    const char* name;
    int c;
  } cases[] = {
      {Status::NotFound("a"), StatusCode::kNotFound, "not_found", TESSERA_NOTFOUND},
      {Status::Corruption("a"), StatusCode::kCorruption, "corruption", TESSERA_CORRUPTION},
      {Status::IoError("a"), StatusCode::kIoError, "io_error", TESSERA_IO_ERROR},
      {Status::InvalidArgument("a"), StatusCode::kInvalidArgument, "invalid_argument",
       TESSERA_INVALID_ARGUMENT},
      {Status::NoSpace("a"), StatusCode::kNoSpace, "no_space", TESSERA_NO_SPACE},
      {Status::Unavailable("a"), StatusCode::kUnavailable, "unavailable", TESSERA_UNAVAILABLE},
      {Status::Busy("a"), StatusCode::kBusy, "busy", TESSERA_BUSY},
      {Status::Internal("a"), StatusCode::kInternal, "internal", TESSERA_INTERNAL},
  };
  for (const auto& c : cases) {
    EXPECT_FALSE(c.s.ok());
    EXPECT_EQ(c.s.code(), c.code);
    EXPECT_EQ(c.s.message(), "a");
    EXPECT_EQ(c.s.ToString(), std::string(c.name) + ": a");
    EXPECT_EQ(ToCError(c.s), c.c);
    EXPECT_STRNE(tessera_strerror(c.c), "unknown error code");
  }
  EXPECT_TRUE(Status::NotFound("x").IsNotFound());
  EXPECT_TRUE(Status::Corruption("x").IsCorruption());
  EXPECT_TRUE(Status::NoSpace("x").IsNoSpace());
  EXPECT_FALSE(Status::NoSpace("x").IsIoError());
}

TEST(StatusTest, CCodeRefinesGeneralCode) {
  Status s = Status::InvalidArgument("page 7 is free").WithCCode(TESSERA_PAGE_ALREADY_FREE);
  EXPECT_TRUE(s.IsInvalidArgument());
  EXPECT_EQ(ToCError(s), TESSERA_PAGE_ALREADY_FREE);
  EXPECT_EQ(ToCError(s.WithContext("free")), TESSERA_PAGE_ALREADY_FREE);
}

TEST(StatusTest, WithContextPrefixesMessage) {
  Status s = Status::IoError("disk gone").WithContext("opening /x");
  EXPECT_EQ(s.message(), "opening /x: disk gone");
  EXPECT_TRUE(Status::Ok().WithContext("anything").ok());
}

TEST(StatusTest, StrerrorCoversEveryCodeAndRejectsUnknown) {
  for (int c = TESSERA_TXN_FINISHED; c <= TESSERA_OK; ++c) {
    EXPECT_STRNE(tessera_strerror(c), "unknown error code") << c;
  }
  EXPECT_STREQ(tessera_strerror(-9999), "unknown error code");
  EXPECT_STREQ(tessera_strerror(5), "unknown error code");
}

TEST(ErrnoStatusTest, MapsErrnoOnce) {
  EXPECT_TRUE(ErrnoStatus(ENOSPC, "w").IsNoSpace());
  EXPECT_TRUE(ErrnoStatus(EDQUOT, "w").IsNoSpace());
  EXPECT_TRUE(ErrnoStatus(EFBIG, "w").IsNoSpace());
  EXPECT_TRUE(ErrnoStatus(ENOENT, "w").IsNotFound());
  EXPECT_TRUE(ErrnoStatus(EINVAL, "w").IsInvalidArgument());
  EXPECT_TRUE(ErrnoStatus(EAGAIN, "w").IsBusy());
  EXPECT_TRUE(ErrnoStatus(EBUSY, "w").IsBusy());
  EXPECT_TRUE(ErrnoStatus(EIO, "w").IsIoError());
  Status s = ErrnoStatus(ENOSPC, "fallocate /data/db");
  EXPECT_EQ(s.message().rfind("fallocate /data/db: ", 0), 0u) << s.message();
  EXPECT_NE(s.message().find("No space"), std::string::npos) << s.message();
}

Result<int> Half(int x) {
  if (x % 2 != 0) return Status::InvalidArgument("odd: " + std::to_string(x));
  return x / 2;
}

Result<int> Quarter(int x) {
  TESSERA_ASSIGN_OR_RETURN(int h, Half(x));
  TESSERA_ASSIGN_OR_RETURN(int q, Half(h));
  return q;
}

Status CheckEven(int x) {
  TESSERA_RETURN_IF_ERROR(Half(x).status());
  return Status::Ok();
}

TEST(ResultTest, HoldsValueOrError) {
  Result<int> ok = Half(8);
  ASSERT_TRUE(ok.ok());
  EXPECT_EQ(*ok, 4);
  EXPECT_TRUE(ok.status().ok());
  Result<int> bad = Half(3);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().message(), "odd: 3");
}

TEST(ResultTest, MacrosPropagate) {
  EXPECT_EQ(*Quarter(8), 2);
  EXPECT_EQ(Quarter(6).status().message(), "odd: 3");
  EXPECT_EQ(Quarter(5).status().message(), "odd: 5");
  EXPECT_TRUE(CheckEven(4).ok());
  EXPECT_TRUE(CheckEven(5).IsInvalidArgument());
}

TEST(ResultTest, MoveOnlyValues) {
  Result<std::unique_ptr<int>> r(std::make_unique<int>(7));
  ASSERT_TRUE(r.ok());
  std::unique_ptr<int> p = std::move(r).value();
  EXPECT_EQ(*p, 7);
}

TEST(ResultDeathTest, ValueOfErrorAborts) {
  Result<int> bad = Half(3);
  EXPECT_DEATH((void)bad.value(), "Result::value\\(\\) on error: invalid_argument: odd: 3");
}

TEST(ResultDeathTest, BuildingFromOkStatusAborts) {
  EXPECT_DEATH(Result<int>{Status::Ok()}, "Result built from an ok Status");
}

}  // namespace
}  // namespace tessera
