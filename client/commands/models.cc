// transferctl models: the registry's ls, show and rm, aliases (alias,
// unalias, aliases), and archives (export, import).
#include <cstdint>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include <google/protobuf/struct.pb.h>

#include "absl/status/statusor.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"
#include "client/client.h"
#include "client/commands/commands.h"
#include "client/commands/common.h"
#include "client/commands/output.h"

namespace transferd::client::commands {
namespace {

std::string ValAccuracy(const v1::Model& m) {
  for (const v1::Evaluation& e : m.evaluations()) {
    if (e.split() == "validation") return absl::StrFormat("%.4f", e.accuracy());
  }
  return "-";
}

int ModelsList(const Globals& g) {
  auto client = Connect(g);
  v1::ListModelsRequest request;
  v1::ListModelsResponse all;
  do {
    absl::StatusOr<v1::ListModelsResponse> page = client->ListModels(request);
    if (!page.ok()) return Fail(page.status());
    for (v1::Model& m : *page->mutable_models()) {
      *all.add_models() = std::move(m);
    }
    request.set_page_token(page->next_page_token());
  } while (!request.page_token().empty());
  if (g.json) {
    PrintJson(all);
    return kOk;
  }
  std::cout << absl::StrFormat("%-28s %-20s %-14s %6s %8s %8s %-21s %s\n",
                               "NAME", "DISPLAY NAME", "BACKBONE", "INPUT",
                               "CLASSES", "VAL_ACC", "CREATED", "SOURCE");
  for (const v1::Model& m : all.models()) {
    std::cout << absl::StrFormat(
        "%-28s %-20s %-14s %6d %8d %8s %-21s %s\n", m.name(), m.display_name(),
        m.spec().backbone(), m.spec().input_size(), m.class_count(),
        ValAccuracy(m), When(m.create_time()),
        m.source_job().empty() ? "-" : m.source_job());
  }
  return kOk;
}

int ModelsShow(const Globals& g, const std::string& name) {
  auto client = Connect(g);
  absl::StatusOr<v1::Model> model =
      client->GetModel(transferd::client::ModelName(name));
  if (!model.ok()) return Fail(model.status());
  if (g.json) {
    PrintJson(*model);
    return kOk;
  }
  const v1::Model& m = *model;
  std::string title = m.name();
  if (!m.display_name().empty()) {
    absl::StrAppend(&title, " (\"", m.display_name(), "\")");
  }
  std::cout << absl::StrFormat("model       %s\n", title);
  std::cout << absl::StrFormat("created     %s\n", When(m.create_time()));
  if (!m.source_job().empty()) {
    std::cout << absl::StrFormat("job         %s\n", m.source_job());
  }
  if (!m.parent().empty()) {
    std::cout << absl::StrFormat("parent      %s\n", m.parent());
  }
  std::cout << absl::StrFormat("network     %s\n", ModelSpecText(m.spec()));
  std::cout << absl::StrFormat("classes     %d: %s\n", m.classes_size(),
                               absl::StrJoin(m.classes(), ", "));
  const v1::Preprocessing& p = m.preprocessing();
  std::string mode = v1::Preprocessing::Mode_Name(p.mode());
  absl::string_view mode_view = mode;
  absl::ConsumePrefix(&mode_view, "MODE_");
  std::cout << absl::StrFormat(
      "preprocess  %s, %s, %d px, scale %g, mean [%s], std [%s]\n",
      absl::AsciiStrToLower(std::string(mode_view)), p.channel_order(),
      p.input_size(), p.scale(), absl::StrJoin(p.mean(), ", "),
      absl::StrJoin(p.std(), ", "));
  if (m.best_epoch() > 0) {
    std::cout << absl::StrFormat("best epoch  %d of %d\n", m.best_epoch(),
                                 m.history_size());
  }
  std::cout << absl::StrFormat("size        %s, %s parameters\n",
                               HumanBytes(m.size_bytes()),
                               Thousands(m.parameters()));
  if (!m.aliases().empty()) {
    std::cout << absl::StrFormat("aliases     %s\n",
                                 absl::StrJoin(m.aliases(), ", "));
  }
  PrintHistory(m.history());
  PrintEvaluations(
      m.evaluations(),
      std::vector<std::string>(m.classes().begin(), m.classes().end()));
  return kOk;
}

int ModelsRemove(const Globals& g, const std::string& name) {
  auto client = Connect(g);
  const std::string full = transferd::client::ModelName(name);
  return PrintDeleted(g, client->DeleteModel(full), full);
}

int ModelsAlias(const Globals& g, const std::string& alias,
                const std::string& model) {
  auto client = Connect(g);
  absl::StatusOr<v1::Alias> set = client->SetAlias(
      transferd::client::AliasName(alias), transferd::client::ModelName(model));
  if (!set.ok()) return Fail(set.status());
  if (g.json) {
    PrintJson(*set);
    return kOk;
  }
  std::cout << absl::StrFormat("%s -> %s\n", set->name(), set->model());
  return kOk;
}

int ModelsUnalias(const Globals& g, const std::string& alias) {
  auto client = Connect(g);
  const std::string full = transferd::client::AliasName(alias);
  return PrintDeleted(g, client->DeleteAlias(full), full);
}

int ModelsAliases(const Globals& g) {
  auto client = Connect(g);
  v1::ListAliasesRequest request;
  v1::ListAliasesResponse all;
  do {
    absl::StatusOr<v1::ListAliasesResponse> page = client->ListAliases(request);
    if (!page.ok()) return Fail(page.status());
    for (v1::Alias& a : *page->mutable_aliases()) {
      *all.add_aliases() = std::move(a);
    }
    request.set_page_token(page->next_page_token());
  } while (!request.page_token().empty());
  if (g.json) {
    PrintJson(all);
    return kOk;
  }
  std::cout << absl::StrFormat("%-28s %-28s %s\n", "ALIAS", "MODEL", "UPDATED");
  for (const v1::Alias& a : all.aliases()) {
    std::cout << absl::StrFormat("%-28s %-28s %s\n", a.name(), a.model(),
                                 When(a.update_time()));
  }
  return kOk;
}

int ModelsExport(const Globals& g, const std::string& name,
                 const std::string& output) {
  auto client = Connect(g);
  absl::StatusOr<transferd::client::ExportResult> result =
      client->ExportModel(transferd::client::ModelName(name), output);
  if (!result.ok()) return Fail(result.status());
  if (g.json) {
    google::protobuf::Struct out;
    auto& fields = *out.mutable_fields();
    fields["model"].set_string_value(transferd::client::ModelName(name));
    fields["path"].set_string_value(result->path.string());
    fields["bytes"].set_number_value(static_cast<double>(result->bytes));
    fields["sha256"].set_string_value(result->sha256);
    PrintJson(out);
    return kOk;
  }
  std::cout << absl::StrFormat("%s: %s (%d bytes), sha256 %s (verified)\n",
                               result->path.string(), HumanBytes(result->bytes),
                               result->bytes, result->sha256);
  return kOk;
}

int ModelsImport(const Globals& g, const std::string& file,
                 const std::string& id, const std::string& display_name) {
  auto client = Connect(g);
  absl::StatusOr<v1::Model> model = client->ImportModel(file, id, display_name);
  if (!model.ok()) return Fail(model.status());
  if (g.json) {
    PrintJson(*model);
    return kOk;
  }
  std::cout << absl::StrFormat(
      "imported %s as %s (%s, %d classes, %s parameters)\n", file,
      model->name(),
      model->spec().backbone().empty() ? std::string("model")
                                       : model->spec().backbone(),
      model->classes_size(), Thousands(model->parameters()));
  return kOk;
}

// The arguments of the models subcommands; MODEL, ALIAS and FILE are shared.
struct ModelsArgs {
  std::string model_name;
  std::string alias_name;
  std::string archive_file;
  std::string import_id;
  std::string import_name;
};

void AddModelsAliasCommands(CLI::App* models, const Globals& g, int& rc,
                            const std::shared_ptr<ModelsArgs>& args) {
  CLI::App* models_alias = models->add_subcommand(
      "alias", "Point an alias at a model (creates it, or moves it)");
  models_alias->add_option("ALIAS", args->alias_name, "NAME or aliases/NAME")
      ->required();
  models_alias->add_option("MODEL", args->model_name, "ID or models/ID")
      ->required();
  models_alias->footer("Example: transferctl models alias catdog cats-vgg16");
  models_alias->callback([&g, &rc, args] {
    rc = ModelsAlias(g, args->alias_name, args->model_name);
  });
  CLI::App* models_unalias =
      models->add_subcommand("unalias", "Delete an alias");
  models_unalias->add_option("ALIAS", args->alias_name, "NAME or aliases/NAME")
      ->required();
  models_unalias->footer("Example: transferctl models unalias catdog");
  models_unalias->callback(
      [&g, &rc, args] { rc = ModelsUnalias(g, args->alias_name); });
  models->add_subcommand("aliases", "List aliases and the models they point at")
      ->footer("Example: transferctl --json models aliases")
      ->callback([&g, &rc] { rc = ModelsAliases(g); });
}

void AddModelsArchiveCommands(CLI::App* models, const Globals& g, int& rc,
                              const std::shared_ptr<ModelsArgs>& args) {
  CLI::App* models_export = models->add_subcommand(
      "export",
      "Download a model as a tar archive (model.json + weights.safetensors)");
  models_export
      ->add_option("MODEL", args->model_name, "ID, models/ID or aliases/NAME")
      ->required();
  models_export
      ->add_option("-o,--output", args->archive_file,
                   "Archive file to write (FILE.tar)")
      ->required();
  models_export->footer(
      "The archive's SHA-256 is checked against the server's before the file "
      "is\n"
      "renamed into place.\n"
      "Example: transferctl models export aliases/catdog -o catdog.tar");
  models_export->callback([&g, &rc, args] {
    rc = ModelsExport(g, args->model_name, args->archive_file);
  });
  CLI::App* models_import = models->add_subcommand(
      "import", "Register a model from an archive written by `models export`");
  models_import->add_option("FILE", args->archive_file, "Archive (FILE.tar)")
      ->required()
      ->check(CLI::ExistingFile);
  models_import->add_option(
      "--id", args->import_id,
      "Model id, lowercase [a-z0-9-] (default: the archive's when free, "
      "else the server chooses)");
  models_import->add_option("--name", args->import_name,
                            "Display name (default: the archive's)");
  models_import->footer(
      "Example: transferctl models import catdog.tar --id catdog-v2");
  models_import->callback([&g, &rc, args] {
    rc =
        ModelsImport(g, args->archive_file, args->import_id, args->import_name);
  });
}

}  // namespace

void AddModelsCommands(CLI::App& app, const Globals& g, int& rc) {
  CLI::App* models = app.add_subcommand("models", "The model registry");
  models->require_subcommand(1);
  models->add_subcommand("ls", "List models, newest first")
      ->footer("Example: transferctl --json models ls")
      ->callback([&g, &rc] { rc = ModelsList(g); });
  auto args = std::make_shared<ModelsArgs>();
  CLI::App* models_show = models->add_subcommand(
      "show",
      "Network, classes, preprocessing, history and evaluations of a model");
  models_show
      ->add_option("MODEL", args->model_name, "ID, models/ID or aliases/NAME")
      ->required();
  models_show->footer("Example: transferctl models show models/cats-vgg16");
  models_show->callback(
      [&g, &rc, args] { rc = ModelsShow(g, args->model_name); });
  CLI::App* models_rm = models->add_subcommand("rm", "Delete a model");
  models_rm->add_option("MODEL", args->model_name, "ID or models/ID")
      ->required();
  models_rm->footer("Example: transferctl models rm cats-vgg16");
  models_rm->callback(
      [&g, &rc, args] { rc = ModelsRemove(g, args->model_name); });
  AddModelsAliasCommands(models, g, rc, args);
  AddModelsArchiveCommands(models, g, rc, args);
}

}  // namespace transferd::client::commands
