// transferctl train and finetune: the spec flags, the CreateJobRequest they
// describe, and submitting the job (followed to its end unless --detach).
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <memory>
#include <sstream>
#include <string>

#include <google/protobuf/util/json_util.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "client/client.h"
#include "client/commands/commands.h"
#include "client/commands/common.h"
#include "client/commands/follow.h"
#include "client/commands/output.h"
#include "client/spec_file.h"

namespace transferd::client::commands {
namespace {

constexpr char kTrainHelp[] =
    "Examples:\n"
    "  transferctl train cats-and-dogs --recipe keras-book\n"
    "      VGG16 at 150 px, Flatten + Dense(256) + Dropout(0.5), 30 frozen\n"
    "      epochs, then block5 fine-tuned for 100 (Chollet's book)\n"
    "  transferctl train cats-and-dogs --recipe tf-tutorial --epochs 5 "
    "--fine-tune-epochs 5\n"
    "  transferctl train datasets/small --backbone mobilenet --alpha 0.25 "
    "--weights none \\\n"
    "      --input-size 32 --epochs 2 --batch-size 4 --augment none "
    "--hidden-units 8\n"
    "  transferctl train flowers --spec flowers.yaml --lr 3e-4 --detach\n"
    "      flowers.yaml (JSON works too, same field names):\n"
    "        recipe: tf-tutorial\n"
    "        model: {input_size: 192}\n"
    "        stages:\n"
    "          - epochs: 5\n"
    "            optimizer: {kind: KIND_ADAM, learning_rate: 1e-4}\n"
    "Flags override --spec, which overrides the recipe, field by field. "
    "--epochs,\n--batch-size, --lr, --optimizer, --momentum, --augment and "
    "--trainable-from set\nstage 1; --fine-tune-* set stage 2. The server "
    "checks the values and names the\nfield it rejects "
    "(spec.stages[0].optimizer.learning_rate must be > 0).\n"
    "Without --detach the job is followed to its end: exit code 0 when it "
    "succeeds,\n1 when it fails or is cancelled. Ctrl-C detaches (exit code "
    "0) without\ncancelling; transferctl jobs watch JOB picks it up again.";

constexpr char kFinetuneHelp[] =
    "Examples:\n"
    "  transferctl finetune cats-vgg16 cats-and-dogs --trainable-from "
    "block5_conv1 \\\n"
    "      --optimizer rmsprop --lr 1e-5 --epochs 20\n"
    "  transferctl finetune models/cats-vgg16 more-cats --epochs 5 --detach\n"
    "The network is the base model's; the flags set its training stages as "
    "for train.";

// CLI options whose presence matters (a flag given overrides --spec and the
// recipe; one not given leaves them alone).
template <class T>
struct Flag {
  T value{};
  CLI::Option* option = nullptr;
  bool set() const { return option != nullptr && option->count() > 0; }
};

template <class T>
CLI::Option* AddFlag(CLI::App* cmd, const std::string& name, Flag<T>& flag,
                     const std::string& help) {
  flag.option = cmd->add_option(name, flag.value, help);
  return flag.option;
}

struct SpecArgs {
  std::string dataset;
  std::string model;
  Flag<std::string> recipe, backbone, weights, precision, pooling, head_init;
  Flag<double> alpha, dropout, label_smoothing;
  Flag<int32_t> input_size, hidden_units;
  Flag<int32_t> epochs, batch_size;
  Flag<double> lr, momentum;
  Flag<std::string> optimizer, augment, trainable_from;
  Flag<std::string> fine_tune_from;
  Flag<int32_t> fine_tune_epochs;
  Flag<double> fine_tune_lr;
  Flag<uint64_t> seed;
  Flag<std::string> selection_metric, class_weights;
  Flag<int32_t> top_k, replicas, min_replicas;
  Flag<std::string> id, spec_file;
  bool detach = false;
};

void AddModelFlags(CLI::App* cmd, SpecArgs& a) {
  AddFlag(cmd, "--backbone", a.backbone,
          "vgg16, vgg19, resnet50, mobilenet or mobilenet_v2 (server info "
          "lists them)");
  AddFlag(cmd, "--alpha", a.alpha,
          "MobileNet width multiplier: 0.25, 0.5, 0.75 or 1.0 (MobileNetV2: "
          "0.35, 0.5, 0.75, 1.0, 1.3 or 1.4)");
  AddFlag(
      cmd, "--weights", a.weights,
      "imagenet, none (random init) or a file in the server's weights folder");
  AddFlag(cmd, "--input-size", a.input_size,
          "Square input size in pixels (>= 32)");
  AddFlag(cmd, "--precision", a.precision,
          "fp32 or bf16 (default: the server's)")
      ->check(CLI::IsMember({"fp32", "bf16"}));
  AddFlag(cmd, "--pooling", a.pooling,
          "Head pooling: flatten or gap (global average)")
      ->check(CLI::IsMember({"flatten", "gap"}));
  AddFlag(cmd, "--hidden-units", a.hidden_units,
          "Width of the head's hidden Dense(relu) layer; 0 = none");
  AddFlag(cmd, "--dropout", a.dropout,
          "Dropout rate before the output layer, in [0, 1)");
  AddFlag(cmd, "--head-init", a.head_init,
          "Initialisation of the head's Dense layers: glorot (Keras' "
          "default) or torch (PyTorch nn.Linear's, smaller for a wide "
          "Flatten input)")
      ->check(CLI::IsMember({"glorot", "torch"}));
}

void AddStageFlags(CLI::App* cmd, SpecArgs& a) {
  AddFlag(cmd, "--recipe", a.recipe,
          "Start from a recipe: keras-book (VGG16, 150 px, frozen then block5 "
          "fine-tune), tf-tutorial (MobileNetV2, 160 px) or landmarks "
          "(many classes: MobileNetV2 224 px, head on cached features then "
          "fine-tune, balanced-sqrt class weights, label smoothing 0.1)")
      ->check(CLI::IsMember({"keras-book", "tf-tutorial", "landmarks"}));
  AddFlag(cmd, "--epochs", a.epochs, "Epochs of stage 1");
  AddFlag(cmd, "--batch-size", a.batch_size, "Batch size of stage 1");
  AddFlag(cmd, "--lr", a.lr, "Learning rate of stage 1 (> 0)");
  AddFlag(cmd, "--optimizer", a.optimizer,
          "Optimizer of stage 1: rmsprop, adam or sgd")
      ->check(CLI::IsMember({"rmsprop", "adam", "sgd"}));
  AddFlag(cmd, "--momentum", a.momentum,
          "Momentum of stage 1 (sgd, rmsprop), in [0, 1)");
  AddFlag(cmd, "--augment", a.augment,
          "Augmentation of stage 1: keras-book, tf-tutorial or none")
      ->check(CLI::IsMember({"keras-book", "tf-tutorial", "none"}));
  AddFlag(
      cmd, "--trainable-from", a.trainable_from,
      "First trainable backbone layer of stage 1 (Keras name, index, or none)");
  AddFlag(cmd, "--fine-tune-from", a.fine_tune_from,
          "Add (or change) stage 2, training from this backbone layer "
          "(\"block5_conv1\", \"100\")");
  AddFlag(cmd, "--fine-tune-epochs", a.fine_tune_epochs, "Epochs of stage 2");
  AddFlag(cmd, "--fine-tune-lr", a.fine_tune_lr, "Learning rate of stage 2");
  AddFlag(cmd, "--seed", a.seed,
          "Seed of initialisation, shuffling and augmentation");
  AddFlag(cmd, "--selection-metric", a.selection_metric,
          "Metric that picks the best epoch, whose weights are kept: "
          "val_accuracy (default), val_loss, accuracy or loss (a dataset "
          "without a validation split needs accuracy or loss), or last "
          "(the final epoch's weights)")
      ->check(CLI::IsMember(
          {"val_accuracy", "val_loss", "accuracy", "loss", "last"}));
  AddFlag(cmd, "--label-smoothing", a.label_smoothing,
          "Label smoothing of the loss, in [0, 1) (Keras' label_smoothing; "
          "default 0)");
  AddFlag(cmd, "--class-weights", a.class_weights,
          "Per-class loss weights for imbalanced data: none (default), "
          "balanced (1 / images of the class) or balanced-sqrt "
          "(1 / sqrt(images), gentler for long tails)")
      ->check(CLI::IsMember({"none", "balanced", "balanced-sqrt"}));
  AddFlag(cmd, "--top-k", a.top_k,
          "k of the evaluations' top-k accuracy (default 5; not measured "
          "when k reaches the class count)");
  AddFlag(cmd, "--replicas", a.replicas,
          "Data-parallel ranks: the server and N-1 of its workers (batch "
          "sizes are per rank; docs/distributed.md; default 1)");
  AddFlag(cmd, "--min-replicas", a.min_replicas,
          "Fewest ranks the job goes on with after losing a worker (default: "
          "--replicas)");
  AddFlag(cmd, "--id", a.id, "Job id (default: the server chooses)");
  AddFlag(cmd, "--spec", a.spec_file,
          "A JobSpec in JSON or YAML (proto field names) to start from; flags "
          "override it")
      ->check(CLI::ExistingFile);
  cmd->add_flag("--detach", a.detach,
                "Print the job and return at once instead of following it");
}

// Reads --spec FILE (JSON or YAML) into `spec`.
absl::Status ReadSpecFile(const std::string& path, v1::JobSpec& spec) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  if (!in) {
    return absl::InvalidArgumentError(absl::StrCat("cannot read ", path));
  }
  absl::StatusOr<std::string> json =
      transferd::client::SpecTextToJson(text.str());
  if (!json.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": ", json.status().message()));
  }
  auto parsed = google::protobuf::util::JsonStringToMessage(*json, &spec);
  if (!parsed.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(
        path, " is not a JobSpec (protobuf JSON or YAML field names): ",
        parsed.ToString()));
  }
  return absl::OkStatus();
}

