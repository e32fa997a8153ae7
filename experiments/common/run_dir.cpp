#include "common/run_dir.h"

#include <algorithm>
#include <cmath>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "autograd/atomic_file.h"
#include "autograd/error.h"

namespace stgnn::experiments {

RunDirectory::RunDirectory(std::string path) : path_(std::move(path)) {
  std::error_code error;
  std::filesystem::create_directories(path_, error);
  if (error) throw IoError("cannot create run directory '" + path_ + "': " + error.message());
  // Probe writability now, so a bad --out fails before any training.
  write_file_atomic(file(".write-test"), "");
  std::filesystem::remove(file(".write-test"), error);
}

std::string RunDirectory::default_path(const std::string& program) {
  const std::time_t now = std::time(nullptr);
  std::tm utc{};
  gmtime_r(&now, &utc);
  char stamp[32];
  std::strftime(stamp, sizeof(stamp), "%Y%m%d-%H%M%S", &utc);
  return "runs/" + program + "-" + stamp;
}

void RunDirectory::write_config(const nlohmann::json& config) const {
  write_file_atomic(file("config.json"), config.dump(2) + "\n");
}

void RunDirectory::write_results(const nlohmann::json& results) const {
  write_file_atomic(file("results.json"), results.dump(2) + "\n");
}

void RunDirectory::write_text(const std::string& name, const std::string& content) const {
  write_file_atomic(file(name), content);
}

namespace {

std::string metrics_csv(const std::vector<EpochMetrics>& rows) {
  std::ostringstream out;
  out << "epoch,train_loss,train_acc,val_loss,val_acc,seconds,items_per_s\n";
  out.precision(6);
  for (const EpochMetrics& r : rows) {
    out << r.epoch << ',' << r.train_loss << ',' << r.train_acc << ',' << r.val_loss << ','
        << r.val_acc << ',' << r.seconds << ',' << r.items_per_s << '\n';
  }
  return out.str();
}

}  // namespace

void RunDirectory::add_metrics(const EpochMetrics& row) {
  metrics_.push_back(row);
  write_file_atomic(file("metrics.csv"), metrics_csv(metrics_));
  write_file_atomic(file("curves.svg"), render_curves_svg(metrics_, path_));
}

void RunDirectory::load_metrics(int64_t first_new_epoch) {
  metrics_.clear();
  std::ifstream in(file("metrics.csv"));
  if (!in) return;
  std::string line;
  std::getline(in, line);  // header
  while (std::getline(in, line)) {
    std::replace(line.begin(), line.end(), ',', ' ');
    std::istringstream fields(line);
    EpochMetrics r;
    if (fields >> r.epoch >> r.train_loss >> r.train_acc >> r.val_loss >> r.val_acc >> r.seconds >>
        r.items_per_s) {
      if (r.epoch < first_new_epoch) metrics_.push_back(r);
    }
  }
}

// ---------------------------------------------------------------- SVG

namespace {

struct Series {
  std::string name, colour;
  std::vector<double> values;
  bool dashed;
};

// Text for SVG content and attribute values (run paths may hold &, < or quotes).
std::string xml_escape(const std::string& text) {
  std::string out;
  for (char c : text) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '\'':
        out += "&apos;";
        break;
      case '"':
        out += "&quot;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

// A step of 1, 2, (2.5 when allowed) or 5 x 10^k that cuts `span` into about `intervals` parts.
double nice_step(double span, int intervals, bool allow_quarter) {
  const double raw = span / intervals;
  const double magnitude = std::pow(10.0, std::floor(std::log10(raw)));
  const double f = raw / magnitude;
  const double nice = f <= 1 ? 1 : f <= 2 ? 2 : f <= 2.5 && allow_quarter ? 2.5 : f <= 5 ? 5 : 10;
  return nice * magnitude;
}

// A tick value with as many decimals as the step needs ("0.25", "40").
std::string tick_label(double v, double step) {
  int decimals = 0;
  while (decimals < 6 && std::fabs(step * std::pow(10.0, decimals) -
                                   std::round(step * std::pow(10.0, decimals))) > 1e-6)
    ++decimals;
  char buffer[32];
  std::snprintf(buffer, sizeof(buffer), "%.*f", decimals, std::fabs(v) < step * 1e-6 ? 0.0 : v);
  return buffer;
}

// One panel: axes, ticks at round values, polylines with point markers, legend, inside a
// w x h box at (x0, y0). [floor, ceiling] bounds the value axis (accuracy: 0..100).
void draw_panel(std::ostringstream& svg, double x0, double y0, double w, double h,
                const std::string& label, const std::vector<int64_t>& epochs,
                const std::vector<Series>& series, bool legend_at_bottom, double floor = -INFINITY,
                double ceiling = INFINITY) {
  const double left = x0 + 55, right = x0 + w - 15, top = y0 + 30, bottom = y0 + h - 40;
  double lo = INFINITY, hi = -INFINITY;
  size_t points = 0;
  for (const Series& s : series) {
    for (double v : s.values) {
      if (std::isfinite(v)) {
        lo = std::min(lo, v);
        hi = std::max(hi, v);
        ++points;
      }
    }
  }
  if (!std::isfinite(lo)) lo = 0, hi = 1;
  if (hi - lo < 1e-9) {
    const double half = std::max(1e-3, 0.05 * std::fabs(lo));
    lo -= half;
    hi += half;
  }
  const double step = nice_step(hi - lo, 4, true);
  lo = std::max(floor, std::floor(lo / step) * step);
  hi = std::min(ceiling, std::ceil(hi / step) * step);
  const int64_t first = epochs.empty() ? 0 : epochs.front(),
                last = epochs.empty() ? 1 : std::max(epochs.back(), first + 1);
  const auto px = [&](double e) {
    return left + (right - left) * (e - first) / static_cast<double>(last - first);
  };
  const auto py = [&](double v) { return bottom - (bottom - top) * (v - lo) / (hi - lo); };
  svg << "<text x='" << (left + right) / 2 << "' y='" << y0 + 18
      << "' text-anchor='middle' font-size='14'>" << xml_escape(label) << "</text>\n";
  svg << "<rect x='" << left << "' y='" << top << "' width='" << right - left << "' height='"
      << bottom - top << "' fill='none' stroke='#444'/>\n";
  for (double v = lo; v <= hi + step * 1e-6; v += step) {
    svg << "<line x1='" << left << "' x2='" << right << "' y1='" << py(v) << "' y2='" << py(v)
        << "' stroke='#ddd'/>\n<text x='" << left - 5 << "' y='" << py(v) + 4
        << "' text-anchor='end' font-size='11'>" << tick_label(v, step) << "</text>\n";
  }
  const int64_t epoch_step = std::max<int64_t>(
      1, static_cast<int64_t>(std::llround(
             nice_step(static_cast<double>(std::max<int64_t>(1, last - first)), 8, false))));
  // Ticks at multiples of the step, and at the first epoch unless a round tick is too close.
  const int64_t next_round = (first + epoch_step - 1) / epoch_step * epoch_step;
  for (int64_t e = first; e <= last; ++e) {
    const bool round = e % epoch_step == 0;
    if (!round && !(e == first && 2 * (next_round - first) >= epoch_step)) continue;
    svg << "<text x='" << px(static_cast<double>(e)) << "' y='" << bottom + 15
        << "' text-anchor='middle' font-size='11'>" << e << "</text>\n";
  }
  svg << "<text x='" << (left + right) / 2 << "' y='" << bottom + 32
      << "' text-anchor='middle' font-size='12'>epoch</text>\n";
  const bool markers = points <= 120;
  for (const Series& s : series) {
    svg << "<polyline fill='none' stroke='" << s.colour << "' stroke-width='2'"
        << (s.dashed ? " stroke-dasharray='6,4'" : "") << " points='";
    for (size_t i = 0; i < s.values.size() && i < epochs.size(); ++i) {
      if (std::isfinite(s.values[i]))
        svg << px(static_cast<double>(epochs[i])) << ',' << py(s.values[i]) << ' ';
    }
    svg << "'/>\n";
    // Markers show every epoch, and a run of one epoch (a polyline of one point is invisible).
    for (size_t i = 0; markers && i < s.values.size() && i < epochs.size(); ++i) {
      if (std::isfinite(s.values[i]))
        svg << "<circle cx='" << px(static_cast<double>(epochs[i])) << "' cy='" << py(s.values[i])
            << "' r='2.5' fill='" << s.colour << "'/>\n";
    }
  }
  // The legend on a translucent white box, so curves passing under it stay readable; in the
  // corner the curves usually leave free (loss falls, accuracy rises).
  const double legend_height = 16.0 * static_cast<double>(series.size()) + 6;
  const double legend_top = legend_at_bottom ? bottom - 4 - legend_height : top + 4;
  svg << "<rect x='" << right - 102 << "' y='" << legend_top << "' width='96' height='"
      << legend_height << "' fill='white' fill-opacity='0.85' stroke='#bbb'/>\n";
  int legend = 0;
  for (const Series& s : series) {
    const double ly = legend_top + 14 + 16 * legend++;
    svg << "<line x1='" << right - 95 << "' x2='" << right - 75 << "' y1='" << ly - 4 << "' y2='"
        << ly - 4 << "' stroke='" << s.colour << "' stroke-width='2'"
        << (s.dashed ? " stroke-dasharray='6,4'" : "") << "/><text x='" << right - 70 << "' y='"
        << ly << "' font-size='11'>" << xml_escape(s.name) << "</text>\n";
  }
}

}  // namespace

std::string render_curves_svg(const std::vector<EpochMetrics>& rows, const std::string& title) {
  std::vector<int64_t> epochs;
  Series train_loss{"train", "#1f77b4", {}, false}, val_loss{"validation", "#d62728", {}, true};
  Series train_acc{"train", "#1f77b4", {}, false}, val_acc{"validation", "#d62728", {}, true};
  for (const EpochMetrics& r : rows) {
    epochs.push_back(r.epoch);
    train_loss.values.push_back(r.train_loss);
    val_loss.values.push_back(r.val_loss);
    train_acc.values.push_back(100.0 * r.train_acc);
    val_acc.values.push_back(100.0 * r.val_acc);
  }
  std::ostringstream svg;
  svg << "<svg xmlns='http://www.w3.org/2000/svg' width='900' height='380' "
         "font-family='sans-serif'>\n"
      << "<rect width='100%' height='100%' fill='white'/>\n<text x='450' y='16' "
         "text-anchor='middle' font-size='13'>"
      << xml_escape(title) << "</text>\n";
  draw_panel(svg, 0, 20, 450, 360, "loss", epochs, {train_loss, val_loss}, false, 0.0);
  draw_panel(svg, 450, 20, 450, 360, "accuracy (%)", epochs, {train_acc, val_acc}, true, 0.0,
             100.0);
  svg << "</svg>\n";
  return svg.str();
}

}  // namespace stgnn::experiments
