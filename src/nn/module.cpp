#include "nn/module.h"

#include <cmath>

namespace stgnn {

// ---------------------------------------------------------------- Module

Tensor Module::register_parameter(const std::string& name, Tensor value) {
  value.set_requires_grad(true);
  parameters_.emplace_back(name, value);
  return value;
}

Tensor Module::register_buffer(const std::string& name, Tensor value) {
  buffers_.emplace_back(name, value);
  return value;
}

void Module::collect(const std::string& prefix, bool buffers, NamedTensorList& out) const {
  for (const auto& [name, t] : buffers ? buffers_ : parameters_) {
    if (t.defined()) out.emplace_back(prefix + name, t);
  }
  for (const auto& [name, child] : children_)
    child->collect(prefix + name + ".", buffers, out);
}

NamedTensorList Module::named_parameters() const {
  NamedTensorList out;
  collect("", false, out);
  return out;
}

std::vector<Tensor> Module::parameters() const {
  std::vector<Tensor> out;
  for (auto& [name, t] : named_parameters())
    out.push_back(t);
  return out;
}

NamedTensorList Module::named_buffers() const {
  NamedTensorList out;
  collect("", true, out);
  return out;
}

int64_t Module::parameter_count() const {
  int64_t n = 0;
  for (const auto& [name, t] : named_parameters())
    n += t.numel();
  return n;
}

void Module::train(bool on) {
  training_ = on;
  for (auto& [name, child] : children_)
    child->train(on);
}

void Module::zero_grad() {
  for (auto& [name, t] : named_parameters())
    t.zero_grad();
}

// ---------------------------------------------------------------- layers

namespace {

// PyTorch's default for Linear and Conv: kaiming_uniform(a = sqrt(5)) on the weight gives
// U(-1/sqrt(fan_in), 1/sqrt(fan_in)), and the bias uses the same bound.
Tensor uniform_fan_in(const Shape& shape, int64_t fan_in, Rng& rng) {
  const float bound = fan_in > 0 ? 1.0f / std::sqrt(static_cast<float>(fan_in)) : 0.0f;
  return rand_uniform(shape, rng, -bound, bound);
}

}  // namespace

Linear::Linear(int64_t in, int64_t out, bool with_bias, Rng& rng) {
  weight = register_parameter("weight", uniform_fan_in({out, in}, in, rng));
  if (with_bias) bias = register_parameter("bias", uniform_fan_in({out}, in, rng));
}

Tensor Linear::forward(const Tensor& x) {
  return linear(x, weight, bias);
}

MLP::MLP(const std::vector<int64_t>& sizes, bool activate_last_, Rng& rng)
    : activate_last(activate_last_) {
  if (sizes.size() < 2) throw ValueError("MLP: needs at least input and output sizes");
  for (size_t i = 0; i + 1 < sizes.size(); ++i) {
    layers.push_back(register_module(std::to_string(i),
                                     std::make_shared<Linear>(sizes[i], sizes[i + 1], true, rng)));
  }
}

Tensor MLP::forward(const Tensor& x) {
  Tensor h = x;
  for (size_t i = 0; i < layers.size(); ++i) {
    h = layers[i]->forward(h);
    if (i + 1 < layers.size() || activate_last) h = relu(h);
  }
  return h;
}

Conv2d::Conv2d(int64_t in, int64_t out, int64_t kernel, int64_t stride_, int64_t padding_,
               bool with_bias, Rng& rng)
    : stride(stride_), padding(padding_) {
  const int64_t fan_in = in * kernel * kernel;
  weight = register_parameter("weight", uniform_fan_in({out, in, kernel, kernel}, fan_in, rng));
  if (with_bias) bias = register_parameter("bias", uniform_fan_in({out}, fan_in, rng));
}

Tensor Conv2d::forward(const Tensor& x) {
  return conv2d(x, weight, bias, stride, padding);
}

BatchNorm::BatchNorm(int64_t channels, float momentum_, float eps_, bool affine)
    : momentum(momentum_), eps(eps_) {
  if (affine) {
    weight = register_parameter("weight", Tensor::ones({channels}));
    bias = register_parameter("bias", Tensor::zeros({channels}));
  }
  running_mean = register_buffer("running_mean", Tensor::zeros({channels}));
  running_var = register_buffer("running_var", Tensor::ones({channels}));
}

Tensor BatchNorm::forward(const Tensor& x) {
  return batch_norm(x, weight, bias, running_mean, running_var, is_training(), momentum, eps);
}

LayerNorm::LayerNorm(int64_t features, float eps_) : eps(eps_) {
  weight = register_parameter("weight", Tensor::ones({features}));
  bias = register_parameter("bias", Tensor::zeros({features}));
}

Tensor Dropout::forward(const Tensor& x) {
  return dropout(x, p, is_training(), is_training() ? rng_->next_u64() : 0);
}

Tensor Sequential::forward(const Tensor& x) {
  Tensor h = x;
  for (auto& layer : layers_)
    h = layer->forward(h);
  return h;
}

}  // namespace stgnn
