#include "autograd/tensor.h"

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <sstream>
#include <unordered_set>

#include "autograd/parallel.h"

namespace stgnn {

// ---------------------------------------------------------------- shapes

std::string shape_str(const Shape& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ",";
    s += std::to_string(shape[i]);
  }
  return s + "]";
}

int64_t shape_numel(const Shape& shape) {
  int64_t n = 1;
  for (int64_t d : shape)
    n *= d;
  return n;
}

// ---------------------------------------------------------------- storage

namespace {
std::atomic<int64_t> g_live_buffers{0};
std::atomic<int64_t> g_live_bytes{0};
std::atomic<int64_t> g_peak_bytes{0};
constexpr size_t kAlignment = 64;  // one cache line; also the widest SIMD load

// A cache of freed buffers keyed by their size class (allocation_bytes). Training repeats the same
// shapes every step, so nearly every allocation after the first step is served from here; without
// it, large buffers go back to the kernel on free (glibc unmaps them) and every step pays for fresh
// zeroed pages (page faults were a fifth of the run time).
class BufferCache {
 public:
  static BufferCache& instance() {
    static BufferCache* cache = new BufferCache();  // never destroyed: tensors may outlive main
    return *cache;
  }
  // A cached buffer for `bytes`: one of exactly that size class, else the smallest cached one
  // at most kMaxReuseSlack times larger (its size goes to *capacity), else nullptr. Reusing a
  // larger idle buffer on a miss is what keeps memory flat when a batch shrinks (the last batch
  // of an epoch, evaluation batches): the small batch runs in the big batch's cached buffers
  // instead of allocating its own on top of them. Steady-state training never misses, so this
  // changes nothing there.
  void* take(size_t bytes, size_t* capacity) {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = free_.lower_bound(bytes);
    if (it == free_.end() || it->first > kMaxReuseSlack * bytes) return nullptr;
    void* p = it->second.back();
    *capacity = it->first;
    it->second.pop_back();
    cached_bytes_ -= it->first;
    if (it->second.empty()) free_.erase(it);
    return p;
  }
  void give(void* p, size_t bytes) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (cached_bytes_ + bytes <= limit_) {
        free_[bytes].push_back(p);
        cached_bytes_ += bytes;
        return;
      }
    }
    std::free(p);
  }
  // Returns every cached buffer to the system (after an allocation failure, and in tests).
  void release_all() {
    std::lock_guard<std::mutex> lock(mutex_);
    for (auto& [bytes, list] : free_) {
      for (void* p : list)
        std::free(p);
    }
    free_.clear();
    cached_bytes_ = 0;
  }
  size_t cached_bytes() {
    std::lock_guard<std::mutex> lock(mutex_);
    return cached_bytes_;
  }

 private:
  BufferCache() {
    if (const char* limit = std::getenv("STGNN_BUFFER_CACHE_MB")) {
      limit_ = static_cast<size_t>(std::strtoull(limit, nullptr, 10)) << 20;
    }
  }
  std::mutex mutex_;
  static constexpr size_t kMaxReuseSlack = 8;
  std::map<size_t, std::vector<void*>> free_;  // by size, for the smallest fit on a miss
  size_t cached_bytes_ = 0;
  size_t limit_ = size_t{4} << 30;
};

// Bytes allocated for `size` floats: a multiple of the alignment, and above 64 KiB rounded up
// to a size class (eight per power of two, so at most 12.5% slack). Batches whose shapes vary
// a little from step to step (GLEVR takes have different numbers of segments) then reuse each
// other's cached buffers instead of filling the cache with sizes that never come back.
size_t allocation_bytes(int64_t size) {
  const size_t bytes =
      std::max<size_t>(kAlignment, (static_cast<size_t>(size) * sizeof(float) + kAlignment - 1) /
                                       kAlignment * kAlignment);
  if (bytes <= (size_t{64} << 10)) return bytes;
  const int top = 63 - __builtin_clzll(static_cast<unsigned long long>(bytes));  // 2^top <= bytes
  const size_t step = size_t{1} << (top - 3);
  return (bytes + step - 1) / step * step;
}

}  // namespace