// The network flags given, over `m`.
void ApplyModelFlags(const SpecArgs& a, v1::ModelSpec& m) {
  if (a.backbone.set()) m.set_backbone(a.backbone.value);
  if (a.alpha.set()) m.set_alpha(a.alpha.value);
  if (a.weights.set()) m.set_weights(a.weights.value);
  if (a.input_size.set()) m.set_input_size(a.input_size.value);
  if (a.precision.set()) {
    m.set_precision(a.precision.value == "bf16" ? v1::PRECISION_BF16
                                                : v1::PRECISION_FP32);
  }
  if (a.pooling.set()) {
    m.mutable_head()->set_pooling(a.pooling.value == "gap"
                                      ? v1::POOLING_GLOBAL_AVERAGE
                                      : v1::POOLING_FLATTEN);
  }
  if (a.hidden_units.set()) {
    m.mutable_head()->set_hidden_units(a.hidden_units.value);
  }
  if (a.dropout.set()) m.mutable_head()->set_dropout(a.dropout.value);
  if (a.head_init.set()) {
    m.mutable_head()->set_init(a.head_init.value == "torch"
                                   ? v1::HEAD_INIT_TORCH
                                   : v1::HEAD_INIT_GLOROT_UNIFORM);
  }
}

// The stage flags given, over stage 1 (and, for --fine-tune-*, stage 2) of
// `spec`; missing stages are added.
void ApplyStageFlags(const SpecArgs& a, v1::JobSpec& spec) {
  const auto stage = [&](int i) {
    while (spec.stages_size() <= i) spec.add_stages();
    return spec.mutable_stages(i);
  };
  if (a.epochs.set()) stage(0)->set_epochs(a.epochs.value);
  if (a.batch_size.set()) stage(0)->set_batch_size(a.batch_size.value);
  if (a.lr.set()) stage(0)->mutable_optimizer()->set_learning_rate(a.lr.value);
  if (a.momentum.set()) {
    stage(0)->mutable_optimizer()->set_momentum(a.momentum.value);
  }
  if (a.optimizer.set()) {
    const std::string& o = a.optimizer.value;
    stage(0)->mutable_optimizer()->set_kind(
        o == "adam"  ? v1::OptimizerSpec::KIND_ADAM
        : o == "sgd" ? v1::OptimizerSpec::KIND_SGD
                     : v1::OptimizerSpec::KIND_RMSPROP);
  }
  if (a.augment.set()) {
    v1::AugmentationSpec* aug = stage(0)->mutable_augmentation();
    if (a.augment.value == "none") {
      aug->clear_preset();
      aug->set_enabled(false);
    } else {
      aug->set_preset(a.augment.value);
      aug->set_enabled(true);
    }
  }
  if (a.trainable_from.set()) {
    stage(0)->set_trainable_from(a.trainable_from.value);
  }
  if (a.fine_tune_from.set() || a.fine_tune_epochs.set() ||
      a.fine_tune_lr.set()) {
    const bool fresh = spec.stages_size() < 2;
    v1::StageSpec* tune = stage(1);
    // Without a recipe a new stage would be called "stage-2".
    if (fresh && spec.recipe().empty() && tune->name().empty()) {
      tune->set_name("fine-tune");
    }
    if (a.fine_tune_from.set()) {
      tune->set_trainable_from(a.fine_tune_from.value);
    }
    if (a.fine_tune_epochs.set()) tune->set_epochs(a.fine_tune_epochs.value);
    if (a.fine_tune_lr.set()) {
      tune->mutable_optimizer()->set_learning_rate(a.fine_tune_lr.value);
    }
  }
}

