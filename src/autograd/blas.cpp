#include "autograd/blas.h"

#include <cblas.h>

#include <algorithm>

namespace stgnn {

void sgemm(bool transpose_a, bool transpose_b, int64_t m, int64_t n, int64_t k, const float* a, const float* b,
           float* c, bool accumulate) {
  if (m == 0 || n == 0) return;
  if (k == 0) {
    if (!accumulate) std::fill(c, c + m * n, 0.0f);
    return;
  }
  cblas_sgemm(CblasRowMajor, transpose_a ? CblasTrans : CblasNoTrans, transpose_b ? CblasTrans : CblasNoTrans,
              static_cast<blasint>(m), static_cast<blasint>(n), static_cast<blasint>(k), 1.0f, a,
              static_cast<blasint>(transpose_a ? m : k), b, static_cast<blasint>(transpose_b ? k : n),
              accumulate ? 1.0f : 0.0f, c, static_cast<blasint>(n));
}

}  // namespace stgnn
