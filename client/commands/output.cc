// Output formatting shared by transferctl's commands: JSON printing, sizes,
// durations and timestamps, and the human-readable text of jobs and models.
#include "client/commands/output.h"

#include <algorithm>
#include <cmath>
#include <ctime>
#include <iostream>

#include <google/protobuf/util/json_util.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"

namespace transferd::client::commands {
namespace {

std::string OptimizerText(const v1::OptimizerSpec& o) {
  std::string kind;
  switch (o.kind()) {
    case v1::OptimizerSpec::KIND_RMSPROP:
      kind = "rmsprop";
      break;
    case v1::OptimizerSpec::KIND_ADAM:
      kind = "adam";
      break;
    case v1::OptimizerSpec::KIND_SGD:
      kind = "sgd";
      break;
    default:
      kind = "default optimizer";
      break;
  }
  if (o.has_learning_rate()) {
    absl::StrAppend(&kind, " lr ", Num(o.learning_rate()));
  }
  if (o.has_momentum() && o.momentum() != 0) {
    absl::StrAppend(&kind, " momentum ", Num(o.momentum()));
  }
  return kind;
}

std::string AugmentText(const v1::AugmentationSpec& a) {
  if (!a.preset().empty()) return a.preset();
  if (a.has_enabled() && !a.enabled()) return "off";
  std::vector<std::string> parts;
  if (a.rotation_range() != 0) {
    parts.push_back("rotation " + Num(a.rotation_range()));
  }
  if (a.width_shift_range() != 0 || a.height_shift_range() != 0) {
    parts.push_back(absl::StrCat("shift ", Num(a.width_shift_range()), "/",
                                 Num(a.height_shift_range())));
  }
  if (a.shear_range() != 0) parts.push_back("shear " + Num(a.shear_range()));
  if (a.zoom_range() != 0) parts.push_back("zoom " + Num(a.zoom_range()));
  if (a.horizontal_flip()) parts.push_back("horizontal flip");
  if (a.vertical_flip()) parts.push_back("vertical flip");
  if (parts.empty()) return a.has_enabled() ? "on" : "default";
  return absl::StrJoin(parts, ", ");
}

}  // namespace

void PrintJson(const google::protobuf::Message& message) {
  google::protobuf::util::JsonPrintOptions options;
  options.add_whitespace = true;
  options.preserve_proto_field_names = true;
  options.always_print_primitive_fields = true;
  std::string out;
  (void)google::protobuf::util::MessageToJsonString(message, &out, options);
  std::cout << out;
  if (out.empty() || out.back() != '\n') std::cout << '\n';
}

std::string OneLineJson(const google::protobuf::Message& message) {
  google::protobuf::util::JsonPrintOptions options;
  options.add_whitespace = false;
  options.preserve_proto_field_names = true;
  options.always_print_primitive_fields = true;
  std::string out;
  (void)google::protobuf::util::MessageToJsonString(message, &out, options);
  while (!out.empty() && out.back() == '\n') out.pop_back();
  return out;
}

std::string HumanBytes(int64_t n) {
  if (n < 1024) return absl::StrFormat("%d B", n);
  const char* units[] = {"KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(n) / 1024;
  int u = 0;
  while (v >= 1024 && u < 3) {
    v /= 1024;
    ++u;
  }
  return absl::StrFormat("%.1f %s", v, units[u]);
}

std::string Duration(double seconds) {
  if (!(seconds >= 0) || seconds > 359999) return "--:--";
  const int64_t s = static_cast<int64_t>(seconds + 0.5);
  if (s >= 3600) {
    return absl::StrFormat("%d:%02d:%02d", s / 3600, s / 60 % 60, s % 60);
  }
  return absl::StrFormat("%d:%02d", s / 60, s % 60);
}

std::string Thousands(int64_t n) {
  std::string digits = absl::StrCat(n < 0 ? -n : n);
  std::string out;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) out += ',';
    out += digits[i];
  }
  return n < 0 ? "-" + out : out;
}