// The CreateJobRequest the flags describe.
absl::StatusOr<v1::CreateJobRequest> BuildRequest(const SpecArgs& a,
                                                  v1::JobKind kind) {
  v1::CreateJobRequest request;
  v1::JobSpec& spec = *request.mutable_spec();
  if (a.spec_file.set()) {
    if (absl::Status read = ReadSpecFile(a.spec_file.value, spec); !read.ok()) {
      return read;
    }
  }
  spec.set_kind(kind);
  if (!a.dataset.empty()) {
    spec.set_dataset(transferd::client::DatasetName(a.dataset));
  }
  if (!a.model.empty()) {
    spec.set_base_model(transferd::client::ModelName(a.model));
  }
  if (a.recipe.set()) spec.set_recipe(a.recipe.value);
  if (a.seed.set()) spec.set_seed(a.seed.value);
  if (a.selection_metric.set()) {
    spec.set_selection_metric(a.selection_metric.value);
  }
  if (a.label_smoothing.set()) {
    spec.set_label_smoothing(a.label_smoothing.value);
  }
  if (a.class_weights.set()) spec.set_class_weights(a.class_weights.value);
  if (a.top_k.set()) spec.set_top_k(a.top_k.value);
  if (a.replicas.set()) spec.set_replicas(a.replicas.value);
  if (a.min_replicas.set()) spec.set_min_replicas(a.min_replicas.value);

  ApplyModelFlags(a, *spec.mutable_model());
  if (kind == v1::JOB_KIND_FINE_TUNE && spec.model().ByteSizeLong() == 0) {
    spec.clear_model();
  }
  ApplyStageFlags(a, spec);
  if (a.id.set()) request.set_job_id(a.id.value);
  return request;
}

