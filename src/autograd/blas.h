// The one gateway to matrix products: every matrix product in stgnn goes through sgemm.
//
// Two implementations sit behind it, and a plain reference beside them:
//   - our blocked AVX-512 kernel (gemm_avx512.cpp), built when the compiler targets AVX-512F
//     (the default -march=native on an AVX-512 machine);
//   - OpenBLAS's cblas_sgemm everywhere else.
// Why our own: on the machines this project is measured on, the environment pins OpenBLAS to
// its AVX2 kernels (OPENBLAS_CORETYPE=Haswell) and GLEVR's epoch is 92% sgemm; the AVX-512
// kernel runs the same products about 1.6x faster (BENCHMARKS.md, "GEMM").
#pragma once

#include <cstdint>

namespace stgnn {

// C [M,N] = op(A) op(B) (+ C when accumulate), row-major, packed (leading dimension = row
// length); op(A) = A^T when transpose_a, with A stored [K,M] then (else [M,K]); B likewise
// [N,K] or [K,N]. Handles empty dimensions (K = 0 gives zeros, or leaves C when accumulating).
void sgemm(bool transpose_a, bool transpose_b, int64_t m, int64_t n, int64_t k, const float* a,
           const float* b, float* c, bool accumulate);

enum class GemmBackend {
  kDefault,    // what sgemm uses: the AVX-512 kernel when built, else OpenBLAS
  kOpenBlas,   // cblas_sgemm
  kAvx512,     // our blocked kernel (only when gemm_avx512_available())
  kReference,  // the plain triple loop (double accumulation), for tests
};

// Same contract as sgemm, on a chosen implementation (tests and benchmarks compare them).
void sgemm_with(GemmBackend backend, bool transpose_a, bool transpose_b, int64_t m, int64_t n,
                int64_t k, const float* a, const float* b, float* c, bool accumulate);

// True when this build contains the AVX-512 kernel (compiled for a CPU with AVX-512F).
bool gemm_avx512_available();

// The AVX-512 kernel itself (defined only when available; sgemm_with checks).
void sgemm_avx512(bool transpose_a, bool transpose_b, int64_t m, int64_t n, int64_t k,
                  const float* a, const float* b, float* c, bool accumulate);

}  // namespace stgnn