Storage::Storage(int64_t size) : data_(nullptr), size_(size), capacity_bytes_(0) {
  if (size < 0) throw ValueError("Storage: negative size " + std::to_string(size));
  const size_t bytes = allocation_bytes(size);
  capacity_bytes_ = bytes;
  data_ = static_cast<float*>(BufferCache::instance().take(bytes, &capacity_bytes_));
  if (!data_) data_ = static_cast<float*>(std::aligned_alloc(kAlignment, bytes));
  if (!data_) {
    BufferCache::instance().release_all();
    data_ = static_cast<float*>(std::aligned_alloc(kAlignment, bytes));
  }
  if (!data_) throw Error("Storage: out of memory allocating " + std::to_string(bytes) + " bytes");
  g_live_buffers.fetch_add(1, std::memory_order_relaxed);
  const int64_t now = g_live_bytes.fetch_add(size * static_cast<int64_t>(sizeof(float)),
                                             std::memory_order_relaxed) +
                      size * static_cast<int64_t>(sizeof(float));
  int64_t peak = g_peak_bytes.load(std::memory_order_relaxed);
  while (now > peak && !g_peak_bytes.compare_exchange_weak(peak, now)) {
  }
}

Storage::~Storage() {
  BufferCache::instance().give(data_, capacity_bytes_);
  g_live_buffers.fetch_sub(1, std::memory_order_relaxed);
  g_live_bytes.fetch_sub(size_ * static_cast<int64_t>(sizeof(float)), std::memory_order_relaxed);
}

MemoryStats memory_stats() {
  return {g_live_buffers.load(), g_live_bytes.load(), g_peak_bytes.load(),
          static_cast<int64_t>(BufferCache::instance().cached_bytes())};
}

void release_cached_buffers() {
  BufferCache::instance().release_all();
}

// ---------------------------------------------------------------- grad mode

namespace {
thread_local bool t_grad_enabled = true;
}

bool grad_enabled() {
  return t_grad_enabled;
}
NoGradGuard::NoGradGuard() : previous_(t_grad_enabled) {
  t_grad_enabled = false;
}
NoGradGuard::~NoGradGuard() {
  t_grad_enabled = previous_;
}

// ---------------------------------------------------------------- construction

Tensor Tensor::empty(const Shape& shape) {
  for (int64_t d : shape) {
    if (d < 0) throw ShapeError("Tensor::empty: negative dimension in " + shape_str(shape));
  }
  auto impl = std::make_shared<TensorImpl>();
  impl->shape = shape;
  impl->storage = std::make_shared<Storage>(shape_numel(shape));
  return Tensor(std::move(impl));
}

Tensor Tensor::zeros(const Shape& shape) {
  return full(shape, 0.0f);
}
Tensor Tensor::ones(const Shape& shape) {
  return full(shape, 1.0f);
}

Tensor Tensor::full(const Shape& shape, float value) {
  Tensor t = empty(shape);
  t.fill_(value);
  return t;
}

Tensor Tensor::scalar(float value) {
  return full({}, value);
}

Tensor Tensor::from_vector(const Shape& shape, const std::vector<float>& values) {
  if (static_cast<int64_t>(values.size()) != shape_numel(shape)) {
    throw ShapeError("Tensor::from_vector: " + std::to_string(values.size()) +
                     " values for shape " + shape_str(shape));
  }
  return from_data(shape, values.data());
}

Tensor Tensor::from_data(const Shape& shape, const float* values) {
  Tensor t = empty(shape);
  if (t.numel() > 0) std::memcpy(t.data(), values, static_cast<size_t>(t.numel()) * sizeof(float));
  return t;
}

// ---------------------------------------------------------------- accessors

void Tensor::require_defined(const char* what) const {
  if (!impl_) throw ValueError(std::string(what) + ": undefined tensor");
}

const Shape& Tensor::shape() const {
  require_defined("Tensor::shape");
  return impl_->shape;
}

int64_t Tensor::size(int64_t axis) const {
  const int64_t n = dim();
  const int64_t a = axis < 0 ? axis + n : axis;
  if (a < 0 || a >= n) {
    throw ShapeError("Tensor::size: axis " + std::to_string(axis) + " out of range for " +
                     shape_str(shape()));
  }
  return impl_->shape[static_cast<size_t>(a)];
}

int64_t Tensor::numel() const {
  return shape_numel(shape());
}

float* Tensor::data() {
  require_defined("Tensor::data");
  return impl_->storage->data() + impl_->offset;
}

