// Optimisers (SGD, Adam, AdamW) with PyTorch's exact update rules, gradient clipping by
// global norm, and learning-rate schedules.
//
// An optimiser holds the named parameters it updates and named state tensors (momentum
// buffers, Adam moments) so that a checkpoint can save and restore it exactly.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "nn/module.h"

namespace stgnn {

class Optimizer {
 public:
  explicit Optimizer(NamedTensorList parameters, double lr);
  virtual ~Optimizer() = default;
  Optimizer(const Optimizer&) = delete;
  Optimizer& operator=(const Optimizer&) = delete;

  // One update from the accumulated gradients (a parameter without gradient is skipped).
  void step();
  void zero_grad();

  double lr;
  int64_t steps() const { return steps_; }
  void set_steps(int64_t steps) { steps_ = steps; }
  // Named state tensors, "<state>.<parameter name>", created lazily by the first step.
  NamedTensorList state() const;
  // Replaces the state with `state` (names as state() gives them). Throws ValueError naming
  // an entry whose parameter is unknown or whose shape differs, before changing anything.
  void load_state(const NamedTensorList& state);
  // The optimiser's kind ("sgd", "adam", "adamw"), saved with checkpoints.
  virtual std::string kind() const = 0;
  const NamedTensorList& parameters() const { return parameters_; }

 protected:
  // Updates parameter i (data p [n], gradient g [n]) for step number t (1-based).
  virtual void update(size_t i, float* p, const float* g, int64_t n, int64_t t) = 0;
  // The state tensor named `state` for parameter i, created as zeros when absent.
  float* state_for(const std::string& state, size_t i);
  bool has_state(const std::string& state, size_t i) const;

 private:
  NamedTensorList parameters_;
  std::vector<std::pair<std::string, Tensor>> state_;
  int64_t steps_ = 0;
};

// p -= lr * d, d = g + wd p, with momentum buffer b = mu b + (1 - dampening) d (b = d on the
// first step), d = b (or d + mu b for Nesterov).
class SGD : public Optimizer {
 public:
  SGD(NamedTensorList parameters, double lr, double momentum = 0.0, bool nesterov = false,
      double weight_decay = 0.0, double dampening = 0.0);
  std::string kind() const override { return "sgd"; }
  double momentum, weight_decay, dampening;
  bool nesterov;

 protected:
  void update(size_t i, float* p, const float* g, int64_t n, int64_t t) override;
};

// Adam with L2 (weight decay added to the gradient), as torch.optim.Adam; with decoupled =
// true, AdamW (p *= 1 - lr wd before the step), as torch.optim.AdamW.
class Adam : public Optimizer {
 public:
  Adam(NamedTensorList parameters, double lr, double beta1 = 0.9, double beta2 = 0.999,
       double eps = 1e-8, double weight_decay = 0.0, bool decoupled = false);
  std::string kind() const override { return decoupled ? "adamw" : "adam"; }
  double beta1, beta2, eps, weight_decay;
  bool decoupled;

 protected:
  void update(size_t i, float* p, const float* g, int64_t n, int64_t t) override;
};

class AdamW : public Adam {
 public:
  AdamW(NamedTensorList parameters, double lr, double beta1 = 0.9, double beta2 = 0.999,
        double eps = 1e-8, double weight_decay = 0.01)
      : Adam(std::move(parameters), lr, beta1, beta2, eps, weight_decay, true) {}
};

// Scales all gradients so that their global L2 norm is at most max_norm (as
// torch.nn.utils.clip_grad_norm_); returns the norm before clipping.
double clip_grad_norm(const std::vector<Tensor>& parameters, double max_norm);

// The global L2 norm of the gradients, and whether every gradient value is finite.
double grad_norm(const std::vector<Tensor>& parameters);

// Learning rate per step: optional linear warm-up, then constant, step decay or cosine
// annealing over the remaining steps.
struct LrSchedule {
  enum class Kind { kConstant, kStep, kCosine };
  Kind kind = Kind::kConstant;
  double base_lr = 1e-3;
  int64_t warmup_steps = 0;  // lr rises linearly from base_lr / warmup to base_lr
  int64_t total_steps = 1;   // cosine: warm-up + annealing length (T_max = total - warmup)
  int64_t step_size = 1;     // step decay: multiply by gamma every step_size steps
  double gamma = 0.1;
  double min_lr = 0.0;  // cosine floor (eta_min)

  double lr_at(int64_t step) const;                 // step counts from 0
  static Kind parse_kind(const std::string& name);  // "constant", "step", "cosine"
  static std::string kind_name(Kind kind);
};

}  // namespace stgnn
