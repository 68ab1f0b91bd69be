#include "server/core/train/train_json.h"

#include <stdexcept>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "server/core/train/eval_metrics.h"

namespace transferd::core::train {
namespace {

using json = nlohmann::json;

json AugmentJson(const data::AugmentOptions& a) {
  return {{"rotation_range", a.rotation_range},
          {"width_shift_range", a.width_shift_range},
          {"height_shift_range", a.height_shift_range},
          {"shear_range", a.shear_range},
          {"zoom_range", a.zoom_range},
          {"horizontal_flip", a.horizontal_flip},
          {"vertical_flip", a.vertical_flip},
          {"fill", static_cast<int>(a.fill)},
          {"cval", a.cval}};
}

data::AugmentOptions AugmentFrom(const json& j) {
  data::AugmentOptions a;
  a.rotation_range = j.at("rotation_range").get<double>();
  a.width_shift_range = j.at("width_shift_range").get<double>();
  a.height_shift_range = j.at("height_shift_range").get<double>();
  a.shear_range = j.at("shear_range").get<double>();
  a.zoom_range = j.at("zoom_range").get<double>();
  a.horizontal_flip = j.at("horizontal_flip").get<bool>();
  a.vertical_flip = j.at("vertical_flip").get<bool>();
  a.fill = static_cast<data::AugmentOptions::Fill>(j.at("fill").get<int>());
  a.cval = j.at("cval").get<double>();
  return a;
}

json EpochJson(const EpochReport& e) {
  return {{"stage", e.stage},
          {"epoch", e.epoch},
          {"loss", e.loss},
          {"accuracy", e.accuracy},
          {"has_validation", e.has_validation},
          {"val_loss", e.val_loss},
          {"val_accuracy", e.val_accuracy},
          {"learning_rate", e.learning_rate},
          {"seconds", e.seconds},
          {"images_per_second", e.images_per_second}};
}

EpochReport EpochFrom(const json& j) {
  EpochReport e;
  e.stage = j.at("stage").get<int>();
  e.epoch = j.at("epoch").get<int>();
  e.loss = j.at("loss").get<double>();
  e.accuracy = j.at("accuracy").get<double>();
  e.has_validation = j.at("has_validation").get<bool>();
  e.val_loss = j.at("val_loss").get<double>();
  e.val_accuracy = j.at("val_accuracy").get<double>();
  e.learning_rate = j.at("learning_rate").get<double>();
  e.seconds = j.at("seconds").get<double>();
  // Absent from histories stored before the field existed.
  e.images_per_second = j.value("images_per_second", 0.0);
  return e;
}

json ModelJson(const ModelConfig& m) {
  return {{"backbone", m.backbone},
          {"alpha", m.alpha},
          {"weights", m.weights},
          {"input_size", m.input_size},
          {"precision", m.precision},
          {"init_weights_file", m.init_weights_file},
          {"head",
           {{"pooling", static_cast<int>(m.head.pooling)},
            {"hidden_units", m.head.hidden_units},
            {"dropout", m.head.dropout},
            {"init", static_cast<int>(m.head.init)}}}};
}

ModelConfig ModelFrom(const json& m) {
  ModelConfig c;
  c.backbone = m.at("backbone").get<std::string>();
  c.alpha = m.at("alpha").get<double>();
  c.weights = m.at("weights").get<std::string>();
  c.input_size = m.at("input_size").get<int>();
  c.precision = m.at("precision").get<std::string>();
  c.init_weights_file = m.at("init_weights_file").get<std::string>();
  c.head.pooling = static_cast<Pooling>(m.at("head").at("pooling").get<int>());
  c.head.hidden_units = m.at("head").at("hidden_units").get<int>();
  c.head.dropout = m.at("head").at("dropout").get<double>();
  // Absent from configs stored before the field existed.
  c.head.init = static_cast<HeadInit>(m.at("head").value("init", 0));
  return c;
}

template <typename T, typename F>
absl::StatusOr<T> Parse(const std::string& text, const char* what, F&& f) {
  try {
    return f(json::parse(text));
  } catch (const std::exception& e) {
    return absl::DataLossError(
        absl::StrCat("stored ", what, " is malformed: ", e.what()));
  }
}

}  // namespace

std::string ConfigToJson(const TrainConfig& c) {
  json stages = json::array();
  for (const StageConfig& s : c.stages) {
    const OptimizerConfig& o = s.optimizer;
    stages.push_back({{"name", s.name},
                      {"trainable_from", s.trainable_from},
                      {"optimizer",
                       {{"kind", static_cast<int>(o.kind)},
                        {"learning_rate", o.learning_rate},
                        {"momentum", o.momentum},
                        {"rho", o.rho},
                        {"epsilon", o.epsilon},
                        {"beta1", o.beta1},
                        {"beta2", o.beta2},
                        {"weight_decay", o.weight_decay},
                        {"nesterov", o.nesterov}}},
                      {"epochs", s.epochs},
                      {"batch_size", s.batch_size},
                      {"augment", AugmentJson(s.augment)},
                      {"early_stopping",
                       {{"monitor", s.early_stopping.monitor},
                        {"patience", s.early_stopping.patience},
                        {"min_delta", s.early_stopping.min_delta}}},
                      {"lr_schedule",
                       {{"kind", static_cast<int>(s.lr_schedule.kind)},
                        {"factor", s.lr_schedule.factor},
                        {"step_epochs", s.lr_schedule.step_epochs},
                        {"patience", s.lr_schedule.patience},
                        {"min_lr", s.lr_schedule.min_lr}}},
                      {"batch_norm_inference", s.batch_norm_inference}});
  }
  json out = {{"model", ModelJson(c.model)},
              {"stages", stages},
              {"seed", c.seed},
              {"selection_metric", c.selection_metric},
              {"label_smoothing", c.label_smoothing},
              {"class_weights", c.class_weights},
              {"top_k", c.top_k},
              {"replicas", c.replicas},
              {"min_replicas", c.min_replicas}};
  if (!c.predict_classes.empty()) {
    out["predict"] = {{"splits", c.predict_splits},
                      {"flip_tta", c.predict_flip_tta},
                      {"classes", c.predict_classes}};
  }
  return out.dump();
}

absl::StatusOr<TrainConfig> ConfigFromJson(const std::string& text) {
  return Parse<TrainConfig>(text, "job config", [](const json& j) {
    TrainConfig c;
    c.model = ModelFrom(j.at("model"));
    for (const json& s : j.at("stages")) {
      StageConfig st;
      st.name = s.at("name").get<std::string>();
      st.trainable_from = s.at("trainable_from").get<std::string>();
      const json& o = s.at("optimizer");
      st.optimizer.kind = static_cast<OptimizerKind>(o.at("kind").get<int>());
      st.optimizer.learning_rate = o.at("learning_rate").get<double>();
      st.optimizer.momentum = o.at("momentum").get<double>();
      st.optimizer.rho = o.at("rho").get<double>();
      st.optimizer.epsilon = o.at("epsilon").get<double>();
      st.optimizer.beta1 = o.at("beta1").get<double>();
      st.optimizer.beta2 = o.at("beta2").get<double>();
      st.optimizer.weight_decay = o.at("weight_decay").get<double>();
      st.optimizer.nesterov = o.at("nesterov").get<bool>();
      st.epochs = s.at("epochs").get<int>();
      st.batch_size = s.at("batch_size").get<int>();
      st.augment = AugmentFrom(s.at("augment"));
      st.early_stopping.monitor =
          s.at("early_stopping").at("monitor").get<std::string>();
      st.early_stopping.patience =
          s.at("early_stopping").at("patience").get<int>();
      st.early_stopping.min_delta =
          s.at("early_stopping").at("min_delta").get<double>();
      const json& l = s.at("lr_schedule");
      st.lr_schedule.kind =
          static_cast<LrSchedule::Kind>(l.at("kind").get<int>());
      st.lr_schedule.factor = l.at("factor").get<double>();
      st.lr_schedule.step_epochs = l.at("step_epochs").get<int>();
      st.lr_schedule.patience = l.at("patience").get<int>();
      st.lr_schedule.min_lr = l.at("min_lr").get<double>();
      // Absent from configs stored before the field existed.
      st.batch_norm_inference = s.value("batch_norm_inference", false);
      c.stages.push_back(std::move(st));
    }
    c.seed = j.at("seed").get<uint64_t>();
    c.selection_metric = j.at("selection_metric").get<std::string>();
    c.label_smoothing = j.value("label_smoothing", 0.0);
    // Absent from configs stored before the fields existed.
    c.class_weights = j.value("class_weights", std::string("none"));
    c.top_k = j.value("top_k", 0);
    c.replicas = j.value("replicas", 1);
    c.min_replicas = j.value("min_replicas", 0);
    if (j.contains("predict")) {
      c.predict_splits =
          j.at("predict").at("splits").get<std::vector<std::string>>();
      c.predict_flip_tta = j.at("predict").at("flip_tta").get<bool>();
      c.predict_classes =
          j.at("predict").at("classes").get<std::vector<std::string>>();
    }
    return c;
  });
}

std::string ModelConfigToJson(const ModelConfig& model) {
  return ModelJson(model).dump();
}

absl::StatusOr<ModelConfig> ModelConfigFromJson(const std::string& text) {
  return Parse<ModelConfig>(text, "model config",
                            [](const json& j) { return ModelFrom(j); });
}

std::string HistoryToJson(const std::vector<EpochReport>& history) {
  json out = json::array();
  for (const EpochReport& e : history) out.push_back(EpochJson(e));
  return out.dump();
}

absl::StatusOr<std::vector<EpochReport>> HistoryFromJson(
    const std::string& text) {
  return Parse<std::vector<EpochReport>>(text, "metric history",
                                         [](const json& j) {
                                           std::vector<EpochReport> out;
                                           for (const json& e : j)
                                             out.push_back(EpochFrom(e));
                                           return out;
                                         });
}

std::string EvaluationsToJson(
    const std::vector<EvaluationReport>& evaluations) {
  json out = json::array();
  for (const EvaluationReport& e : evaluations) {
    // The confusion matrix as its non-zero cells [true, predicted, count].
    json cells = json::array();
    for (const ConfusionCell& c : e.confusion)
      cells.push_back({c.truth, c.predicted, c.count});
    out.push_back({{"split", e.split},
                   {"loss", e.loss},
                   {"accuracy", e.accuracy},
                   {"top_k", e.top_k},
                   {"top_k_accuracy", e.top_k_accuracy},
                   {"macro_accuracy", e.macro_accuracy},
                   {"gap", e.gap},
                   {"classes", e.num_classes},
                   {"confusion_cells", std::move(cells)},
                   {"roc_auc", e.roc_auc},
                   {"examples", e.examples}});
  }
  return out.dump();
}

absl::StatusOr<std::vector<EvaluationReport>> EvaluationsFromJson(
    const std::string& text) {
  return Parse<std::vector<EvaluationReport>>(
      text, "evaluations", [](const json& j) {
        std::vector<EvaluationReport> out;
        for (const json& e : j) {
          EvaluationReport r;
          r.split = e.at("split").get<std::string>();
          r.loss = e.at("loss").get<double>();
          r.accuracy = e.at("accuracy").get<double>();
          if (e.contains("confusion_cells")) {
            r.num_classes = e.at("classes").get<int>();
            for (const json& c : e.at("confusion_cells")) {
              r.confusion.push_back({c.at(0).get<int32_t>(),
                                     c.at(1).get<int32_t>(),
                                     c.at(2).get<int64_t>()});
            }
          } else {
            // Stored before 2026-12: a dense [true][predicted] matrix.
            const auto dense =
                e.at("confusion").get<std::vector<std::vector<int64_t>>>();
            r.num_classes = static_cast<int>(dense.size());
            r.confusion = CellsOfDense(dense);
          }
          for (const ConfusionCell& c : r.confusion) {
            if (c.truth < 0 || c.predicted < 0 || c.truth >= r.num_classes ||
                c.predicted >= r.num_classes || c.count < 0) {
              throw std::out_of_range("a confusion cell is outside the matrix");
            }
          }
          r.top_k = e.value("top_k", 0);
          r.top_k_accuracy = e.value("top_k_accuracy", 0.0);
          r.macro_accuracy = e.value("macro_accuracy", 0.0);
          r.gap = e.value("gap", 0.0);
          r.roc_auc = e.at("roc_auc").get<double>();
          r.examples = e.at("examples").get<int64_t>();
          out.push_back(std::move(r));
        }
        return out;
      });
}

std::string SummaryToJson(const TrainableSummary& s) {
  return json({{"trainable_tensors", s.trainable_tensors},
               {"trainable_parameters", s.trainable_parameters},
               {"non_trainable_parameters", s.non_trainable_parameters}})
      .dump();
}

absl::StatusOr<TrainableSummary> SummaryFromJson(const std::string& text) {
  return Parse<TrainableSummary>(text, "trainable summary", [](const json& j) {
    TrainableSummary s;
    s.trainable_tensors = j.at("trainable_tensors").get<int>();
    s.trainable_parameters = j.at("trainable_parameters").get<int64_t>();
    s.non_trainable_parameters =
        j.at("non_trainable_parameters").get<int64_t>();
    return s;
  });
}

}  // namespace transferd::core::train
