// Labels from CSV files: RFC 4180 parsing, ids matched to files by path or
// name with or without extension, class names from a second file, and every
// problem reported with its file and line.
#include "client/labels_csv.h"

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace transferd::client {
namespace {

namespace fs = std::filesystem;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

std::string Write(const std::string& name, const std::string& text) {
  const fs::path dir = fs::temp_directory_path() /
                       ("labels_csv_test_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  const fs::path p = dir / name;
  std::ofstream(p, std::ios::binary) << text;
  return p.string();
}

TEST(ParseCsvTest, QuotesLineBreaksCrlfAndBom) {
  auto r = ParseCsv(
      "\xEF\xBB\xBFid,name\r\n"
      "1,\"a, b\"\r\n"
      "2,\"say \"\"hi\"\"\"\n"
      "3,\"two\nlines\"\n"
      "4,last");
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->size(), 5u);
  EXPECT_THAT((*r)[0].fields, ElementsAre("id", "name"));
  EXPECT_THAT((*r)[1].fields, ElementsAre("1", "a, b"));
  EXPECT_THAT((*r)[2].fields, ElementsAre("2", "say \"hi\""));
  EXPECT_THAT((*r)[3].fields, ElementsAre("3", "two\nlines"));
  EXPECT_EQ((*r)[3].line, 4);
  EXPECT_EQ((*r)[4].line, 6);  // after the quoted line break
  EXPECT_THAT((*r)[4].fields, ElementsAre("4", "last"));

  auto open = ParseCsv("id,name\n1,\"never closed\n2,x\n");
  EXPECT_EQ(open.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(open.status().message()), HasSubstr("2:"));
}

TEST(LabelsFromCsvTest, MatchesIdsToFilesAndNamesEveryProblemsLine) {
  const std::vector<std::string> paths = {
      "train/0/0/0/abc.jpg", "train/1/2/3/def.jpg", "train/x/ghi.png",
      "dup1/same.jpg",       "dup2/same.jpg",       "orphan.jpg"};
  CsvLabelOptions o;
  o.labels_file = Write("train.csv",
                        "id,landmark_id\n"
                        "abc,10\n"          // 2: by name without extension
                        "def.jpg,11\n"      // 3: by name
                        "train/x/ghi,10\n"  // 4: by path without extension
                        "abc,11\n"          // 5: duplicate id
                        "same,10\n"         // 6: two files
                        "nosuch,10\n"       // 7: no file
                        "bad\n"             // 8: one field
                        "\"q,1\",12\n"      // 9: class id without a name
                        "\n");
  o.names_file = Write("category.csv",
                       "landmark_id,landmark_name\n"
                       "10,경복궁\n"
                       "11,\"남산 타워\"\n"
                       "10,again\n");  // 4: named twice
  auto r = LabelsFromCsv(o, paths);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->rows, 8);
  EXPECT_EQ(r->classes, 2);
  ASSERT_EQ(r->label_of.size(), 3u);
  EXPECT_EQ(r->label_of.at("train/0/0/0/abc.jpg"), "경복궁");
  EXPECT_EQ(r->label_of.at("train/1/2/3/def.jpg"), "남산 타워");
  EXPECT_EQ(r->label_of.at("train/x/ghi.png"), "경복궁");
  EXPECT_EQ(r->unlabelled_files, 3);
  std::vector<std::string> text;
  for (const CsvProblem& p : r->problems) text.push_back(p.Text());
  const std::string t = o.labels_file;
  const std::string n = o.names_file;
  EXPECT_THAT(
      text,
      ElementsAre(n + ":4: class id \"10\" already named on line 2",
                  t + ":5: id \"abc\" already given on line 2",
                  t + ":6: id \"same\" matches 2 files (dup1/same.jpg, "
                      "dup2/same.jpg); name it by its path",
                  t + ":7: no file for id \"nosuch\" under the folder",
                  t + ":8: expected 2 fields, got 1",
                  t + ":9: class id \"12\" is not in " + n,
                  t + ": 3 files have no row and will not be sent (first: "
                      "dup1/same.jpg)"));
}

TEST(LabelsFromCsvTest, ColumnsByFlagAndClassIdsWithoutNames) {
  CsvLabelOptions o;
  o.labels_file = Write("cols.csv",
                        "landmark_id,extra,image\n"
                        "7,x,a\n"
                        "8,y,b\n");
  o.id_column = "image";
  o.label_column = "landmark_id";
  auto r = LabelsFromCsv(o, {"a.jpg", "b.png"});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->label_of.at("a.jpg"), "7");
  EXPECT_EQ(r->label_of.at("b.png"), "8");
  EXPECT_TRUE(r->problems.empty());

  o.id_column = "file";
  auto missing = LabelsFromCsv(o, {"a.jpg"});
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(missing.status().message()),
              HasSubstr(":1: no id column \"file\" in the header "
                        "(landmark_id,extra,image)"));
  o.labels_file = Write("absent-dir/none.csv", "");
  fs::remove(o.labels_file);
  EXPECT_EQ(LabelsFromCsv(o, {}).status().code(), absl::StatusCode::kNotFound);
}

TEST(LabelsFromCsvTest, LabelSpec) {
  CsvLabelOptions o;
  EXPECT_TRUE(ParseCsvLabelSpec("csv:train.csv", o));
  EXPECT_EQ(o.labels_file, "train.csv");
  EXPECT_TRUE(o.names_file.empty());
  EXPECT_TRUE(ParseCsvLabelSpec("csv:a/train.csv,names=b/cat.csv", o));
  EXPECT_EQ(o.labels_file, "a/train.csv");
  EXPECT_EQ(o.names_file, "b/cat.csv");
  EXPECT_FALSE(ParseCsvLabelSpec("csv:", o));
  EXPECT_FALSE(ParseCsvLabelSpec("csv:x.csv,names=", o));
  EXPECT_FALSE(ParseCsvLabelSpec("folder", o));
}

}  // namespace
}  // namespace transferd::client
