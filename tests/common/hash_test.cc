// OpenSSL-backed digests: SHA-256 against the FIPS 180-2 / NIST example vectors
// and MD5 against the RFC 1321 test suite, one-shot and fed in pieces across
// block boundaries.
#include "common/hash.h"

#include <algorithm>
#include <fstream>
#include <string>
#include <utility>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "tests/support/subprocess.h"

namespace transferd::common {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

std::string Sha256Hex(const std::string& message) {
  Sha256 sha;
  sha.Update(message);
  return sha.HexDigest();
}

std::string Md5Hex(const std::string& message) {
  Md5 md5;
  md5.Update(message);
  return md5.HexDigest();
}

TEST(Sha256Test, NistVectors) {
  EXPECT_EQ(Sha256Hex(""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(Sha256Hex("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(
      Sha256Hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
      "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  EXPECT_EQ(Sha256Hex(std::string(1000000, 'a')),
            "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

TEST(Sha256Test, MillionAFedInUnevenPieces) {
  Sha256 sha;
  const std::string chunk(997, 'a');  // prime: never aligned with 64
  size_t fed = 0;
  while (fed < 1000000) {
    const size_t n = std::min(chunk.size(), size_t{1000000} - fed);
    sha.Update(chunk.data(), n);
    fed += n;
  }
  EXPECT_EQ(sha.HexDigest(),
            "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

// Lengths around the 55/56-byte padding boundary and the 64-byte block
// (values from Python's hashlib).
TEST(Sha256Test, PaddingBoundaries) {
  const std::pair<size_t, const char*> cases[] = {
      {55, "d5e285683cd4efc02d021a5c62014694958901005d6f71e89e0989fac77e4072"},
      {56, "04c26261370ee7541549d16dee320c723e3fd14671e66a099afe0a377c16888e"},
      {63, "75220b47218278e656f2013bb8f0c455a25eaf01e86c64924e9d48d89776d6f2"},
      {64, "7ce100971f64e7001e8fe5a51973ecdfe1ced42befe7ee8d5fd6219506b5393c"},
      {65, "9537c5fdf120482f7d58d25e9ed583f52c02b4e304ea814db1633ad565aed7e9"},
      {119, "000b48d4edf0fa7bee3c6236ecd2785baa5db4eeb8bb54341b029e0d9fa5fb0c"},
      {120, "13f05a0b594787f5ecd315edc96141bd3243203d1b7d4f0836f37308b276ba98"},
  };
  for (const auto& [length, digest] : cases) {
    const std::string message(length, 'x');
    EXPECT_EQ(Sha256Hex(message), digest) << length << " bytes";
    Sha256 bytewise;
    for (char c : message) bytewise.Update(&c, 1);
    EXPECT_EQ(bytewise.HexDigest(), digest) << length << " bytes, one by one";
  }
}

TEST(Sha256Test, HexDigestLeavesTheStateUsable) {
  Sha256 sha;
  sha.Update("ab");
  EXPECT_EQ(sha.HexDigest(), Sha256Hex("ab"));
  sha.Update("c");
  EXPECT_EQ(sha.HexDigest(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

TEST(Sha256Test, FileDigestAndMissingFile) {
  testing::TempDir tmp;
  const fs::path path = fs::path(tmp.path()) / "abc.txt";
  std::ofstream(path) << "abc";
  auto digest = Sha256File(path);
  ASSERT_TRUE(digest.ok()) << digest.status();
  EXPECT_EQ(*digest,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");

  auto missing = Sha256File(fs::path(tmp.path()) / "nope.h5");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(missing.status().message(), HasSubstr("nope.h5"));
}

TEST(Md5Test, Rfc1321Vectors) {
  EXPECT_EQ(Md5Hex(""), "d41d8cd98f00b204e9800998ecf8427e");
  EXPECT_EQ(Md5Hex("a"), "0cc175b9c0f1b6a831c399e269772661");
  EXPECT_EQ(Md5Hex("abc"), "900150983cd24fb0d6963f7d28e17f72");
  EXPECT_EQ(Md5Hex("message digest"), "f96b697d7cb7938d525a2f31aaf161d0");
  EXPECT_EQ(Md5Hex("abcdefghijklmnopqrstuvwxyz"),
            "c3fcd3d76192e4007dfb496cca67e13b");
  EXPECT_EQ(Md5Hex("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                   "0123456789"),
            "d174ab98d277d9f5a5611c2c9f419d9f");
  EXPECT_EQ(Md5Hex("1234567890123456789012345678901234567890"
                   "1234567890123456789012345678901234567890"),
            "57edf4a22be3c955ac49da2e2107b67a");
  EXPECT_EQ(Md5Hex(std::string(1000000, 'a')),
            "7707d6ae4e027c70eea2a935c2296f21");
}

TEST(Md5Test, PaddingBoundaries) {
  const std::pair<size_t, const char*> cases[] = {
      {55, "04364420e25c512fd958a70738aa8f72"},
      {56, "668a72d5ba17f08e62dabcafad6db14b"},
      {63, "7dc2ca208106a2f703567bdff99d8981"},
      {64, "c1bb4f81d892b2d57947682aeb252456"},
      {65, "1bc932052302d074bdec39795fe00cf6"},
      {119, "ab347a5f68c8a443cfcddc633f12c24f"},
      {120, "fb98667f98096de92620b64f46e1c5b5"},
  };
  for (const auto& [length, digest] : cases) {
    const std::string message(length, 'x');
    EXPECT_EQ(Md5Hex(message), digest) << length << " bytes";
    Md5 bytewise;
    for (char c : message) bytewise.Update(&c, 1);
    EXPECT_EQ(bytewise.HexDigest(), digest) << length << " bytes, one by one";
  }
}

TEST(Md5Test, FileDigest) {
  testing::TempDir tmp;
  const fs::path path = fs::path(tmp.path()) / "abc.txt";
  std::ofstream(path) << "abc";
  auto digest = Md5File(path);
  ASSERT_TRUE(digest.ok()) << digest.status();
  EXPECT_EQ(*digest, "900150983cd24fb0d6963f7d28e17f72");
  EXPECT_EQ(Md5File(fs::path(tmp.path()) / "nope").status().code(),
            absl::StatusCode::kNotFound);
}

TEST(DigestTest, CopiesCarryTheStateAndDivergeAfterwards) {
  Sha256 a;
  a.Update("abc");
  Sha256 b = a;  // the state so far
  EXPECT_EQ(b.HexDigest(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  b.Update("d");
  EXPECT_EQ(a.HexDigest(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(b.HexDigest(), Sha256Hex("abcd"));
  Md5 m;
  m.Update("a");
  Md5 assigned;
  assigned = m;
  EXPECT_EQ(assigned.HexDigest(), "0cc175b9c0f1b6a831c399e269772661");
}

}  // namespace
}  // namespace transferd::common
