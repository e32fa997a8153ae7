// Blocked single-precision GEMM with an AVX-512 micro-kernel (the plain reference is
// sgemm_reference in blas.cpp; tests/test_gemm.cpp compares the two).
//
// The classic five-loop structure (Goto; BLIS):
//   for jc over N in kNc columns        B panel [kKc, kNc] packed, kept in L3
//     for pc over K in steps of <= kKc    (the K blocking fixes the order of the sums)
//       for ic over M in mc rows          A block [mc, kKc] packed, kept in L2
//         for jr over the panel's kNr-wide slivers    B sliver [kKc, kNr] stays in L1
//           for ir over the block's kMr-high slivers  micro-kernel: C tile [kMr, kNr]
// Packed A holds, per sliver, kMr values of column p one after the other; packed B, per
// sliver, kNr values of row p. Slivers at the edges are zero-padded, so the micro-kernel
// always runs a full tile and masks only its loads and stores of C.
//
// Parallel strategy (why it is safe): C is cut into one disjoint part per thread (row ranges
// of whole tiles, or column ranges of whole slivers when M is below four tiles per thread),
// and each thread runs the serial algorithm on its part with its own packing buffers: no
// shared writes, no barriers. Packing B once per thread instead of once per team costs
// K x N copies against M x N x K multiply-adds. Every C element is summed over K in the
// same blocks and order whatever the thread count, so results do not depend on it.
#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <new>

#include "autograd/blas.h"
#include "autograd/error.h"

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace stgnn {

#if defined(__AVX512F__)

namespace {

constexpr int64_t kMr = 14;   // tile rows: 14 x 2 accumulators + 2 B vectors + 1 broadcast < 32 zmm
constexpr int64_t kNr = 32;   // tile columns: two 16-float vectors
constexpr int64_t kKc = 320;  // B sliver 320 x 32 x 4 B = 40 KiB, inside a 48 KiB L1
constexpr int64_t kMcMax = 336;  // A block 336 x 320 x 4 B = 420 KiB, inside a 1 MiB L2
constexpr int64_t kNc = 2048;    // B panel 320 x 2048 x 4 B = 2.5 MiB per thread, in L3
// Below this many multiply-adds a product runs on one thread: waking the second costs more.
constexpr int64_t kParallelFlops = int64_t{1} << 18;

// A float buffer aligned to the cache line, grown on demand and kept per thread, so that the
// steady state of a training loop never allocates.
class PackBuffer {
 public:
  float* reserve(int64_t floats) {
    if (floats > capacity_) {
      std::free(data_);
      const size_t bytes = (static_cast<size_t>(floats) * sizeof(float) + 63) / 64 * 64;
      data_ = static_cast<float*>(std::aligned_alloc(64, bytes));
      if (data_ == nullptr) throw std::bad_alloc();
      capacity_ = floats;
    }
    return data_;
  }
  ~PackBuffer() { std::free(data_); }

 private:
  float* data_ = nullptr;
  int64_t capacity_ = 0;
};

PackBuffer& thread_a_buffer() {
  thread_local PackBuffer buffer;
  return buffer;
}

PackBuffer& thread_b_buffer() {
  thread_local PackBuffer buffer;
  return buffer;
}

// Operand views: element (i, p) of op(A) [M,K] and (p, j) of op(B) [K,N].
struct OperandA {
  const float* data;
  bool transposed;  // stored [K,M]
  int64_t m, k;
  float at(int64_t i, int64_t p) const { return transposed ? data[p * m + i] : data[i * k + p]; }
};

struct OperandB {
  const float* data;
  bool transposed;  // stored [N,K]
  int64_t k, n;
  float at(int64_t p, int64_t j) const { return transposed ? data[j * k + p] : data[p * n + j]; }
};

// Masks selecting the first `cols` (0..32) floats of a 32-float sliver row, as two halves.
struct SliverMasks {
  __mmask16 lo, hi;
};
SliverMasks sliver_masks(int64_t cols) {
  const auto first = [](int64_t count) {
    return count >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << count) - 1u);
  };
  return {first(cols), cols > 16 ? first(cols - 16) : __mmask16(0)};
}

