// The token file's rules; the checks on live calls are in
// tests/integration/security_test.cc.
#include "server/auth/auth.h"

#include <fstream>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "common/hash.h"
#include "tests/support/subprocess.h"

namespace transferd::auth {
namespace {

using ::testing::HasSubstr;

std::string Sha(const std::string& s) {
  common::Sha256 h;
  h.Update(s);
  return h.HexDigest();
}

TEST(TokenFileTest, ParsesRolesNamesAndComments) {
  auto entries = ParseTokenFile(
      "# tokens\n\n  0123456789abcdef viewer\nABCDEFGHIJKLMNOPQRST trainer "
      "ci-bot\t\n"
      "zzzzzzzzzzzzzzzz-1 admin ops # trailing\n");
  // "# trailing" makes four fields on the last line: an error, not a comment.
  ASSERT_FALSE(entries.ok());
  EXPECT_THAT(entries.status().message(), HasSubstr("line 5"));

  entries = ParseTokenFile(
      "# tokens\n\n  0123456789abcdef viewer\nABCDEFGHIJKLMNOPQRST trainer "
      "ci-bot\t\n"
      "zzzzzzzzzzzzzzzz-1 admin ops\n");
  ASSERT_TRUE(entries.ok()) << entries.status();
  ASSERT_EQ(entries->size(), 3u);
  EXPECT_EQ((*entries)[0].role, Role::kViewer);
  EXPECT_EQ((*entries)[0].name, "token 1");
  EXPECT_EQ((*entries)[0].digest,
            Sha("0123456789abcdef"));  // only the digest is kept
  EXPECT_EQ((*entries)[1].role, Role::kTrainer);
  EXPECT_EQ((*entries)[1].name, "ci-bot");
  EXPECT_EQ((*entries)[2].role, Role::kAdmin);
  EXPECT_EQ((*entries)[2].name, "ops");
}

TEST(TokenFileTest, RejectsWhatWouldBeUnsafeOrAmbiguous) {
  auto expect_error = [](const std::string& text, const std::string& why) {
    auto r = ParseTokenFile(text);
    ASSERT_FALSE(r.ok()) << text;
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(r.status().message(), HasSubstr(why)) << text;
    EXPECT_THAT(r.status().message(),
                ::testing::Not(HasSubstr("0123456789abcdef")));
  };
  expect_error("short admin\n", "at least 16 characters");
  expect_error("0123456789abcdef root\n",
               "role must be viewer, trainer, admin or worker");
  expect_error("0123456789abcdef\n", "expected TOKEN ROLE [NAME]");
  expect_error("0123456789abcdef viewer a\n0123456789abcdef admin b\n",
               "appears again");
  expect_error(std::string("0123456789abcde\x01 viewer\n"), "printable ASCII");
}

TEST(AuthorizerTest, NoTokenFileAdmitsEverything) {
  auto auth = Authorizer::Create("");
  ASSERT_TRUE(auth.ok());
  EXPECT_FALSE((*auth)->enabled());
  EXPECT_TRUE((*auth)->Reload().ok());
}

TEST(AuthorizerTest, ReloadKeepsTheTokensInForceWhenTheFileBreaks) {
  testing::TempDir temp;
  const std::string path = temp.path() + "/tokens";
  std::ofstream(path) << "0123456789abcdef viewer\nfedcba9876543210 admin\n";
  auto auth = Authorizer::Create(path);
  ASSERT_TRUE(auth.ok()) << auth.status();
  EXPECT_EQ((*auth)->token_count(), 2u);
  std::ofstream(path, std::ios::trunc) << "# nothing left\n";
  EXPECT_FALSE((*auth)->Reload().ok());
  EXPECT_EQ((*auth)->token_count(), 2u);
  std::ofstream(path, std::ios::trunc) << "0123456789abcdef-new trainer\n";
  EXPECT_TRUE((*auth)->Reload().ok());
  EXPECT_EQ((*auth)->token_count(), 1u);
  EXPECT_FALSE(Authorizer::Create(temp.path() + "/missing").ok());
}

TEST(AuthorizerTest, TheWorkerRoleJoinsClustersAndNothingElse) {
  testing::TempDir temp;
  const std::string path = temp.path() + "/tokens";
  std::ofstream(path) << "worker-0123456789 worker w1\n"
                         "admin-0123456789a admin ops\n"
                         "trainer-012345678 trainer ci\n";
  auto auth = Authorizer::Create(path);
  ASSERT_TRUE(auth.ok()) << auth.status();
  auto as = [&](const std::string& token, Role role) {
    Authorizer::Caller caller;
    caller.authorization = "Bearer " + token;
    return (*auth)->Check(caller, role, "Cluster.Join");
  };
  EXPECT_TRUE(as("worker-0123456789", Role::kWorker).ok());
  EXPECT_TRUE(as("admin-0123456789a", Role::kWorker).ok());
  const absl::Status trainer = as("trainer-012345678", Role::kWorker);
  EXPECT_TRUE(absl::IsPermissionDenied(trainer)) << trainer;
  EXPECT_THAT(std::string(trainer.message()),
              HasSubstr("needs the role worker"));
  // A worker token reads nothing: it is not above viewer.
  const absl::Status viewer = as("worker-0123456789", Role::kViewer);
  EXPECT_TRUE(absl::IsPermissionDenied(viewer)) << viewer;
  EXPECT_THAT(std::string(viewer.message()), HasSubstr("has the role worker"));
}

}  // namespace
}  // namespace transferd::auth