int SubmitJob(const Globals& g, const SpecArgs& args, v1::JobKind kind) {
  absl::StatusOr<v1::CreateJobRequest> request = BuildRequest(args, kind);
  if (!request.ok()) {
    std::fprintf(stderr, "transferctl: %s\n",
                 std::string(request.status().message()).c_str());
    return kUsage;
  }
  auto client = Connect(g);
  absl::StatusOr<v1::Job> job = client->CreateJob(*request);
  if (!job.ok()) return Fail(job.status());
  if (args.detach) {
    if (g.json) {
      PrintJson(*job);
    } else {
      std::cout << absl::StrFormat(
          "%s %s; follow it with: transferctl jobs watch %s\n", job->name(),
          StateText(job->state()), job->name());
    }
    return kOk;
  }
  const v1::JobSpec& r = job->resolved_spec();
  if (g.json) {
    std::fprintf(stderr, "job %s created\n", job->name().c_str());
  } else {
    std::string what = KindText(r.kind());
    const std::string model =
        kind == v1::JOB_KIND_FINE_TUNE ? r.base_model() : r.model().backbone();
    std::cout
        << absl::StrFormat(
               "job %s: %s %s on %s, %d stage%s, %d epochs (Ctrl-C detaches)\n",
               job->name(), what, model, r.dataset(), r.stages_size(),
               r.stages_size() == 1 ? "" : "s", TotalEpochs(*job))
        << std::flush;
  }
  return FollowJob(g, *client, *job, 0);
}

}  // namespace

void AddTrainCommands(CLI::App& app, const Globals& g, int& rc) {
  auto train_args = std::make_shared<SpecArgs>();
  CLI::App* train = app.add_subcommand(
      "train", "Train a model on a dataset and follow it like Keras' fit()");
  train->add_option("DATASET", train_args->dataset, "ID or datasets/ID")
      ->required();
  AddModelFlags(train, *train_args);
  AddStageFlags(train, *train_args);
  train->footer(kTrainHelp);
  train->callback([&g, &rc, train_args] {
    rc = SubmitJob(g, *train_args, v1::JOB_KIND_TRAIN);
  });

  auto tune_args = std::make_shared<SpecArgs>();
  CLI::App* finetune = app.add_subcommand(
      "finetune", "Continue training a model (a new model results)");
  finetune
      ->add_option("MODEL", tune_args->model, "ID, models/ID or aliases/NAME")
      ->required();
  finetune->add_option("DATASET", tune_args->dataset, "ID or datasets/ID")
      ->required();
  AddStageFlags(finetune, *tune_args);
  finetune->footer(kFinetuneHelp);
  finetune->callback([&g, &rc, tune_args] {
    rc = SubmitJob(g, *tune_args, v1::JOB_KIND_FINE_TUNE);
  });
}

}  // namespace transferd::client::commands
