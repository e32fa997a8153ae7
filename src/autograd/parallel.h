// Thread helpers over OpenMP.
//
// parallel_for splits [0, n) into contiguous chunks, one per thread (static schedule), and
// runs serially when the work is too small to pay for waking the threads. Each thread owns
// its chunk exclusively, so kernels that write only inside [begin, end) need no atomics, and
// results do not depend on the thread count unless a kernel reduces across chunks (those use
// fixed_chunks_reduce, whose chunk boundaries do not depend on the thread count).
#pragma once

#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <vector>

namespace stgnn {

// Below this many elements an elementwise loop runs on one thread.
constexpr int64_t kElementwiseGrain = 1 << 15;

// Runs fn(begin, end) over contiguous chunks of [0, n); at least `grain` items per thread.
template <typename Fn>
void parallel_for(int64_t n, int64_t grain, const Fn& fn) {
  if (n <= 0) return;
  const int64_t max_threads = omp_in_parallel() ? 1 : omp_get_max_threads();
  const int64_t threads =
      std::max<int64_t>(1, std::min(max_threads, n / std::max<int64_t>(1, grain)));
  if (threads <= 1) {
    fn(int64_t{0}, n);
    return;
  }
#pragma omp parallel num_threads(static_cast <int>(threads))
  {
    const int64_t t = omp_get_thread_num();
    const int64_t nt = omp_get_num_threads();
    const int64_t begin = n * t / nt;
    const int64_t end = n * (t + 1) / nt;
    if (begin < end) fn(begin, end);
  }
}

// Deterministic parallel sum: partial results over fixed-size chunks (independent of the
// thread count), combined in chunk order. partial(begin, end) returns a double.
template <typename Partial>
double fixed_chunks_reduce(int64_t n, const Partial& partial) {
  constexpr int64_t kChunk = 1 << 14;
  const int64_t chunks = (n + kChunk - 1) / kChunk;
  if (chunks <= 1) return n > 0 ? partial(int64_t{0}, n) : 0.0;
  std::vector<double> sums(static_cast<size_t>(chunks));
  parallel_for(chunks, 1, [&](int64_t cb, int64_t ce) {
    for (int64_t c = cb; c < ce; ++c) {
      sums[static_cast<size_t>(c)] = partial(c * kChunk, std::min(n, (c + 1) * kChunk));
    }
  });
  double total = 0.0;
  for (double s : sums)
    total += s;
  return total;
}

// Threads currently available to stgnn kernels.
inline int num_threads() {
  return omp_get_max_threads();
}
inline void set_num_threads(int n) {
  omp_set_num_threads(std::max(1, n));
}

}  // namespace stgnn
