// Modules: named, nested collections of parameters and buffers, with a train/eval mode.
//
// A parameter is a leaf Tensor that requires grad; a buffer is state that is saved but not
// trained (BatchNorm's running statistics). Names are hierarchical, joined by dots
// ("space.send.0.weight"), and are the names used in checkpoints.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "autograd/ops.h"
#include "autograd/rng.h"
#include "autograd/tensor.h"

namespace stgnn {

using NamedTensorList = std::vector<std::pair<std::string, Tensor>>;

class Module {
 public:
  virtual ~Module() = default;
  Module() = default;
  Module(const Module&) = delete;
  Module& operator=(const Module&) = delete;

  NamedTensorList named_parameters() const;
  std::vector<Tensor> parameters() const;
  NamedTensorList named_buffers() const;
  int64_t parameter_count() const;

  void train(bool on = true);
  void eval() { train(false); }
  bool is_training() const { return training_; }
  void zero_grad();

 protected:
  // Registers a parameter (marked requires_grad) and returns the handle to keep as a member.
  Tensor register_parameter(const std::string& name, Tensor value);
  Tensor register_buffer(const std::string& name, Tensor value);
  template <typename M>
  std::shared_ptr<M> register_module(const std::string& name, std::shared_ptr<M> child) {
    children_.emplace_back(name, child);
    return child;
  }

 private:
  void collect(const std::string& prefix, bool buffers, NamedTensorList& out) const;
  NamedTensorList parameters_;
  NamedTensorList buffers_;
  std::vector<std::pair<std::string, std::shared_ptr<Module>>> children_;
  bool training_ = true;
};

// A module with one input and one output, so it can sit in a Sequential.
class Layer : public Module {
 public:
  virtual Tensor forward(const Tensor& x) = 0;
  Tensor operator()(const Tensor& x) { return forward(x); }
};

// ---- layers (initialised as PyTorch does, from the generator given, default global_rng()) ----

// y = x W^T + b; weight [out, in], bias [out]; U(-1/sqrt(in), 1/sqrt(in)) for both.
class Linear : public Layer {
 public:
  Linear(int64_t in, int64_t out, bool bias = true, Rng& rng = global_rng());
  Tensor forward(const Tensor& x) override;
  Tensor weight, bias;
};

// Linear layers with ReLU between them, and after the last one when activate_last.
// sizes = {in, hidden..., out}; layers are named "0", "1", ...
class MLP : public Layer {
 public:
  MLP(const std::vector<int64_t>& sizes, bool activate_last = false, Rng& rng = global_rng());
  Tensor forward(const Tensor& x) override;
  std::vector<std::shared_ptr<Linear>> layers;
  bool activate_last;
};

// NCHW convolution; weight [out, in, k, k], bias [out]; U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
class Conv2d : public Layer {
 public:
  Conv2d(int64_t in, int64_t out, int64_t kernel, int64_t stride = 1, int64_t padding = 0,
         bool bias = true, Rng& rng = global_rng());
  Tensor forward(const Tensor& x) override;
  Tensor weight, bias;
  int64_t stride, padding;
};

class MaxPool2d : public Layer {
 public:
  explicit MaxPool2d(int64_t kernel, int64_t stride = 0) : kernel(kernel), stride(stride) {}
  Tensor forward(const Tensor& x) override { return max_pool2d(x, kernel, stride); }
  int64_t kernel, stride;
};

class ReLU : public Layer {
 public:
  Tensor forward(const Tensor& x) override { return relu(x); }
};

// Batch normalisation over [N, C] (BatchNorm1d) or [N, C, H, W] (BatchNorm2d): weight ones,
// bias zeros, buffers running_mean (zeros) and running_var (ones), momentum 0.1, eps 1e-5.
class BatchNorm : public Layer {
 public:
  explicit BatchNorm(int64_t channels, float momentum = 0.1f, float eps = 1e-5f,
                     bool affine = true);
  Tensor forward(const Tensor& x) override;
  Tensor weight, bias, running_mean, running_var;
  float momentum, eps;
};
using BatchNorm1d = BatchNorm;
using BatchNorm2d = BatchNorm;

class LayerNorm : public Layer {
 public:
  explicit LayerNorm(int64_t features, float eps = 1e-5f);
  Tensor forward(const Tensor& x) override { return layer_norm(x, weight, bias, eps); }
  Tensor weight, bias;
  float eps;
};

// Inverted dropout; each training call draws a fresh mask seed from `rng`.
class Dropout : public Layer {
 public:
  explicit Dropout(float p, Rng& rng = global_rng()) : p(p), rng_(&rng) {}
  Tensor forward(const Tensor& x) override;
  float p;

 private:
  Rng* rng_;
};

class Sequential : public Layer {
 public:
  Sequential() = default;
  // Appends a layer named by its position ("0", "1", ...).
  template <typename L>
  std::shared_ptr<L> add(std::shared_ptr<L> layer) {
    register_module(std::to_string(layers_.size()), layer);
    layers_.push_back(layer);
    return layer;
  }
  Tensor forward(const Tensor& x) override;
  size_t size() const { return layers_.size(); }

 private:
  std::vector<std::shared_ptr<Layer>> layers_;
};

}  // namespace stgnn
