// SyncMNIST generation throughput: videos/s (items_per_second) for D = 3 and 5 digits on 1
// and 2 threads, and the 100x100 -> 64x64 frame resize alone. Digits are synthetic strokes
// (the cost does not depend on their content), so no download is needed.
#include <benchmark/benchmark.h>

#include <vector>

#include "autograd/parallel.h"
#include "data/mnist.h"
#include "video/syncmnist.h"

namespace {

stgnn::DigitSet stroke_digits(int per_class) {
  stgnn::DigitSet set;
  for (int v = 0; v < per_class; ++v) {
    for (int label = 0; label < stgnn::kDigitClasses; ++label) {
      for (int r = 0; r < stgnn::kDigitSide; ++r) {
        for (int c = 0; c < stgnn::kDigitSide; ++c) {
          const bool ink = (r - 14) * (r - 14) + (c - 14) * (c - 14) < 40 + 8 * label + v % 7;
          set.pixels.push_back(ink ? static_cast<uint8_t>(200 + label) : 0);
        }
      }
      set.labels.push_back(static_cast<uint8_t>(label));
      ++set.count;
    }
  }
  return set;
}

// Args: digits per video, threads.
void BM_GenerateBatch(benchmark::State& state) {
  const stgnn::DigitSet pool = stroke_digits(50);
  stgnn::SyncMnistOptions options;
  options.digits = static_cast<int>(state.range(0));
  const int saved = stgnn::num_threads();
  stgnn::set_num_threads(static_cast<int>(state.range(1)));
  constexpr int64_t kBatch = 256;
  uint64_t first = 0;
  for (auto _ : state) {
    stgnn::SyncBatch batch = stgnn::generate_batch(pool, 7, first, kBatch, options);
    benchmark::DoNotOptimize(batch.videos.data());
    first += kBatch;
  }
  stgnn::set_num_threads(saved);
  state.SetItemsProcessed(state.iterations() * kBatch);
}
BENCHMARK(BM_GenerateBatch)
    ->Args({3, 1})
    ->Args({3, 2})
    ->Args({5, 1})
    ->Args({5, 2})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

void BM_ResizeFrame(benchmark::State& state) {
  std::vector<uint8_t> canvas(100 * 100), frame(64 * 64);
  for (size_t i = 0; i < canvas.size(); ++i)
    canvas[i] = static_cast<uint8_t>(i * 37);
  for (auto _ : state) {
    stgnn::resize_bilinear_u8(canvas.data(), 100, 100, frame.data(), 64, 64);
    benchmark::DoNotOptimize(frame.data());
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_ResizeFrame);

}  // namespace

BENCHMARK_MAIN();
