// LabelsFromCsv (labels_csv.h).
#include "client/labels_csv.h"

#include <algorithm>
#include <fstream>
#include <set>
#include <sstream>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"

namespace transferd::client {
namespace {

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read ", path));
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// Index of `name` in the header, or of the first column other than
// `other` when `name` is empty; -1 when absent.
int Column(const std::vector<std::string>& header, const std::string& name,
           int other) {
  for (size_t i = 0; i < header.size(); ++i) {
    if (name.empty() ? static_cast<int>(i) != other : header[i] == name)
      return static_cast<int>(i);
  }
  return -1;
}

absl::Status MissingColumn(const std::string& file, const std::string& what,
                           const std::string& name,
                           const std::vector<std::string>& header) {
  return absl::InvalidArgumentError(
      absl::StrCat(file, ":1: no ", what, " column", name.empty() ? "" : " \"",
                   name, name.empty() ? "" : "\"", " in the header (",
                   absl::StrJoin(header, ","), ")"));
}

std::string Stem(const std::string& name) {
  const size_t dot = name.rfind('.');
  return dot == std::string::npos || dot == 0 ? name : name.substr(0, dot);
}

std::string BaseName(const std::string& path) {
  const size_t slash = path.rfind('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

// The upload's files by every name an id may use for them.
class FileIndex {
 public:
  explicit FileIndex(const std::vector<std::string>& paths) {
    for (const std::string& p : paths) {
      by_path_[p].push_back(p);
      const size_t slash = p.rfind('/');
      const std::string dir =
          slash == std::string::npos ? "" : p.substr(0, slash + 1);
      if (Stem(BaseName(p)) != BaseName(p))
        by_path_[dir + Stem(BaseName(p))].push_back(p);
      by_name_[BaseName(p)].push_back(p);
      if (Stem(BaseName(p)) != BaseName(p))
        by_name_[Stem(BaseName(p))].push_back(p);
    }
  }

  // The files `id` names: a relative path (with or without extension)
  // first, else a file name (with or without extension) anywhere.
  const std::vector<std::string>* Find(const std::string& id) const {
    auto it = by_path_.find(id);
    if (it != by_path_.end()) return &it->second;
    it = by_name_.find(id);
    if (it != by_name_.end()) return &it->second;
    return nullptr;
  }

 private:
  std::map<std::string, std::vector<std::string>> by_path_, by_name_;
};

// Class id -> name from the names file; problems appended.
absl::StatusOr<std::map<std::string, std::string>> ReadNames(
    const CsvLabelOptions& o, const std::string& label_column_name,
    std::vector<CsvProblem>& problems) {
  std::map<std::string, std::string> names;
  if (o.names_file.empty()) return names;
  absl::StatusOr<std::string> text = ReadFile(o.names_file);
  if (!text.ok()) return text.status();
  absl::StatusOr<std::vector<CsvRecord>> records = ParseCsv(*text);
  if (!records.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(o.names_file, ":", records.status().message()));
  }
  if (records->empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(o.names_file, ": empty file (a header is required)"));
  }
  const std::vector<std::string>& header = records->front().fields;
  int id_col = -1;
  if (!o.names_id_column.empty()) {
    id_col = Column(header, o.names_id_column, -1);
    if (id_col < 0)
      return MissingColumn(o.names_file, "id", o.names_id_column, header);
  } else {
    id_col = Column(header, label_column_name, -1);
    if (id_col < 0) id_col = 0;
  }
  const int name_col = Column(header, o.names_column, id_col);
  if (name_col < 0)
    return MissingColumn(o.names_file, "name", o.names_column, header);
  std::map<std::string, int64_t> first_line;
  for (size_t r = 1; r < records->size(); ++r) {
    const CsvRecord& rec = (*records)[r];
    if (rec.fields.size() == 1 && rec.fields[0].empty()) continue;
    if (rec.fields.size() != header.size()) {
      problems.push_back({o.names_file, rec.line,
                          absl::StrCat("expected ", header.size(),
                                       " fields, got ", rec.fields.size())});
      continue;
    }
    const std::string& id = rec.fields[id_col];
    const std::string& name = rec.fields[name_col];
    if (id.empty() || name.empty()) {
      problems.push_back({o.names_file, rec.line, "empty class id or name"});
      continue;
    }
    if (auto [it, fresh] = first_line.emplace(id, rec.line); !fresh) {
      problems.push_back(
          {o.names_file, rec.line,
           absl::StrCat("class id \"", id, "\" already named on line ",
                        it->second)});
      continue;
    }
    names[id] = name;
  }
  return names;
}

}  // namespace

std::string CsvProblem::Text() const {
  return line > 0 ? absl::StrCat(file, ":", line, ": ", message)
                  : absl::StrCat(file, ": ", message);
}

absl::StatusOr<std::vector<CsvRecord>> ParseCsv(const std::string& text) {
  std::vector<CsvRecord> out;
  absl::string_view s = text;
  if (absl::StartsWith(s, "\xEF\xBB\xBF")) s.remove_prefix(3);
  int64_t line = 1;
  CsvRecord rec{line, {}};
  std::string field;
  bool quoted = false, field_started = false;
  int64_t quote_line = 0;
  for (size_t i = 0; i < s.size(); ++i) {
    const char c = s[i];
    if (quoted) {
      if (c == '"') {
        if (i + 1 < s.size() && s[i + 1] == '"') {
          field += '"';
          ++i;
        } else {
          quoted = false;
        }
      } else {
        if (c == '\n') ++line;
        field += c;
      }
      continue;
    }
    if (c == '"' && !field_started) {
      quoted = true;
      field_started = true;
      quote_line = line;
    } else if (c == ',') {
      rec.fields.push_back(std::move(field));
      field.clear();
      field_started = false;
    } else if (c == '\n' || c == '\r') {
      if (c == '\r' && i + 1 < s.size() && s[i + 1] == '\n') ++i;
      rec.fields.push_back(std::move(field));
      field.clear();
      field_started = false;
      out.push_back(std::move(rec));
      ++line;
      rec = CsvRecord{line, {}};
    } else {
      field += c;
      field_started = true;
    }
  }
  if (quoted) {
    return absl::InvalidArgumentError(absl::StrCat(
        quote_line, ": a quoted field is not closed before the end"));
  }
  if (field_started || !rec.fields.empty()) {
    rec.fields.push_back(std::move(field));
    out.push_back(std::move(rec));
  }
  return out;
}

absl::StatusOr<CsvLabels> LabelsFromCsv(const CsvLabelOptions& o,
                                        const std::vector<std::string>& paths) {
  absl::StatusOr<std::string> text = ReadFile(o.labels_file);
  if (!text.ok()) return text.status();
  absl::StatusOr<std::vector<CsvRecord>> records = ParseCsv(*text);
  if (!records.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(o.labels_file, ":", records.status().message()));
  }
  if (records->empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(o.labels_file, ": empty file (a header is required)"));
  }
  const std::vector<std::string>& header = records->front().fields;
  const int id_col =
      Column(header, o.id_column.empty() ? "id" : o.id_column, -1);
  if (id_col < 0)
    return MissingColumn(o.labels_file, "id",
                         o.id_column.empty() ? "id" : o.id_column, header);
  const int label_col = Column(header, o.label_column, id_col);
  if (label_col < 0)
    return MissingColumn(o.labels_file, "label", o.label_column, header);

  CsvLabels out;
  absl::StatusOr<std::map<std::string, std::string>> names =
      ReadNames(o, header[label_col], out.problems);
  if (!names.ok()) return names.status();

  const FileIndex index(paths);
  std::map<std::string, int64_t> id_line;    // id -> first line
  std::map<std::string, int64_t> file_line;  // path -> line labelling it
  std::set<std::string> classes;
  for (size_t r = 1; r < records->size(); ++r) {
    const CsvRecord& rec = (*records)[r];
    if (rec.fields.size() == 1 && rec.fields[0].empty()) continue;
    ++out.rows;
    auto problem = [&](std::string message) {
      out.problems.push_back({o.labels_file, rec.line, std::move(message)});
    };
    if (rec.fields.size() != header.size()) {
      problem(absl::StrCat("expected ", header.size(), " fields, got ",
                           rec.fields.size()));
      continue;
    }
    const std::string& id = rec.fields[id_col];
    std::string label = rec.fields[label_col];
    if (id.empty() || label.empty()) {
      problem("empty id or label");
      continue;
    }
    if (auto [it, fresh] = id_line.emplace(id, rec.line); !fresh) {
      problem(
          absl::StrCat("id \"", id, "\" already given on line ", it->second));
      continue;
    }
    if (!o.names_file.empty()) {
      auto n = names->find(label);
      if (n == names->end()) {
        problem(
            absl::StrCat("class id \"", label, "\" is not in ", o.names_file));
        continue;
      }
      label = n->second;
    }
    const std::vector<std::string>* files = index.Find(id);
    if (files == nullptr) {
      problem(absl::StrCat("no file for id \"", id, "\" under the folder"));
      continue;
    }
    if (files->size() > 1) {
      problem(absl::StrCat("id \"", id, "\" matches ", files->size(),
                           " files (", (*files)[0], ", ", (*files)[1],
                           files->size() > 2 ? ", ..." : "",
                           "); name it by its path"));
      continue;
    }
    const std::string& path = files->front();
    if (auto [it, fresh] = file_line.emplace(path, rec.line); !fresh) {
      problem(absl::StrCat("file ", path, " is already labelled on line ",
                           it->second));
      continue;
    }
    out.label_of[path] = label;
    classes.insert(label);
  }
  out.classes = static_cast<int64_t>(classes.size());
  std::vector<std::string> unlabelled;
  for (const std::string& p : paths) {
    if (out.label_of.count(p) == 0) unlabelled.push_back(p);
  }
  out.unlabelled_files = static_cast<int64_t>(unlabelled.size());
  if (!unlabelled.empty()) {
    out.problems.push_back(
        {o.labels_file, 0,
         absl::StrCat(unlabelled.size(), " file",
                      unlabelled.size() == 1 ? " has" : "s have",
                      " no row and will not be sent (first: ",
                      unlabelled.front(), ")")});
  }
  return out;
}

bool ParseCsvLabelSpec(const std::string& spec, CsvLabelOptions& options) {
  absl::string_view rest = spec;
  if (!absl::ConsumePrefix(&rest, "csv:") || rest.empty()) return false;
  const size_t comma = rest.find(",names=");
  options.labels_file = std::string(rest.substr(0, comma));
  if (comma != absl::string_view::npos) {
    options.names_file = std::string(rest.substr(comma + 7));
    if (options.names_file.empty()) return false;
  }
  return !options.labels_file.empty();
}

}  // namespace transferd::client
