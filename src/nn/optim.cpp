#include "nn/optim.h"

#include <cmath>

#include "autograd/parallel.h"

namespace stgnn {

// ---------------------------------------------------------------- Optimizer

Optimizer::Optimizer(NamedTensorList parameters, double lr_)
    : lr(lr_), parameters_(std::move(parameters)) {
  for (const auto& [name, p] : parameters_) {
    if (!p.requires_grad())
      throw ValueError("optimizer: parameter '" + name + "' does not require grad");
  }
}

void Optimizer::step() {
  ++steps_;
  for (size_t i = 0; i < parameters_.size(); ++i) {
    Tensor p = parameters_[i].second;
    const Tensor g = p.grad();
    if (!g.defined()) continue;
    update(i, p.data(), g.data(), p.numel(), steps_);
  }
}

void Optimizer::zero_grad() {
  for (auto& [name, p] : parameters_)
    p.zero_grad();
}

NamedTensorList Optimizer::state() const {
  return state_;
}

void Optimizer::load_state(const NamedTensorList& state) {
  NamedTensorList restored;
  for (const auto& [name, t] : state) {
    // name = "<state kind>.<parameter name>"; state kinds contain no dot.
    const size_t dot = name.find('.');
    const std::string parameter_name = dot == std::string::npos ? "" : name.substr(dot + 1);
    const Tensor* parameter = nullptr;
    for (const auto& [pname, p] : parameters_) {
      if (pname == parameter_name) parameter = &p;
    }
    if (!parameter) throw ValueError("optimizer state '" + name + "' matches no parameter");
    if (parameter->shape() != t.shape()) {
      throw ValueError("optimizer state '" + name + "' has shape " + shape_str(t.shape()) +
                       ", parameter has " + shape_str(parameter->shape()));
    }
    restored.emplace_back(name, t.copy());
  }
  state_ = std::move(restored);
}

float* Optimizer::state_for(const std::string& state, size_t i) {
  const std::string name = state + "." + parameters_[i].first;
  for (auto& [key, t] : state_) {
    if (key == name) return t.data();
  }
  state_.emplace_back(name, Tensor::zeros(parameters_[i].second.shape()));
  return state_.back().second.data();
}

bool Optimizer::has_state(const std::string& state, size_t i) const {
  const std::string name = state + "." + parameters_[i].first;
  for (const auto& [key, t] : state_) {
    if (key == name) return true;
  }
  return false;
}

// ---------------------------------------------------------------- SGD

SGD::SGD(NamedTensorList parameters, double lr_, double momentum_, bool nesterov_,
         double weight_decay_, double dampening_)
    : Optimizer(std::move(parameters), lr_),
      momentum(momentum_),
      weight_decay(weight_decay_),
      dampening(dampening_),
      nesterov(nesterov_) {
  if (nesterov && (momentum <= 0 || dampening != 0)) {
    throw ValueError("SGD: Nesterov momentum needs momentum > 0 and zero dampening");
  }
}

void SGD::update(size_t i, float* p, const float* g, int64_t n, int64_t) {
  const bool first = momentum != 0.0 && !has_state("momentum_buffer", i);
  float* buffer = momentum != 0.0 ? state_for("momentum_buffer", i) : nullptr;
  const float mu = static_cast<float>(momentum), wd = static_cast<float>(weight_decay);
  const float damp = static_cast<float>(1.0 - dampening), rate = static_cast<float>(lr);
  parallel_for(n, kElementwiseGrain, [&](int64_t b, int64_t e) {
    for (int64_t k = b; k < e; ++k) {
      float d = g[k] + wd * p[k];
      if (buffer) {
        buffer[k] = first ? d : mu * buffer[k] + damp * d;
        d = nesterov ? d + mu * buffer[k] : buffer[k];
      }
      p[k] -= rate * d;
    }
  });
}

// ---------------------------------------------------------------- Adam / AdamW

Adam::Adam(NamedTensorList parameters, double lr_, double beta1_, double beta2_, double eps_,
           double weight_decay_, bool decoupled_)
    : Optimizer(std::move(parameters), lr_),
      beta1(beta1_),
      beta2(beta2_),
      eps(eps_),
      weight_decay(weight_decay_),
      decoupled(decoupled_) {}

void Adam::update(size_t i, float* p, const float* g, int64_t n, int64_t t) {
  float* m = state_for("exp_avg", i);
  float* v = state_for("exp_avg_sq", i);
  const double correction1 = 1.0 - std::pow(beta1, static_cast<double>(t));
  const double correction2 = 1.0 - std::pow(beta2, static_cast<double>(t));
  // As torch: p -= (lr / c1) * m / (sqrt(v) / sqrt(c2) + eps).
  const float step_size = static_cast<float>(lr / correction1);
  const float sqrt_c2 = static_cast<float>(std::sqrt(correction2));
  // (1 - beta) is formed in double before rounding, as torch does: 1 - 0.999f in float is off
  // by 1e-5 relative, which shows after a few steps.
  const float b1 = static_cast<float>(beta1), b2 = static_cast<float>(beta2),
              e = static_cast<float>(eps);
  const float one_minus_b1 = static_cast<float>(1.0 - beta1),
              one_minus_b2 = static_cast<float>(1.0 - beta2);
  const float wd = static_cast<float>(weight_decay),
              decay = static_cast<float>(1.0 - lr * weight_decay);
  parallel_for(n, kElementwiseGrain, [&](int64_t b, int64_t end) {
    for (int64_t k = b; k < end; ++k) {
      float grad = g[k];
      if (decoupled) {
        p[k] *= decay;
      } else {
        grad += wd * p[k];
      }
      m[k] = b1 * m[k] + one_minus_b1 * grad;
      v[k] = b2 * v[k] + one_minus_b2 * grad * grad;
      p[k] -= step_size * m[k] / (std::sqrt(v[k]) / sqrt_c2 + e);
    }
  });
}

// ---------------------------------------------------------------- clipping

double grad_norm(const std::vector<Tensor>& parameters) {
  double total = 0.0;
  for (const Tensor& p : parameters) {
    const Tensor g = p.grad();
    if (!g.defined()) continue;
    const float* d = g.data();
    total += fixed_chunks_reduce(g.numel(), [d](int64_t b, int64_t e) {
      double s = 0.0;
      for (int64_t i = b; i < e; ++i)
        s += static_cast<double>(d[i]) * d[i];
      return s;
    });
  }
  return std::sqrt(total);
}

double clip_grad_norm(const std::vector<Tensor>& parameters, double max_norm) {
  const double norm = grad_norm(parameters);
  const double coefficient = max_norm / (norm + 1e-6);
  if (coefficient < 1.0) {
    const float c = static_cast<float>(coefficient);
    for (const Tensor& p : parameters) {
      Tensor g = p.grad();
      if (!g.defined()) continue;
      float* d = g.data();
      for (int64_t i = 0; i < g.numel(); ++i)
        d[i] *= c;
    }
  }
  return norm;
}

// ---------------------------------------------------------------- schedules

double LrSchedule::lr_at(int64_t step) const {
  if (step < warmup_steps)
    return base_lr * static_cast<double>(step + 1) / static_cast<double>(warmup_steps);
  const int64_t t = step - warmup_steps;
  switch (kind) {
    case Kind::kConstant:
      return base_lr;
    case Kind::kStep:
      return base_lr * std::pow(gamma, static_cast<double>(t / std::max<int64_t>(1, step_size)));
    case Kind::kCosine: {
      const int64_t span = std::max<int64_t>(1, total_steps - warmup_steps);
      const double progress = std::min(1.0, static_cast<double>(t) / static_cast<double>(span));
      return min_lr + (base_lr - min_lr) * 0.5 * (1.0 + std::cos(M_PI * progress));
    }
  }
  return base_lr;
}

LrSchedule::Kind LrSchedule::parse_kind(const std::string& name) {
  if (name == "constant") return Kind::kConstant;
  if (name == "step") return Kind::kStep;
  if (name == "cosine") return Kind::kCosine;
  throw ValueError("unknown learning-rate schedule '" + name + "' (constant, step, cosine)");
}

std::string LrSchedule::kind_name(Kind kind) {
  switch (kind) {
    case Kind::kConstant:
      return "constant";
    case Kind::kStep:
      return "step";
    case Kind::kCosine:
      return "cosine";
  }
  return "constant";
}

}  // namespace stgnn