const float* Tensor::data() const {
  require_defined("Tensor::data");
  return impl_->storage->data() + impl_->offset;
}

float Tensor::item() const {
  if (numel() != 1) throw ShapeError("Tensor::item: tensor of shape " + shape_str(shape()));
  return data()[0];
}

std::vector<float> Tensor::to_vector() const {
  const float* p = data();
  return std::vector<float>(p, p + numel());
}

std::string Tensor::str() const {
  if (!impl_) return "Tensor(undefined)";
  std::ostringstream out;
  out << "Tensor" << shape_str(shape());
  if (numel() <= 16) {
    out << " {";
    const float* p = data();
    for (int64_t i = 0; i < numel(); ++i)
      out << (i ? ", " : "") << p[i];
    out << "}";
  }
  return out.str();
}

Tensor Tensor::copy() const {
  return from_data(shape(), data());
}

Tensor Tensor::detach() const {
  require_defined("Tensor::detach");
  auto impl = std::make_shared<TensorImpl>();
  impl->shape = impl_->shape;
  impl->storage = impl_->storage;
  impl->offset = impl_->offset;
  return Tensor(std::move(impl));
}

Tensor Tensor::reshape(const Shape& new_shape) const {
  Shape resolved = new_shape;
  int64_t known = 1;
  int inferred = -1;
  for (size_t i = 0; i < resolved.size(); ++i) {
    if (resolved[i] == -1) {
      if (inferred >= 0) throw ShapeError("reshape: two -1 dims in " + shape_str(new_shape));
      inferred = static_cast<int>(i);
    } else if (resolved[i] < 0) {
      throw ShapeError("reshape: negative dim in " + shape_str(new_shape));
    } else {
      known *= resolved[i];
    }
  }
  if (inferred >= 0) {
    if (known == 0 || numel() % known != 0) {
      throw ShapeError("reshape: cannot reshape " + shape_str(shape()) + " to " +
                       shape_str(new_shape));
    }
    resolved[static_cast<size_t>(inferred)] = numel() / known;
  }
  if (shape_numel(resolved) != numel()) {
    throw ShapeError("reshape: cannot reshape " + shape_str(shape()) + " to " +
                     shape_str(new_shape));
  }
  Tensor view = detach();
  view.impl_->shape = resolved;
  const Tensor input = *this;
  return make_result(view, "reshape", {input}, [input](const Tensor&, const Tensor& g) {
    // The gradient of a view is the same numbers in the input's shape.
    input.accumulate_grad(g.reshape(input.shape()));
  });
}

void Tensor::fill_(float value) {
  float* p = data();
  const int64_t n = numel();
  parallel_for(n, kElementwiseGrain,
               [&](int64_t begin, int64_t end) { std::fill(p + begin, p + end, value); });
}

void Tensor::copy_from(const Tensor& source) {
  if (source.numel() != numel()) {
    throw ShapeError("copy_from: " + shape_str(source.shape()) + " into " + shape_str(shape()));
  }
  if (numel() > 0) {
    std::memcpy(data(), source.data(), static_cast<size_t>(numel()) * sizeof(float));
  }
}

// ---------------------------------------------------------------- autograd

bool Tensor::requires_grad() const {
  return impl_ && impl_->requires_grad;
}

Tensor& Tensor::set_requires_grad(bool value) {
  require_defined("set_requires_grad");
  if (impl_->node) throw ValueError("set_requires_grad: only leaves can be marked");
  impl_->requires_grad = value;
  return *this;
}

bool Tensor::is_leaf() const {
  return impl_ && !impl_->node;
}

Tensor Tensor::grad() const {
  require_defined("Tensor::grad");
  return impl_->grad;
}

void Tensor::zero_grad() {
  require_defined("zero_grad");
  impl_->grad = Tensor();
}

const std::shared_ptr<Node>& Tensor::node() const {
  require_defined("Tensor::node");
  return impl_->node;
}