// Transposing copy into a sliver of `width` lines: packed[p][line] = src[line * stride + p]
// for the first `lines` lines, zeros for the rest. Reads along each source line and writes
// with stride `width` (the destination sliver is at most 40 KiB and stays in L1).
void pack_lines_transposed(const float* src, int64_t stride, int64_t lines, int64_t width,
                           int64_t kc, float* packed) {
  for (int64_t line = 0; line < lines; ++line) {
    const float* line_src = src + line * stride;
    for (int64_t p = 0; p < kc; ++p)
      packed[p * width + line] = line_src[p];
  }
  for (int64_t line = lines; line < width; ++line) {
    for (int64_t p = 0; p < kc; ++p)
      packed[p * width + line] = 0.0f;
  }
}

// Packs rows [row0, row0 + rows) x columns [p0, p0 + kc) of op(A) as one sliver of kMr rows:
// packed[p][r]. Rows past `rows` are zeros.
void pack_a_sliver(const OperandA& a, int64_t row0, int64_t rows, int64_t p0, int64_t kc,
                   float* packed) {
  if (!a.transposed) {
    // Row r of op(A) is contiguous in memory.
    pack_lines_transposed(a.data + row0 * a.k + p0, a.k, rows, kMr, kc, packed);
    return;
  }
  // Column p of op(A) is row p of the stored [K,M] matrix: kMr contiguous floats.
  for (int64_t p = 0; p < kc; ++p) {
    const float* src = a.data + (p0 + p) * a.m + row0;
    float* dst = packed + p * kMr;
    for (int64_t r = 0; r < kMr; ++r)
      dst[r] = r < rows ? src[r] : 0.0f;
  }
}

// Packs rows [p0, p0 + kc) x columns [col0, col0 + cols) of op(B) as one sliver of kNr
// columns: packed[p][j]. Columns past `cols` are zeros.
void pack_b_sliver(const OperandB& b, int64_t p0, int64_t kc, int64_t col0, int64_t cols,
                   float* packed) {
  if (b.transposed) {
    // Column j of op(B) is row j of the stored [N,K] matrix.
    pack_lines_transposed(b.data + col0 * b.k + p0, b.k, cols, kNr, kc, packed);
    return;
  }
  const SliverMasks masks = sliver_masks(cols);
  for (int64_t p = 0; p < kc; ++p) {
    const float* src = b.data + (p0 + p) * b.n + col0;
    _mm512_store_ps(packed + p * kNr, _mm512_maskz_loadu_ps(masks.lo, src));
    _mm512_store_ps(packed + p * kNr + 16, _mm512_maskz_loadu_ps(masks.hi, src + 16));
  }
}

// C tile [rows, cols] (rows <= kMr, cols <= kNr) = (or +=) packed A sliver x packed B sliver.
// The 28 accumulators live in registers through the K loop (both loops fully unrolled over
// the tile so every index is a constant).
void micro_kernel(int64_t kc, const float* __restrict packed_a, const float* __restrict packed_b,
                  float* c, int64_t ldc, int64_t rows, int64_t cols, bool accumulate) {
  __m512 acc_lo[kMr];
  __m512 acc_hi[kMr];
#pragma GCC unroll 14
  for (int64_t r = 0; r < kMr; ++r) {
    acc_lo[r] = _mm512_setzero_ps();
    acc_hi[r] = _mm512_setzero_ps();
  }
  for (int64_t p = 0; p < kc; ++p) {
    const __m512 b_lo = _mm512_load_ps(packed_b);
    const __m512 b_hi = _mm512_load_ps(packed_b + 16);
#pragma GCC unroll 14
    for (int64_t r = 0; r < kMr; ++r) {
      const __m512 a_r = _mm512_set1_ps(packed_a[r]);
      acc_lo[r] = _mm512_fmadd_ps(a_r, b_lo, acc_lo[r]);
      acc_hi[r] = _mm512_fmadd_ps(a_r, b_hi, acc_hi[r]);
    }
    packed_a += kMr;
    packed_b += kNr;
  }
  const SliverMasks masks = sliver_masks(cols);
#pragma GCC unroll 14
  for (int64_t r = 0; r < kMr; ++r) {
    if (r < rows) {
      float* row = c + r * ldc;
      __m512 lo = acc_lo[r];
      __m512 hi = acc_hi[r];
      if (accumulate) {
        lo = _mm512_add_ps(lo, _mm512_maskz_loadu_ps(masks.lo, row));
        hi = _mm512_add_ps(hi, _mm512_maskz_loadu_ps(masks.hi, row + 16));
      }
      _mm512_mask_storeu_ps(row, masks.lo, lo);
      _mm512_mask_storeu_ps(row + 16, masks.hi, hi);
    }
  }
}

