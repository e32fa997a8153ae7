// Finite-difference gradient checks.
//
// gradcheck(f, inputs) compares the analytic gradient of L = sum(f(inputs) * w), w a fixed
// random tensor, with central differences (L(x + h) - L(x - h)) / 2h for every element of
// every input (or a random sample of `max_checks_per_input` elements when an input is big).
//
// Tolerances (why these numbers): inputs and outputs are float32, so each output carries a
// relative rounding error near 1e-7 times the length of the longest sum that produced it.
// L is accumulated in double, so its rounding error is about sqrt(n) * 1e-7 * |out| for n
// outputs, and dividing by 2h = 2e-2 magnifies it to ~1e-5 * sqrt(n) * |out|: below 1e-3 for
// the sizes used in tests. The truncation error of the central difference is h^2 f''' / 6,
// about 2e-5 for functions of moderate curvature. Hence |analytic - numeric| <= atol + rtol *
// |numeric| with atol = 2e-3 and rtol = 1e-2: an order of magnitude above the noise, while a
// wrong backward (a missing term, a wrong factor) misses by far more. Ops with kinks (relu,
// max, pooling) need test inputs at least 2h away from the kink; the helpers below make them.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "autograd/rng.h"
#include "autograd/tensor.h"

namespace stgnn::testing {

struct GradCheckOptions {
  float step = 1e-2f;
  double atol = 2e-3;
  double rtol = 1e-2;
  int64_t max_checks_per_input = 96;
  uint64_t seed = 1;
  // Whole models have many ReLU / max-pool kinks; when a difference disagrees, retry it with a
  // quarter and a hundredth of the step before calling it a failure (see gradcheck.cpp). Off
  // for single ops, whose tests keep inputs away from kinks.
  bool retry_smaller_step = false;
  // The fraction of checked elements of each tensor that must agree. 1 for ops. A whole model
  // has thousands of ReLU / max-pool kinks behind every early parameter (BatchNorm centres
  // the values on the ReLU's kink), and any step crosses some of them; each crossing moves
  // the difference by about one activation's share of the gradient, which can be a large
  // part of a small, cancelling total. So model-level checks ask that most elements of every
  // tensor agree: a wrong backward for a tensor misses on most of its elements.
  double min_fraction_ok = 1.0;
  // The fraction of all checked elements (over every tensor) that must agree.
  double min_overall_fraction_ok = 1.0;
};

struct GradCheckResult {
  bool ok = true;
  double max_abs_error = 0.0;
  int64_t checked = 0, agreed = 0;
  std::string report;  // the first failures, "input 0 element 3: analytic 1.2 numeric 0.7"
};

using TensorFn = std::function<Tensor(const std::vector<Tensor>&)>;

// Inputs are copied into fresh leaves that require grad; the originals are untouched.
GradCheckResult gradcheck(const TensorFn& f, const std::vector<Tensor>& inputs,
                          const GradCheckOptions& options = {});

// The same check for tensors that live inside a model (parameters): `f` runs the model and
// returns its output; each parameter's .grad() after one backward is compared with central
// differences taken by perturbing the parameter's data in place (restored afterwards).
GradCheckResult gradcheck_parameters(const std::function<Tensor()>& f,
                                     const std::vector<Tensor>& parameters,
                                     const GradCheckOptions& options = {});

// Random inputs for checks: normal values, and values kept at least `gap` away from zero
// (for relu-like kinks) or made pairwise distinct by at least `gap` (for max-like ops).
Tensor random_tensor(const Shape& shape, Rng& rng, float scale = 1.0f);
Tensor away_from_zero(const Shape& shape, Rng& rng, float gap = 0.05f);
Tensor distinct_values(const Shape& shape, Rng& rng, float gap = 0.05f);
Tensor positive_tensor(const Shape& shape, Rng& rng, float lo = 0.5f, float hi = 2.0f);

// A fresh seed per call (from the clock), printed by the failing test so it can be replayed
// with STGNN_TEST_SEED=<seed>.
uint64_t fresh_seed();

// Reads a little tensor fixture written by tests/fixtures/*.py: a directory of raw float32
// little-endian files <name>.f32 with a sidecar <name>.shape ("2 3 4").
Tensor read_fixture(const std::string& dir, const std::string& name);
// The absolute path of tests/fixtures/<relative>.
std::string fixture_path(const std::string& relative);

}  // namespace stgnn::testing
