// Tensor core: construction, views, shared storage, the backward engine, grad mode.
#include <doctest/doctest.h>

#include "autograd/ops.h"
#include "autograd/tensor.h"

using namespace stgnn;

TEST_CASE("construction and shape queries") {
  Tensor t = Tensor::full({2, 3}, 1.5f);
  CHECK(t.dim() == 2);
  CHECK(t.size(-1) == 3);
  CHECK(t.numel() == 6);
  CHECK(t.data()[5] == 1.5f);
  CHECK(Tensor::scalar(2.0f).item() == 2.0f);
  CHECK_THROWS_AS(Tensor::from_vector({2, 2}, {1, 2, 3}), ShapeError);
  CHECK_THROWS_AS(t.size(2), ShapeError);
  CHECK_THROWS_AS(t.item(), ShapeError);
  CHECK_FALSE(Tensor().defined());
}

TEST_CASE("reshape is a view sharing storage; -1 is inferred") {
  Tensor t = Tensor::from_vector({2, 3}, {0, 1, 2, 3, 4, 5});
  Tensor r = t.reshape({3, -1});
  CHECK(r.shape() == Shape{3, 2});
  r.data()[0] = 42.0f;
  CHECK(t.data()[0] == 42.0f);
  CHECK_THROWS_AS(t.reshape({4, -1}), ShapeError);
  CHECK_THROWS_AS(t.reshape({-1, -1}), ShapeError);
}

TEST_CASE("storage is aligned and counted") {
  const MemoryStats before = memory_stats();
  {
    Tensor t = Tensor::zeros({1000});
    CHECK(reinterpret_cast<uintptr_t>(t.data()) % 64 == 0);
    CHECK(memory_stats().live_buffers == before.live_buffers + 1);
    CHECK(memory_stats().live_bytes == before.live_bytes + 4000);
  }
  CHECK(memory_stats().live_buffers == before.live_buffers);
}

TEST_CASE("a freed buffer is reused by a slightly different size (size classes)") {
  release_cached_buffers();
  const int64_t n = 300007;  // 1.2 MB: above the 64 KiB threshold, off any size-class boundary
  const float* first = nullptr;
  {
    Tensor a = Tensor::empty({n});
    first = a.data();
  }
  const int64_t cached = memory_stats().cached_bytes;
  CHECK(cached >= n * 4);
  CHECK(cached <= n * 4 + n * 4 / 8 + 64);  // at most 12.5% slack
  {
    // A batch one row longer or shorter lands in the same class and takes the cached buffer.
    Tensor b = Tensor::empty({n + 100});
    CHECK(b.data() == first);
    CHECK(memory_stats().cached_bytes == 0);
  }
  {
    Tensor c = Tensor::empty({n - 100});
    CHECK(c.data() == first);
  }
  // Twice the size is another class: a fresh buffer.
  Tensor d = Tensor::empty({2 * n});
  CHECK(d.data() != first);
  release_cached_buffers();
}

TEST_CASE("a smaller batch runs in a cached larger buffer (at most 8x) instead of a new one") {
  release_cached_buffers();
  const int64_t full = 4 * 300007;  // a full batch's tensor; the last batch is a quarter of it
  const float* big = nullptr;
  {
    Tensor a = Tensor::empty({full});
    big = a.data();
  }
  const int64_t big_class = memory_stats().cached_bytes;
  {
    Tensor quarter = Tensor::empty({full / 4});  // a miss on its own class: takes the big buffer
    CHECK(quarter.data() == big);
    CHECK(memory_stats().cached_bytes == 0);
  }
  // Freed, it goes back under the size it really has, and serves the full size again.
  CHECK(memory_stats().cached_bytes == big_class);
  {
    Tensor again = Tensor::empty({full});
    CHECK(again.data() == big);
  }
  // More than 8x smaller: a fresh buffer, the big one stays cached.
  Tensor tiny = Tensor::empty({full / 16});
  CHECK(tiny.data() != big);
  CHECK(memory_stats().cached_bytes == big_class);
  release_cached_buffers();
}
