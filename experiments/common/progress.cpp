#include "common/progress.h"

#include <unistd.h>

#include <cmath>
#include <cstdio>

namespace stgnn::experiments {

bool stdout_is_terminal() {
  return ::isatty(STDOUT_FILENO) == 1;
}

std::string format_duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "?";
  const int64_t s = static_cast<int64_t>(std::llround(seconds));
  char buffer[32];
  if (s >= 3600) {
    std::snprintf(buffer, sizeof(buffer), "%lldh%02lldm", static_cast<long long>(s / 3600),
                  static_cast<long long>(s % 3600 / 60));
  } else if (s >= 60) {
    std::snprintf(buffer, sizeof(buffer), "%lldm%02llds", static_cast<long long>(s / 60),
                  static_cast<long long>(s % 60));
  } else {
    std::snprintf(buffer, sizeof(buffer), "%llds", static_cast<long long>(s));
  }
  return buffer;
}

ProgressBar::ProgressBar(bool live, std::string label, int64_t total_batches)
    : live_(live),
      label_(std::move(label)),
      total_(total_batches),
      start_(std::chrono::steady_clock::now()) {
  last_draw_ = start_ - std::chrono::seconds(1);
}

void ProgressBar::update(int64_t done, double loss, double accuracy, double items_per_s) {
  if (!live_) return;
  const auto now = std::chrono::steady_clock::now();
  // Redraw at most 10 times a second, and always on the last batch.
  if (done < total_ && now - last_draw_ < std::chrono::milliseconds(100)) return;
  last_draw_ = now;
  const double elapsed = std::chrono::duration<double>(now - start_).count();
  const double eta =
      done > 0 ? elapsed * static_cast<double>(total_ - done) / static_cast<double>(done) : NAN;
  constexpr int kWidth = 24;
  const int filled = total_ > 0 ? static_cast<int>(kWidth * done / total_) : 0;
  std::string bar(static_cast<size_t>(filled), '#');
  bar.resize(kWidth, '.');
  std::printf("\r%s [%s] %lld/%lld  eta %s  loss %.4f  acc %.1f%%  %.1f items/s   ", label_.c_str(),
              bar.c_str(), static_cast<long long>(done), static_cast<long long>(total_),
              format_duration(eta).c_str(), loss, 100.0 * accuracy, items_per_s);
  std::fflush(stdout);
}

void ProgressBar::finish() {
  if (!live_) return;
  std::printf("\r\033[2K");
  std::fflush(stdout);
}

}  // namespace stgnn::experiments
