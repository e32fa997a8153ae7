// The run directory every experiment program writes (see shared/design/cli.md):
//   config.json, metrics.csv, curves.svg, last.safetensors, best.safetensors, results.json,
//   predictions_<split>.csv / .json.
// Every file is written atomically, so a crash or kill never leaves a torn file behind.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace stgnn::experiments {

// One row of metrics.csv.
struct EpochMetrics {
  int64_t epoch = 0;
  double train_loss = 0, train_acc = 0, val_loss = 0, val_acc = 0;
  double seconds = 0, items_per_s = 0;
};

class RunDirectory {
 public:
  // Creates `path` (and parents); IoError naming it when that fails or it is not writable.
  explicit RunDirectory(std::string path);
  // The default location: runs/<program>-<UTC timestamp YYYYmmdd-HHMMSS>.
  static std::string default_path(const std::string& program);

  const std::string& path() const { return path_; }
  std::string file(const std::string& name) const { return path_ + "/" + name; }

  void write_config(const nlohmann::json& config) const;
  void write_results(const nlohmann::json& results) const;
  void write_text(const std::string& name, const std::string& content) const;

  // Appends a row and rewrites metrics.csv and curves.svg.
  void add_metrics(const EpochMetrics& row);
  // Reloads metrics.csv (for --resume), keeping rows with epoch < first_new_epoch.
  void load_metrics(int64_t first_new_epoch);
  const std::vector<EpochMetrics>& metrics() const { return metrics_; }

 private:
  std::string path_;
  std::vector<EpochMetrics> metrics_;
};

// An SVG with two panels (loss, accuracy) of train and validation curves per epoch.
std::string render_curves_svg(const std::vector<EpochMetrics>& rows, const std::string& title);

}  // namespace stgnn::experiments
