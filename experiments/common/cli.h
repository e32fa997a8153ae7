// The flags every experiment program shares (shared/design/cli.md), and --config FILE.json:
// a JSON object whose keys are flag names without the dashes ("batch-size": 32); flags given
// on the command line win over the file; unknown keys (such as the bookkeeping fields of a
// saved config.json) are ignored, so `--config runs/x/config.json` replays a run.
#pragma once

#include <CLI/CLI.hpp>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace stgnn::experiments {

struct CommonFlags {
  std::string out;
  int64_t epochs = 10;
  int64_t batch_size = 32;
  double lr = 1e-3;
  double weight_decay = 0.0;
  uint64_t seed = 1;
  int threads = 0;  // 0 = all cores
  std::string resume;
  std::string eval;
  std::string config;
  bool quiet = false;
};

// Adds --out, --epochs, --batch-size, --lr, --weight-decay, --seed, --threads, --resume,
// --eval, --config, --quiet with the current values of `flags` as defaults.
void add_common_flags(CLI::App& app, CommonFlags& flags);

// Their values as JSON, keyed by flag name.
nlohmann::json common_flags_json(const CommonFlags& flags);

// Parses the command line into `app`; --resume DIR without --config reads DIR/config.json for
// every flag not given on the command line. Returns -1 when the program should go on, else
// the exit code to return (0 after --help, kExitBadInput after a parse error; CLI11 has
// printed the message).
int parse_command_line(CLI::App& app, int argc, char** argv);

// True when `flag` (e.g. "--labels") is on the command line itself, as "--labels X" or
// "--labels=X", rather than filled in from --config.
bool given_on_command_line(int argc, char** argv, const std::string& flag);

// "32,64,128" -> {32, 64, 128}. ValueError naming `flag` unless every item is a positive
// integer.
std::vector<int64_t> parse_positive_list(const std::string& text, const std::string& flag);
// {32, 64, 128} -> "32,64,128".
std::string join_list(const std::vector<int64_t>& values);
// "a,b" -> {"a", "b"}. ValueError naming `flag` and the allowed names unless every item is
// one of `allowed`, or when the list is empty or repeats a name.
std::vector<std::string> parse_name_list(const std::string& text,
                                         const std::vector<std::string>& allowed,
                                         const std::string& flag);
// {"a", "b"} -> "a,b".
std::string join_names(const std::vector<std::string>& names);

// Applies --threads (0 = all cores) to OpenMP and returns the count in use.
int apply_threads(int threads);

// The exit codes of cli.md.
enum ExitCode { kExitOk = 0, kExitBadInput = 1, kExitDiverged = 2, kExitInterrupted = 130 };

// Peak resident memory of this process so far, in MiB.
double peak_memory_mib();

}  // namespace stgnn::experiments
