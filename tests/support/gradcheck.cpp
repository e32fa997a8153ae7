#include "support/gradcheck.h"

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <sstream>

namespace stgnn::testing {

namespace {

// L = sum(out * w) in double.
double weighted_sum(const Tensor& out, const Tensor& w) {
  const float* o = out.data();
  const float* p = w.data();
  double total = 0.0;
  for (int64_t i = 0; i < out.numel(); ++i)
    total += static_cast<double>(o[i]) * p[i];
  return total;
}

}  // namespace

namespace {

// Compares each tensor's analytic gradient with central differences of L = sum(run() * w).
void compare_with_differences(const std::function<Tensor()>& run, std::vector<Tensor>& tensors,
                              const Tensor& w, const GradCheckOptions& options, Rng& rng,
                              GradCheckResult& result) {
  int failures = 0;
  for (size_t k = 0; k < tensors.size(); ++k) {
    Tensor& x = tensors[k];
    const int64_t n = x.numel();
    const Tensor analytic = x.grad().defined() ? x.grad().copy() : Tensor::zeros(x.shape());
    std::vector<int64_t> picks;
    if (n <= options.max_checks_per_input) {
      for (int64_t i = 0; i < n; ++i)
        picks.push_back(i);
    } else {
      for (int64_t i = 0; i < options.max_checks_per_input; ++i)
        picks.push_back(rng.randint(0, n));
    }
    NoGradGuard no_grad;
    int64_t agreed = 0;
    std::string tensor_report;
    for (int64_t i : picks) {
      float* p = x.data() + i;
      const float saved = *p;
      const double got = analytic.data()[i];
      // Central difference at the step, and, if that disagrees and retries are on, at a
      // quarter of it: a model with ReLUs and max-pools has kinks, and a step that happens to
      // cross one is the difference's fault, not the gradient's. A wrong backward fails at
      // both steps.
      double numeric = 0.0, error = 0.0;
      bool ok = false;
      // Steps h, h/4 and h/100. The last is ~100x less likely to straddle a kink, but float
      // rounding in L grows as 1/h there, so it gets a 10x absolute and 5x relative tolerance.
      const float steps[] = {options.step, options.step * 0.25f, options.step * 0.01f};
      for (int attempt = 0; attempt < 3; ++attempt) {
        const float step = steps[attempt];
        const double loose_a = attempt == 2 ? 10.0 : 1.0, loose_r = attempt == 2 ? 5.0 : 1.0;
        *p = saved + step;
        const double plus = weighted_sum(run(), w);
        *p = saved - step;
        const double minus = weighted_sum(run(), w);
        *p = saved;
        numeric = (plus - minus) / (2.0 * step);
        error = std::fabs(got - numeric);
        if (error <= loose_a * options.atol + loose_r * options.rtol * std::fabs(numeric)) {
          ok = true;
          break;
        }
        if (!options.retry_smaller_step) break;
      }
      result.max_abs_error = std::max(result.max_abs_error, error);
      if (ok) {
        ++agreed;
      } else {
        std::ostringstream line;
        line << "tensor " << k << " " << shape_str(x.shape()) << " element " << i << ": analytic "
             << got << " numeric " << numeric << "\n";
        tensor_report += line.str();
      }
    }
    const double fraction =
        picks.empty() ? 1.0 : static_cast<double>(agreed) / static_cast<double>(picks.size());
    if (fraction < options.min_fraction_ok) {
      result.ok = false;
      if (failures++ < 8) {
        result.report += tensor_report;
        result.report += "tensor " + std::to_string(k) + ": " + std::to_string(agreed) + " of " +
                         std::to_string(picks.size()) + " elements agree\n";
      }
    }
  }
  if (result.checked > 0 &&
      static_cast<double>(result.agreed) <
          options.min_overall_fraction_ok * static_cast<double>(result.checked)) {
    result.ok = false;
    result.report += "overall: " + std::to_string(result.agreed) + " of " +
                     std::to_string(result.checked) + " elements agree\n";
  }
}

}  // namespace

GradCheckResult gradcheck(const TensorFn& f, const std::vector<Tensor>& inputs,
                          const GradCheckOptions& options) {
  GradCheckResult result;
  std::vector<Tensor> leaves;
  for (const Tensor& x : inputs) {
    Tensor leaf = x.copy();
    leaf.set_requires_grad(true);
    leaves.push_back(leaf);
  }
  Rng rng(options.seed);
  Tensor out = f(leaves);
  if (!out.requires_grad()) {
    result.ok = false;
    result.report = "output does not require grad";
    return result;
  }
  const Tensor w = randn(out.shape(), rng);
  out.backward(w);
  compare_with_differences([&]() { return f(leaves); }, leaves, w, options, rng, result);
  return result;
}

GradCheckResult gradcheck_parameters(const std::function<Tensor()>& f,
                                     const std::vector<Tensor>& parameters,
                                     const GradCheckOptions& options) {
  GradCheckResult result;
  std::vector<Tensor> tensors = parameters;
  for (Tensor& p : tensors)
    p.zero_grad();
  Rng rng(options.seed);
  Tensor out = f();
  const Tensor w = randn(out.shape(), rng);
  out.backward(w);
  compare_with_differences(f, tensors, w, options, rng, result);
  return result;
}

Tensor random_tensor(const Shape& shape, Rng& rng, float scale) {
  return randn(shape, rng, 0.0f, scale);
}

Tensor away_from_zero(const Shape& shape, Rng& rng, float gap) {
  Tensor t = randn(shape, rng);
  float* p = t.data();
  for (int64_t i = 0; i < t.numel(); ++i) {
    if (std::fabs(p[i]) < gap) p[i] = p[i] < 0 ? p[i] - gap : p[i] + gap;
  }
  return t;
}

Tensor distinct_values(const Shape& shape, Rng& rng, float gap) {
  // A random permutation of 0, gap, 2 gap, ... centred on zero: every pair differs by >= gap.
  Tensor t = Tensor::empty(shape);
  const int64_t n = t.numel();
  std::vector<int64_t> order(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i)
    order[static_cast<size_t>(i)] = i;
  rng.shuffle(order.begin(), order.end());
  for (int64_t i = 0; i < n; ++i) {
    t.data()[i] = (static_cast<float>(order[static_cast<size_t>(i)]) - 0.5f * n) * gap;
  }
  return t;
}

Tensor positive_tensor(const Shape& shape, Rng& rng, float lo, float hi) {
  return rand_uniform(shape, rng, lo, hi);
}

uint64_t fresh_seed() {
  if (const char* fixed = std::getenv("STGNN_TEST_SEED")) return std::strtoull(fixed, nullptr, 10);
  return static_cast<uint64_t>(
      std::chrono::high_resolution_clock::now().time_since_epoch().count());
}

std::string fixture_path(const std::string& relative) {
  return std::string(STGNN_SOURCE_DIR) + "/tests/fixtures/" + relative;
}

Tensor read_fixture(const std::string& dir, const std::string& name) {
  const std::string base = fixture_path(dir + "/" + name);
  std::ifstream shape_file(base + ".shape");
  if (!shape_file) throw IoError("read_fixture: cannot open " + base + ".shape");
  Shape shape;
  int64_t d;
  while (shape_file >> d)
    shape.push_back(d);
  std::ifstream data_file(base + ".f32", std::ios::binary);
  if (!data_file) throw IoError("read_fixture: cannot open " + base + ".f32");
  Tensor t = Tensor::empty(shape);
  data_file.read(reinterpret_cast<char*>(t.data()), t.numel() * 4);
  if (data_file.gcount() != t.numel() * 4) throw FormatError("read_fixture: short file " + base);
  return t;
}

}  // namespace stgnn::testing
