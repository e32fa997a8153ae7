// sgemm's implementations (our AVX-512 kernel, OpenBLAS) against the plain reference: every
// transpose pair, accumulate or not, tile edges, several K blocks, several N panels, both
// parallel strategies, thread-count independence and calls from inside a parallel region.
#include <doctest/doctest.h>
#include <omp.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <limits>
#include <vector>

#include "autograd/blas.h"
#include "autograd/rng.h"
#include "support/gradcheck.h"

using namespace stgnn;

namespace {

struct Product {
  bool transpose_a, transpose_b;
  int64_t m, n, k;
};

std::vector<float> random_values(int64_t count, Rng& rng) {
  std::vector<float> values(static_cast<size_t>(count));
  for (float& v : values)
    v = rng.uniform(-1.0f, 1.0f);
  return values;
}

// The worst |C - reference| relative to sum_p |a_ip b_pj| (the scale float rounding works at).
double worst_relative_error(const Product& p, const std::vector<float>& a,
                            const std::vector<float>& b, const std::vector<float>& c,
                            const std::vector<float>& reference) {
  double worst = 0.0;
  for (int64_t i = 0; i < p.m; ++i) {
    for (int64_t j = 0; j < p.n; ++j) {
      double scale = 1e-30;
      for (int64_t q = 0; q < p.k; ++q) {
        const float av = p.transpose_a ? a[q * p.m + i] : a[i * p.k + q];
        const float bv = p.transpose_b ? b[j * p.k + q] : b[q * p.n + j];
        scale += std::fabs(static_cast<double>(av) * bv);
      }
      const double diff = std::fabs(static_cast<double>(c[i * p.n + j]) - reference[i * p.n + j]);
      worst = std::isnan(diff) ? INFINITY : std::max(worst, diff / scale);
    }
  }
  return worst;
}

void check_backend(GemmBackend backend, const Product& p, bool accumulate, Rng& rng) {
  CAPTURE(p.transpose_a);
  CAPTURE(p.transpose_b);
  CAPTURE(p.m);
  CAPTURE(p.n);
  CAPTURE(p.k);
  CAPTURE(accumulate);
  const std::vector<float> a = random_values(p.m * p.k, rng);
  const std::vector<float> b = random_values(p.k * p.n, rng);
  const std::vector<float> c0 = random_values(p.m * p.n, rng);
  std::vector<float> reference = c0;
  sgemm_with(GemmBackend::kReference, p.transpose_a, p.transpose_b, p.m, p.n, p.k, a.data(),
             b.data(), reference.data(), accumulate);
  // Poisoned output: an element the kernel forgets to write stays NaN and fails.
  std::vector<float> c =
      accumulate ? c0 : std::vector<float>(c0.size(), std::numeric_limits<float>::quiet_NaN());
  sgemm_with(backend, p.transpose_a, p.transpose_b, p.m, p.n, p.k, a.data(), b.data(), c.data(),
             accumulate);
  CHECK(worst_relative_error(p, a, b, c, reference) < 1e-5);
}

std::vector<GemmBackend> fast_backends() {
  std::vector<GemmBackend> backends{GemmBackend::kOpenBlas, GemmBackend::kDefault};
  if (gemm_avx512_available()) backends.push_back(GemmBackend::kAvx512);
  return backends;
}

}  // namespace

TEST_CASE("sgemm implementations match the reference on every transpose pair and tile edge") {
  Rng rng(testing::fresh_seed());
  // 14 x 32 tiles, K blocks of at most 320 (equal lengths), N panels of 2048, row blocks of
  // up to 336.
  const std::vector<std::array<int64_t, 3>> shapes{
      {1, 1, 1},     {13, 31, 7},   {14, 32, 256},  {15, 33, 257},  {29, 65, 513},
      {3, 2100, 70}, {40, 17, 300}, {700, 45, 270}, {130, 70, 600}, {57, 300, 33}};
  for (GemmBackend backend : fast_backends()) {
    CAPTURE(static_cast<int>(backend));
    for (const auto& shape : shapes) {
      for (bool ta : {false, true}) {
        for (bool tb : {false, true}) {
          for (bool accumulate : {false, true})
            check_backend(backend, Product{ta, tb, shape[0], shape[1], shape[2]}, accumulate, rng);
        }
      }
    }
  }
}

TEST_CASE("sgemm with empty dimensions") {
  std::vector<float> c{1.0f, 2.0f, 3.0f, 4.0f};
  const float dummy = 5.0f;
  for (GemmBackend backend : fast_backends()) {
    std::vector<float> out = c;
    sgemm_with(backend, false, false, 2, 2, 0, &dummy, &dummy, out.data(),
               true);  // K = 0, accumulate: C kept
    CHECK(out == c);
    sgemm_with(backend, false, false, 2, 2, 0, &dummy, &dummy, out.data(), false);  // K = 0: zeros
    CHECK(out == std::vector<float>(4, 0.0f));
    sgemm_with(backend, false, false, 0, 2, 3, &dummy, &dummy, out.data(),
               false);  // M = 0: nothing
  }
}

TEST_CASE(
    "the AVX-512 kernel gives the same bits on 1 and 2 threads and inside a parallel region") {
  if (!gemm_avx512_available()) {
    MESSAGE("this build has no AVX-512 kernel; the default backend is OpenBLAS");
    CHECK_FALSE(gemm_avx512_available());
    return;
  }
  Rng rng(testing::fresh_seed());
  const int saved_threads = omp_get_max_threads();
  // Both parallel strategies: many rows (threads split row blocks) and few (they split columns).
  for (const Product& p :
       {Product{false, true, 900, 300, 520}, Product{true, false, 20, 3000, 300}}) {
    CAPTURE(p.m);
    const std::vector<float> a = random_values(p.m * p.k, rng);
    const std::vector<float> b = random_values(p.k * p.n, rng);
    std::vector<float> one(static_cast<size_t>(p.m * p.n)), two(one.size()), nested(one.size());
    omp_set_num_threads(1);
    sgemm_avx512(p.transpose_a, p.transpose_b, p.m, p.n, p.k, a.data(), b.data(), one.data(),
                 false);
    omp_set_num_threads(2);
    sgemm_avx512(p.transpose_a, p.transpose_b, p.m, p.n, p.k, a.data(), b.data(), two.data(),
                 false);
#pragma omp parallel num_threads(2)
    {
#pragma omp single
      sgemm_avx512(p.transpose_a, p.transpose_b, p.m, p.n, p.k, a.data(), b.data(), nested.data(),
                   false);
    }
    CHECK(one == two);
    CHECK(one == nested);
  }
  omp_set_num_threads(saved_threads);
}
