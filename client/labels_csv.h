// Labels from CSV files, the way contests ship them: one file mapping image
// ids to class ids ("id,landmark_id"), optionally a second mapping class ids
// to names ("landmark_id,landmark_name"). Ids are matched to the files of the
// upload folder by relative path, by name, or by name without extension,
// anywhere under the folder. Every problem is reported with its file and
// line; nothing here talks to the server.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace transferd::client {

struct CsvLabelOptions {
  std::string labels_file;
  std::string names_file;  // empty: class ids are the class names
  // Columns of labels_file; empty: "id", and the first other column.
  std::string id_column;
  std::string label_column;
  // Columns of names_file; empty: the label column's name when the names
  // file has it (else its first column), and the first other column.
  std::string names_id_column;
  std::string names_column;
};

// One problem: "FILE:LINE: message" (line 0 when it is about no line).
struct CsvProblem {
  std::string file;
  int64_t line = 0;
  std::string message;
  std::string Text() const;
};

struct CsvLabels {
  // Relative upload path -> class name, for every file the CSV labels.
  std::map<std::string, std::string> label_of;
  // Bad rows, duplicate ids, ids that match no file (or several), class
  // ids without a name, files no row labels: everything that was skipped.
  std::vector<CsvProblem> problems;
  int64_t rows = 0;              // data rows read
  int64_t unlabelled_files = 0;  // files under the folder no row names
  int64_t classes = 0;           // distinct class names in label_of
};

// INVALID_ARGUMENT or NOT_FOUND when a file cannot be read or lacks a
// named column; row-level problems go to CsvLabels::problems.
// `paths`: the upload's relative paths ('/'-separated).
absl::StatusOr<CsvLabels> LabelsFromCsv(const CsvLabelOptions& options,
                                        const std::vector<std::string>& paths);

// Parses "csv:FILE[,names=FILE]" (the --labels value) into `options`;
// false when `spec` is not of that form.
bool ParseCsvLabelSpec(const std::string& spec, CsvLabelOptions& options);

// RFC 4180 records of `text` (quoted fields may hold commas, quotes and
// line breaks; CRLF or LF; a leading UTF-8 BOM is skipped), each with the
// 1-based line it starts on. INVALID_ARGUMENT naming the line for an
// unterminated quote.
struct CsvRecord {
  int64_t line = 0;
  std::vector<std::string> fields;
};
absl::StatusOr<std::vector<CsvRecord>> ParseCsv(const std::string& text);

}  // namespace transferd::client