std::string When(const google::protobuf::Timestamp& t) {
  if (t.seconds() == 0 && t.nanos() == 0) return "-";
  const time_t seconds = static_cast<time_t>(t.seconds());
  struct tm tm {};
  gmtime_r(&seconds, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%SZ", &tm);
  return buf;
}

std::string Num(double v) { return absl::StrFormat("%g", v); }

std::string SplitName(v1::Split split) {
  switch (split) {
    case v1::SPLIT_TRAIN:
      return "train";
    case v1::SPLIT_VALIDATION:
      return "validation";
    case v1::SPLIT_TEST:
      return "test";
    default:
      return "unassigned";
  }
}

std::string StateText(v1::JobState state) {
  std::string name = v1::JobState_Name(state);
  absl::string_view view = name;
  absl::ConsumePrefix(&view, "JOB_STATE_");
  return std::string(view);
}

std::string KindText(v1::JobKind kind) {
  std::string name = v1::JobKind_Name(kind);
  absl::string_view view = name;
  absl::ConsumePrefix(&view, "JOB_KIND_");
  return std::string(view);
}

const char* CodeName(int code) {
  static const char* const kNames[] = {"OK",
                                       "CANCELLED",
                                       "UNKNOWN",
                                       "INVALID_ARGUMENT",
                                       "DEADLINE_EXCEEDED",
                                       "NOT_FOUND",
                                       "ALREADY_EXISTS",
                                       "PERMISSION_DENIED",
                                       "RESOURCE_EXHAUSTED",
                                       "FAILED_PRECONDITION",
                                       "ABORTED",
                                       "OUT_OF_RANGE",
                                       "UNIMPLEMENTED",
                                       "INTERNAL",
                                       "UNAVAILABLE",
                                       "DATA_LOSS",
                                       "UNAUTHENTICATED"};
  return code >= 0 && code <= 16 ? kNames[code] : "UNKNOWN";
}

std::string StageText(const v1::StageSpec& s) {
  std::vector<std::string> parts;
  if (!s.trainable_from().empty()) {
    parts.push_back("trainable from " + s.trainable_from());
  }
  if (s.batch_norm_inference() && s.trainable_from() != "none") {
    parts.push_back("BatchNorm in inference mode");
  }
  parts.push_back(OptimizerText(s.optimizer()));
  if (s.has_epochs()) {
    parts.push_back(
        absl::StrCat(s.epochs(), s.epochs() == 1 ? " epoch" : " epochs"));
  }
  if (s.has_batch_size()) {
    parts.push_back(absl::StrCat("batch ", s.batch_size()));
  }
  parts.push_back("augmentation " + AugmentText(s.augmentation()));
  if (!s.early_stopping().monitor().empty()) {
    parts.push_back(absl::StrCat("early stopping on ",
                                 s.early_stopping().monitor(), ", patience ",
                                 s.early_stopping().patience()));
  }
  return absl::StrJoin(parts, "; ");
}

std::string ModelSpecText(const v1::ModelSpec& m) {
  if (m.backbone().empty()) return "";
  std::string out = m.backbone();
  if (m.has_alpha() &&
      (absl::StartsWith(m.backbone(), "mobilenet") || m.alpha() != 1)) {
    absl::StrAppend(&out, " (alpha ", Num(m.alpha()), ")");
  }
  if (!m.weights().empty()) absl::StrAppend(&out, ", weights ", m.weights());
  if (m.has_input_size()) absl::StrAppend(&out, ", ", m.input_size(), " px");
  if (m.precision() == v1::PRECISION_FP32) absl::StrAppend(&out, ", fp32");
  if (m.precision() == v1::PRECISION_BF16) absl::StrAppend(&out, ", bf16");
  const v1::HeadSpec& h = m.head();
  std::vector<std::string> head;
  if (h.pooling() == v1::POOLING_FLATTEN) head.push_back("flatten");
  if (h.pooling() == v1::POOLING_GLOBAL_AVERAGE) {
    head.push_back("global average");
  }
  if (h.has_hidden_units() && h.hidden_units() > 0) {
    head.push_back(absl::StrCat("dense ", h.hidden_units()));
  }
  if (h.has_dropout() && h.dropout() > 0) {
    head.push_back("dropout " + Num(h.dropout()));
  }
  if (h.init() == v1::HEAD_INIT_TORCH) head.push_back("torch init");
  if (!head.empty()) {
    absl::StrAppend(&out, "; head ", absl::StrJoin(head, " + "));
  }
  return out;
}

std::string TrainableText(const v1::TrainableSummary& t) {
  return absl::StrFormat(
      "%s trainable tensors, %s trainable params, %s non-trainable",
      Thousands(t.trainable_tensors()), Thousands(t.trainable_parameters()),
      Thousands(t.non_trainable_parameters()));
}

void PrintHistory(
    const google::protobuf::RepeatedPtrField<v1::EpochMetrics>& history) {
  if (history.empty()) return;
  std::cout << "history\n";
  std::cout << absl::StrFormat("  %5s %5s %8s %8s %8s %8s %10s %8s\n", "EPOCH",
                               "STAGE", "LOSS", "ACC", "VAL_LOSS", "VAL_ACC",
                               "LR", "SECONDS");
  for (const v1::EpochMetrics& e : history) {
    std::cout << absl::StrFormat(
        "  %5d %5d %8.4f %8.4f %8s %8s %10.3g %8.1f\n", e.epoch(),
        e.stage() + 1, e.loss(), e.accuracy(),
        e.has_val_loss() ? absl::StrFormat("%.4f", e.val_loss()) : "-",
        e.has_val_accuracy() ? absl::StrFormat("%.4f", e.val_accuracy()) : "-",
        e.learning_rate(), e.seconds());
  }
}

namespace {

// Evaluations of at most this many classes print their whole matrix; more
// print the top confusions.
constexpr int64_t kPrintedMatrixMaxClasses = 10;

// The dense matrix `cm` with its rows and columns named `names`.
void PrintMatrix(const std::vector<std::string>& names,
                 const v1::ConfusionMatrix& cm) {
  const auto n = static_cast<int64_t>(names.size());
  size_t width = 6;
  for (const std::string& c : names) width = std::max(width, c.size());
  for (int64_t v : cm.counts()) width = std::max(width, absl::StrCat(v).size());
  const int w = static_cast<int>(width);
  std::cout << "            confusion (rows: true class, columns: predicted)\n";
  std::cout << absl::StrFormat("            %*s", w, "");
  for (const std::string& c : names) std::cout << absl::StrFormat(" %*s", w, c);
  std::cout << "\n";
  for (int64_t i = 0; i < n; ++i) {
    std::cout << absl::StrFormat("            %*s", w,
                                 names[static_cast<size_t>(i)]);
    for (int64_t j = 0; j < n; ++j) {
      std::cout << absl::StrFormat(" %*d", w,
                                   cm.counts(static_cast<int>(i * n + j)));
    }
    std::cout << "\n";
  }
}

}  // namespace

void PrintEvaluations(
    const google::protobuf::RepeatedPtrField<v1::Evaluation>& evaluations,
    const std::vector<std::string>& classes) {
  for (const v1::Evaluation& e : evaluations) {
    std::cout << absl::StrFormat(
        "evaluation  %s: %d examples, loss %.4f, accuracy %.4f", e.split(),
        e.examples(), e.loss(), e.accuracy());
    if (e.top_k() > 0) {
      std::cout << absl::StrFormat(", top-%d %.4f", e.top_k(),
                                   e.top_k_accuracy());
    }
    if (e.roc_auc() > 0) {
      std::cout << absl::StrFormat(", roc_auc %.4f", e.roc_auc());
    }
    std::cout << "\n";
    const v1::ConfusionMatrix& cm = e.confusion_matrix();
    std::vector<std::string> names(cm.classes().begin(), cm.classes().end());
    if (names.empty()) names = classes;
    if (names.size() > 2 && e.examples() > 0) {
      std::cout << absl::StrFormat(
          "            macro accuracy %.4f, GAP %.4f over %d classes\n",
          e.macro_accuracy(), e.gap(), names.size());
    }
    const int64_t n = static_cast<int64_t>(names.size());
    if (n > 0 && n <= kPrintedMatrixMaxClasses && cm.counts_size() == n * n) {
      PrintMatrix(names, cm);
    } else if (e.top_confusions_size() > 0) {
      std::cout << "            most frequent confusions (true -> "
                   "predicted: images)\n";
      for (const v1::Confusion& c : e.top_confusions()) {
        std::cout << absl::StrFormat("              %s -> %s: %d\n",
                                     c.true_label(), c.predicted_label(),
                                     c.count());
      }
    }
  }
}

}  // namespace transferd::client::commands
