// The one gateway to OpenBLAS: every matrix product in stgnn goes through this call.
#pragma once

#include <cstdint>

namespace stgnn {

// C [M,N] = op(A) op(B) (+ C when accumulate), row-major, packed (leading dimension = row
// length); op(A) = A^T when transpose_a, with A stored [K,M] then (else [M,K]); B likewise
// [N,K] or [K,N]. Handles empty dimensions (K = 0 gives zeros, or leaves C when accumulating).
void sgemm(bool transpose_a, bool transpose_b, int64_t m, int64_t n, int64_t k, const float* a, const float* b,
           float* c, bool accumulate);

}  // namespace stgnn