// One thread's whole product on its part of C: rows [row0, row0 + rows) x columns
// [col0, col0 + cols), with its own packing buffers.
void multiply_serial(const OperandA& a, const OperandB& b, int64_t row0, int64_t rows, int64_t col0,
                     int64_t cols, float* c, int64_t ldc, bool accumulate) {
  if (rows <= 0 || cols <= 0) return;
  const int64_t k = a.k;
  // K blocks of equal length (at most kKc): 400 runs as 200 + 200, not 320 + 80, so that no
  // pass over C does a sliver of work.
  const int64_t k_blocks = (k + kKc - 1) / kKc;
  const int64_t kc_max = (k + k_blocks - 1) / k_blocks;
  const int64_t mc_max = std::min(kMcMax, (rows + kMr - 1) / kMr * kMr);
  const int64_t nc_max = std::min(kNc, (cols + kNr - 1) / kNr * kNr);
  float* packed_a = thread_a_buffer().reserve(mc_max * kc_max);
  float* packed_b = thread_b_buffer().reserve(nc_max * kc_max);
  for (int64_t jc = 0; jc < cols; jc += kNc) {
    const int64_t nc = std::min(kNc, cols - jc);
    for (int64_t pc = 0; pc < k; pc += kc_max) {
      const int64_t kc = std::min(kc_max, k - pc);
      const bool accumulate_here = accumulate || pc > 0;
      for (int64_t s = 0; s * kNr < nc; ++s)
        pack_b_sliver(b, pc, kc, col0 + jc + s * kNr, std::min(kNr, nc - s * kNr),
                      packed_b + s * kNr * kc);
      for (int64_t ic = 0; ic < rows; ic += kMcMax) {
        const int64_t mc = std::min(kMcMax, rows - ic);
        for (int64_t s = 0; s * kMr < mc; ++s)
          pack_a_sliver(a, row0 + ic + s * kMr, std::min(kMr, mc - s * kMr), pc, kc,
                        packed_a + s * kMr * kc);
        float* c_block = c + (row0 + ic) * ldc + col0 + jc;
        for (int64_t col = 0; col < nc; col += kNr) {
          const float* b_sliver = packed_b + col * kc;
          for (int64_t row = 0; row < mc; row += kMr) {
            micro_kernel(kc, packed_a + row * kc, b_sliver, c_block + row * ldc + col, ldc,
                         std::min(kMr, mc - row), std::min(kNr, nc - col), accumulate_here);
          }
        }
      }
    }
  }
}

}  // namespace

void sgemm_avx512(bool transpose_a, bool transpose_b, int64_t m, int64_t n, int64_t k,
                  const float* a_data, const float* b_data, float* c, bool accumulate) {
  // c is [m, n] row-major; a_data [m,k] or [k,m] (transpose_a); b_data [k,n] or [n,k].
  if (m == 0 || n == 0) return;
  if (k == 0) {
    if (!accumulate) std::fill(c, c + m * n, 0.0f);
    return;
  }
  const OperandA a{a_data, transpose_a, m, k};
  const OperandB b{b_data, transpose_b, k, n};
  const int threads = omp_in_parallel() || m * n * k < kParallelFlops ? 1 : omp_get_max_threads();
  if (threads == 1) {
    multiply_serial(a, b, 0, m, 0, n, c, n, accumulate);
    return;
  }
  // Many rows: threads take row ranges (whole tiles); few rows: column ranges (whole slivers).
  const bool split_rows = m >= int64_t{threads} * 4 * kMr;
#pragma omp parallel num_threads(threads)
  {
    const int64_t team = omp_get_num_threads();
    const int64_t me = omp_get_thread_num();
    if (split_rows) {
      const int64_t tiles = (m + kMr - 1) / kMr;
      const int64_t begin = std::min(m, tiles * me / team * kMr);
      const int64_t end = std::min(m, tiles * (me + 1) / team * kMr);
      multiply_serial(a, b, begin, end - begin, 0, n, c, n, accumulate);
    } else {
      const int64_t slivers = (n + kNr - 1) / kNr;
      const int64_t begin = std::min(n, slivers * me / team * kNr);
      const int64_t end = std::min(n, slivers * (me + 1) / team * kNr);
      multiply_serial(a, b, 0, m, begin, end - begin, c, n, accumulate);
    }
  }
}

#else  // no AVX-512F in this build: sgemm_with never calls this (gemm_avx512_available() is false)

void sgemm_avx512(bool, bool, int64_t, int64_t, int64_t, const float*, const float*, float*, bool) {
  throw ValueError("sgemm_avx512: this build was compiled without AVX-512F");
}

#endif

}  // namespace stgnn
