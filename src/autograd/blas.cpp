#include "autograd/blas.h"

#include <cblas.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "autograd/error.h"

namespace stgnn {

namespace {

void sgemm_openblas(bool transpose_a, bool transpose_b, int64_t m, int64_t n, int64_t k,
                    const float* a, const float* b, float* c, bool accumulate) {
  cblas_sgemm(CblasRowMajor, transpose_a ? CblasTrans : CblasNoTrans,
              transpose_b ? CblasTrans : CblasNoTrans, static_cast<blasint>(m),
              static_cast<blasint>(n), static_cast<blasint>(k), 1.0f, a,
              static_cast<blasint>(transpose_a ? m : k), b,
              static_cast<blasint>(transpose_b ? k : n), accumulate ? 1.0f : 0.0f, c,
              static_cast<blasint>(n));
}

// The plain reference: one dot product per output element, accumulated in double.
void sgemm_reference(bool transpose_a, bool transpose_b, int64_t m, int64_t n, int64_t k,
                     const float* a, const float* b, float* c, bool accumulate) {
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t j = 0; j < n; ++j) {
      double sum = accumulate ? c[i * n + j] : 0.0;
      for (int64_t p = 0; p < k; ++p) {
        const float a_ip = transpose_a ? a[p * m + i] : a[i * k + p];
        const float b_pj = transpose_b ? b[j * k + p] : b[p * n + j];
        sum += static_cast<double>(a_ip) * b_pj;
      }
      c[i * n + j] = static_cast<float>(sum);
    }
  }
}

// STGNN_GEMM=openblas sends every product to OpenBLAS (A/B comparisons of whole programs).
bool openblas_forced() {
  static const bool forced = [] {
    const char* choice = std::getenv("STGNN_GEMM");
    return choice != nullptr && std::strcmp(choice, "openblas") == 0;
  }();
  return forced;
}

}  // namespace

bool gemm_avx512_available() {
#if defined(__AVX512F__)
  return true;
#else
  return false;
#endif
}

void sgemm_with(GemmBackend backend, bool transpose_a, bool transpose_b, int64_t m, int64_t n,
                int64_t k, const float* a, const float* b, float* c, bool accumulate) {
  if (m == 0 || n == 0) return;
  if (k == 0) {
    if (!accumulate) std::fill(c, c + m * n, 0.0f);
    return;
  }
  if (backend == GemmBackend::kDefault) {
    backend = gemm_avx512_available() && !openblas_forced() ? GemmBackend::kAvx512
                                                            : GemmBackend::kOpenBlas;
  }
  switch (backend) {
    case GemmBackend::kOpenBlas:
      sgemm_openblas(transpose_a, transpose_b, m, n, k, a, b, c, accumulate);
      return;
    case GemmBackend::kAvx512:
      if (!gemm_avx512_available())
        throw ValueError("sgemm: this build has no AVX-512 kernel (compiled without AVX-512F)");
      sgemm_avx512(transpose_a, transpose_b, m, n, k, a, b, c, accumulate);
      return;
    case GemmBackend::kReference:
      sgemm_reference(transpose_a, transpose_b, m, n, k, a, b, c, accumulate);
      return;
    case GemmBackend::kDefault:
      break;
  }
}

void sgemm(bool transpose_a, bool transpose_b, int64_t m, int64_t n, int64_t k, const float* a,
           const float* b, float* c, bool accumulate) {
  sgemm_with(GemmBackend::kDefault, transpose_a, transpose_b, m, n, k, a, b, c, accumulate);
}

}  // namespace stgnn
