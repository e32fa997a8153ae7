// Dense float32 tensors with reverse-mode automatic differentiation.
//
// A Tensor is a handle (shared_ptr) to a TensorImpl: a shape, a row-major contiguous view
// (storage + element offset) into a shared aligned float buffer, and, for tensors produced
// by a differentiable op while gradients are enabled, the Node that records the op's inputs
// and its backward closure. Views (reshape, leading-dim slices, detach) share storage.
//
// Every tensor is contiguous: ops that permute data (transpose, permute, most slices) copy.
// That keeps every kernel a plain loop over row-major memory.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "autograd/error.h"

namespace stgnn {

using Shape = std::vector<int64_t>;

// "[2,3,4]"
std::string shape_str(const Shape& shape);
// Product of the dims (1 for a 0-d shape).
int64_t shape_numel(const Shape& shape);

// An aligned float buffer. Allocation counts are global so tests can prove that training
// does not leak (live buffers and bytes return to their baseline after each step).
class Storage {
 public:
  explicit Storage(int64_t size);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;
  float* data() { return data_; }
  const float* data() const { return data_; }
  int64_t size() const { return size_; }

 private:
  float* data_;
  int64_t size_;
  size_t capacity_bytes_;  // bytes actually held: a cached buffer may be larger than size_ needs
};

struct MemoryStats {
  int64_t live_buffers;  // buffers held by tensors
  int64_t live_bytes;
  int64_t peak_bytes;    // the most live_bytes ever
  int64_t cached_bytes;  // freed buffers kept for reuse (not live)
};
MemoryStats memory_stats();
// Freed buffers are kept (up to STGNN_BUFFER_CACHE_MB, default 4096) and handed out again for
// the same size class (or, on a miss, a cached buffer at most 8x larger); this returns them all
// to the system.
void release_cached_buffers();

class Tensor;
struct TensorImpl;

// The op that produced a non-leaf tensor: its inputs and how to send the output's gradient
// back to them. The closure receives the output so that it never has to capture it (which
// would make a reference cycle output -> node -> closure -> output).
struct Node {
  std::string op;
  std::vector<Tensor> inputs;
  std::function<void(const Tensor& output, const Tensor& grad_output)> backward;
};

class Tensor {
 public:
  Tensor() = default;  // undefined tensor (defined() == false)

  // ---- construction (leaves, requires_grad = false) ----
  static Tensor empty(const Shape& shape);  // uninitialised
  static Tensor zeros(const Shape& shape);
  static Tensor ones(const Shape& shape);
  static Tensor full(const Shape& shape, float value);
  static Tensor scalar(float value);  // 0-d
  static Tensor from_vector(const Shape& shape, const std::vector<float>& values);
  static Tensor from_data(const Shape& shape, const float* values);

  // ---- shape and data ----
  bool defined() const { return impl_ != nullptr; }
  const Shape& shape() const;
  int64_t dim() const { return static_cast<int64_t>(shape().size()); }
  int64_t size(int64_t axis) const;  // negative axis counts from the end
  int64_t numel() const;
  float* data();
  const float* data() const;
  float item() const;  // the single value of a 1-element tensor
  std::vector<float> to_vector() const;
  std::string str() const;  // "Tensor[2,3]" (+ values when small), for messages and debugging

  // A copy of the data with no history (a leaf).
  Tensor copy() const;
  // The same data (shared storage) with no history.
  Tensor detach() const;
  // A reshaped view sharing storage; one dim may be -1. Recorded by autograd.
  Tensor reshape(const Shape& shape) const;

  // ---- in-place writes; only for tensors outside any recorded graph (optimiser updates,
  // data loading, initialisation) ----
  void fill_(float value);
  void copy_from(const Tensor& source);  // same numel required

  // ---- autograd ----
  bool requires_grad() const;
  // Marks a leaf as a parameter whose gradient is accumulated; throws on non-leaves.
  Tensor& set_requires_grad(bool value);
  bool is_leaf() const;
  // Accumulated gradient (undefined until the first backward reaches this tensor).
  Tensor grad() const;
  void zero_grad();  // drops the accumulated gradient
  // Reverse-mode pass from this tensor. With no argument the tensor must hold one element and
  // its gradient is 1. Frees the recorded graph behind it afterwards.
  void backward() const;
  void backward(const Tensor& grad_output) const;
  // Adds g to this tensor's gradient. Used by backward closures; steals g's buffer when no one
  // else holds it.
  void accumulate_grad(Tensor g) const;

  // Identity of the underlying impl (for graph traversal and tests).
  TensorImpl* impl() const { return impl_.get(); }
  const std::shared_ptr<Node>& node() const;

  // Builds the result of a differentiable op: attaches a Node when gradients are enabled and
  // some input requires them. `backward` receives (output, grad_output).
  static Tensor make_result(Tensor result, const std::string& op, std::vector<Tensor> inputs,
                            std::function<void(const Tensor&, const Tensor&)> backward);

 private:
  explicit Tensor(std::shared_ptr<TensorImpl> impl) : impl_(std::move(impl)) {}
  void require_defined(const char* what) const;
  std::shared_ptr<TensorImpl> impl_;
};

struct TensorImpl {
  Shape shape;
  std::shared_ptr<Storage> storage;
  int64_t offset = 0;
  bool requires_grad = false;
  Tensor grad;
  std::shared_ptr<Node> node;
};

// Integer tensor for graph indices and labels (no autograd).
struct IndexTensor {
  Shape shape;
  std::vector<int64_t> values;

  IndexTensor() = default;
  IndexTensor(Shape shape_, std::vector<int64_t> values_);
  explicit IndexTensor(std::vector<int64_t> values_);  // 1-D
  int64_t numel() const { return static_cast<int64_t>(values.size()); }
  int64_t operator[](int64_t i) const { return values[static_cast<size_t>(i)]; }
};

// ---- gradient mode ----
bool grad_enabled();
// While alive, ops record nothing (evaluation, optimiser updates).
class NoGradGuard {
 public:
  NoGradGuard();
  ~NoGradGuard();
  NoGradGuard(const NoGradGuard&) = delete;
  NoGradGuard& operator=(const NoGradGuard&) = delete;

 private:
  bool previous_;
};

}  // namespace stgnn
