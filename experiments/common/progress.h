// Training progress: a live one-line bar on a terminal (epoch, batch, ETA, loss, accuracy,
// items/s), or nothing per batch when quiet / not a terminal (the caller prints one line per
// epoch then).
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

namespace stgnn::experiments {

class ProgressBar {
 public:
  // live = show the bar (false with --quiet or when stdout is not a terminal).
  ProgressBar(bool live, std::string label, int64_t total_batches);
  // Called after each batch with running averages over the epoch so far.
  void update(int64_t batches_done, double loss, double accuracy, double items_per_s);
  // Clears the bar line (before an epoch summary is printed).
  void finish();

 private:
  bool live_;
  std::string label_;
  int64_t total_;
  std::chrono::steady_clock::time_point start_, last_draw_;
};

// True when stdout is a terminal.
bool stdout_is_terminal();
// "1h02m", "3m05s", "12s".
std::string format_duration(double seconds);

}  // namespace stgnn::experiments