void Tensor::accumulate_grad(Tensor g) const {
  require_defined("accumulate_grad");
  if (g.shape() != impl_->shape) {
    throw ShapeError("accumulate_grad: gradient " + shape_str(g.shape()) + " for tensor " +
                     shape_str(impl_->shape) +
                     (impl_->node ? " (op " + impl_->node->op + ")" : ""));
  }
  Tensor& acc = impl_->grad;
  if (!acc.defined()) {
    // Steal the buffer when nobody else sees it; otherwise copy (the gradient may be the
    // very grad_output of another node, or a view of it).
    const bool exclusive = g.impl_.use_count() == 1 && g.impl_->storage.use_count() == 1 &&
                           g.impl_->offset == 0 && g.impl_->storage->size() == g.numel();
    acc = exclusive ? g.detach() : g.copy();
    return;
  }
  float* a = acc.data();
  const float* b = g.data();
  parallel_for(acc.numel(), kElementwiseGrain, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i)
      a[i] += b[i];
  });
}

Tensor Tensor::make_result(Tensor result, const std::string& op, std::vector<Tensor> inputs,
                           std::function<void(const Tensor&, const Tensor&)> backward) {
  if (!grad_enabled()) return result;
  bool any = false;
  for (const Tensor& t : inputs)
    any = any || t.requires_grad();
  if (!any) return result;
  auto node = std::make_shared<Node>();
  node->op = op;
  node->inputs = std::move(inputs);
  node->backward = std::move(backward);
  result.impl_->node = std::move(node);
  result.impl_->requires_grad = true;
  return result;
}

void Tensor::backward() const {
  require_defined("backward");
  if (numel() != 1) {
    throw ShapeError("backward: implicit gradient needs a 1-element tensor, got " +
                     shape_str(shape()));
  }
  backward(Tensor::ones(shape()));
}

void Tensor::backward(const Tensor& grad_output) const {
  require_defined("backward");
  if (!requires_grad()) throw ValueError("backward: tensor does not require grad");
  if (grad_output.shape() != shape()) {
    throw ShapeError("backward: gradient " + shape_str(grad_output.shape()) + " for output " +
                     shape_str(shape()));
  }
  // Topological order by iterative depth-first search over the recorded nodes (recursion
  // would overflow the stack on long recurrences). `order` owns each impl until the pass has
  // used it, so intermediates the caller no longer holds are freed as soon as possible.
  std::vector<std::shared_ptr<TensorImpl>> order;
  std::unordered_set<TensorImpl*> visited;
  std::vector<std::pair<std::shared_ptr<TensorImpl>, size_t>> stack;
  stack.emplace_back(impl_, 0);
  visited.insert(impl_.get());
  while (!stack.empty()) {
    auto& [impl, next_input] = stack.back();
    if (impl->node && next_input < impl->node->inputs.size()) {
      const std::shared_ptr<TensorImpl>& child = impl->node->inputs[next_input++].impl_;
      if (child && child->requires_grad && visited.insert(child.get()).second) {
        stack.emplace_back(child, 0);
      }
    } else {
      order.push_back(std::move(impl));
      stack.pop_back();
    }
  }
  NoGradGuard no_grad;  // backward closures compute with ops but record nothing
  accumulate_grad(grad_output);
  // Reverse topological order: every consumer runs before the tensors it consumed. A
  // non-leaf's gradient and node are released right after use, so the graph is gone at the
  // end and memory falls during the pass.
  for (auto it = order.rbegin(); it != order.rend(); ++it) {
    std::shared_ptr<TensorImpl> impl = std::move(*it);
    if (!impl->node) continue;  // leaf: keeps its accumulated gradient
    std::shared_ptr<Node> node = std::move(impl->node);
    Tensor grad = std::move(impl->grad);
    impl->grad = Tensor();
    impl->requires_grad = false;
    if (grad.defined()) {
      // A history-free handle on the output lets the closure read its own result (sigmoid,
      // softmax, ...).
      auto view = std::make_shared<TensorImpl>();
      view->shape = impl->shape;
      view->storage = impl->storage;
      view->offset = impl->offset;
      node->backward(Tensor(std::move(view)), grad);
    }
  }
}

// ---------------------------------------------------------------- IndexTensor

IndexTensor::IndexTensor(Shape shape_, std::vector<int64_t> values_)
    : shape(std::move(shape_)), values(std::move(values_)) {
  if (shape_numel(shape) != static_cast<int64_t>(values.size())) {
    throw ShapeError("IndexTensor: " + std::to_string(values.size()) + " values for shape " +
                     shape_str(shape));
  }
}

IndexTensor::IndexTensor(std::vector<int64_t> values_)
    : shape({static_cast<int64_t>(values_.size())}), values(std::move(values_)) {}

}  // namespace stgnn
