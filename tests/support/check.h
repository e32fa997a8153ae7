// Small assertion helpers shared by the test files.
#pragma once

#include <doctest/doctest.h>

#include <cmath>
#include <string>

#include "autograd/tensor.h"
#include "support/gradcheck.h"

namespace stgnn::testing {

// Every element of `got` within atol + rtol * |want| of `want`, shapes equal.
inline void check_close(const Tensor& got, const Tensor& want, double rtol = 1e-5,
                        double atol = 1e-6) {
  REQUIRE(got.shape() == want.shape());
  int reported = 0;
  for (int64_t i = 0; i < got.numel(); ++i) {
    const double g = got.data()[i], w = want.data()[i];
    if (!(std::fabs(g - w) <= atol + rtol * std::fabs(w))) {
      if (reported++ < 5) FAIL_CHECK("element " << i << ": got " << g << " want " << w);
    }
  }
}

// Runs gradcheck and reports the seed and the first failures.
inline void require_gradcheck(const TensorFn& f, const std::vector<Tensor>& inputs, uint64_t seed,
                              GradCheckOptions options = {}) {
  options.seed = seed;
  const GradCheckResult r = gradcheck(f, inputs, options);
  INFO("seed " << seed << " (replay with STGNN_TEST_SEED)\n" << r.report);
  CHECK(r.ok);
}

}  // namespace stgnn::testing
