#include "common/cli.h"

#include <sys/resource.h>

#include <algorithm>
#include <fstream>
#include <sstream>

#include "autograd/error.h"
#include "autograd/parallel.h"

namespace stgnn::experiments {

namespace {

// CLI11 configuration reader for JSON objects (CLI11 ships TOML/INI only).
class JsonConfig : public CLI::Config {
 public:
  std::string to_config(const CLI::App* app, bool default_also, bool, std::string) const override {
    nlohmann::json out = nlohmann::json::object();
    for (const CLI::Option* option : app->get_options()) {
      if (option->get_lnames().empty() || option->get_configurable() == false) continue;
      const std::string name = option->get_lnames().front();
      if (option->count() > 0) {
        out[name] = option->as<std::string>();
      } else if (default_also && !option->get_default_str().empty()) {
        out[name] = option->get_default_str();
      }
    }
    return out.dump(2);
  }

  std::vector<CLI::ConfigItem> from_config(std::istream& input) const override {
    nlohmann::json json;
    try {
      input >> json;
    } catch (const nlohmann::json::exception& e) {
      throw CLI::ConversionError(std::string("--config: not valid JSON (") + e.what() + ")");
    }
    if (!json.is_object()) throw CLI::ConversionError("--config: the file must hold a JSON object");
    std::vector<CLI::ConfigItem> items;
    for (const auto& [key, value] : json.items()) {
      CLI::ConfigItem item;
      item.name = key;
      if (value.is_boolean()) {
        item.inputs = {value.get<bool>() ? "true" : "false"};
      } else if (value.is_string()) {
        item.inputs = {value.get<std::string>()};
      } else if (value.is_number()) {
        item.inputs = {value.dump()};
      } else if (value.is_array()) {
        for (const auto& element : value)
          item.inputs.push_back(element.is_string() ? element.get<std::string>() : element.dump());
      } else {
        continue;  // objects and nulls are bookkeeping, not flags
      }
      items.push_back(std::move(item));
    }
    return items;
  }
};

}  // namespace

void add_common_flags(CLI::App& app, CommonFlags& f) {
  app.config_formatter(std::make_shared<JsonConfig>());
  app.allow_config_extras(CLI::config_extras_mode::ignore);
  app.set_config("--config", "",
                 "read flags from a JSON file (keys = flag names); command-line flags win");
  app.add_option("--out", f.out, "run directory (default runs/<program>-<UTC timestamp>)");
  app.add_option("--epochs", f.epochs, "training epochs")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--batch-size", f.batch_size, "items per batch")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--lr", f.lr, "peak learning rate")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--weight-decay", f.weight_decay, "weight decay")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  app.add_option("--seed", f.seed,
                 "one seed for data order, initialisation, dropout and generators")
      ->capture_default_str();
  app.add_option("--threads", f.threads, "OpenMP threads (0 = all cores)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  app.add_option("--resume", f.resume,
                 "continue the run in this directory from its last checkpoint")
      ->check(CLI::ExistingDirectory);
  app.add_option("--eval", f.eval,
                 "evaluate this checkpoint only (no training); writes predictions")
      ->check(CLI::ExistingFile);
  app.add_flag("--quiet", f.quiet, "no progress bar (automatic when stdout is not a terminal)");
}

nlohmann::json common_flags_json(const CommonFlags& f) {
  return {{"epochs", f.epochs}, {"batch-size", f.batch_size},
          {"lr", f.lr},         {"weight-decay", f.weight_decay},
          {"seed", f.seed},     {"threads", f.threads},
          {"quiet", f.quiet}};
}

int parse_command_line(CLI::App& app, int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  for (size_t i = 0; i + 1 < args.size(); ++i) {
    if (args[i] == "--resume" && std::find(args.begin(), args.end(), "--config") == args.end()) {
      args.push_back("--config");
      args.push_back(args[i + 1] + "/config.json");
      break;
    }
  }
  std::reverse(args.begin(), args.end());  // CLI11 takes a reversed vector
  try {
    app.parse(args);
  } catch (const CLI::ParseError& e) {
    const int code = app.exit(e);
    return code == 0 ? kExitOk : kExitBadInput;
  }
  return -1;
}

bool given_on_command_line(int argc, char** argv, const std::string& flag) {
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == flag || arg.rfind(flag + "=", 0) == 0) return true;
  }
  return false;
}

std::vector<int64_t> parse_positive_list(const std::string& text, const std::string& flag) {
  std::vector<int64_t> values;
  std::stringstream list(text);
  for (std::string item; std::getline(list, item, ',');) {
    size_t used = 0;
    int64_t v = 0;
    try {
      v = std::stoll(item, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used == 0 || used != item.size() || v <= 0) {
      throw ValueError(flag + ": '" + text +
                       "' is not a comma-separated list of positive integers");
    }
    values.push_back(v);
  }
  if (values.empty()) throw ValueError(flag + ": empty list");
  return values;
}

std::string join_list(const std::vector<int64_t>& values) {
  std::string s;
  for (size_t i = 0; i < values.size(); ++i)
    s += (i ? "," : "") + std::to_string(values[i]);
  return s;
}

std::vector<std::string> parse_name_list(const std::string& text,
                                         const std::vector<std::string>& allowed,
                                         const std::string& flag) {
  std::vector<std::string> names;
  std::stringstream list(text);
  for (std::string item; std::getline(list, item, ',');) {
    if (std::find(allowed.begin(), allowed.end(), item) == allowed.end()) {
      throw ValueError(flag + ": unknown name '" + item + "' (known: " + join_names(allowed) + ")");
    }
    if (std::find(names.begin(), names.end(), item) != names.end()) {
      throw ValueError(flag + ": '" + item + "' appears twice");
    }
    names.push_back(item);
  }
  if (names.empty()) throw ValueError(flag + ": empty list");
  return names;
}

std::string join_names(const std::vector<std::string>& names) {
  std::string s;
  for (size_t i = 0; i < names.size(); ++i)
    s += (i ? "," : "") + names[i];
  return s;
}

int apply_threads(int threads) {
  if (threads > 0) set_num_threads(threads);
  return num_threads();
}

double peak_memory_mib() {
  struct rusage usage {};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<double>(usage.ru_maxrss) / 1024.0;  // ru_maxrss is in KiB on Linux
}

}  // namespace stgnn::experiments
