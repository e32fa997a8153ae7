// Optimisers step by step against hand-computed updates and PyTorch; clipping; schedules.
#include <doctest/doctest.h>

#include <cmath>

#include "nn/optim.h"
#include "support/check.h"

using namespace stgnn;
using namespace stgnn::testing;

namespace {

// A parameter p and the loss sum((p - target)^2), whose gradient is 2 (p - target).
struct Quadratic {
  Tensor p = Tensor::from_vector({4}, {1.0f, -2.0f, 3.0f, 0.5f}).set_requires_grad(true);
  Tensor target = Tensor::from_vector({4}, {0.0f, 1.0f, -1.0f, 2.0f});
  void compute_grad() {
    p.zero_grad();
    Tensor d = sub(p, target);
    sum(mul(d, d)).backward();
  }
};

}  // namespace

TEST_CASE("SGD: plain, weight decay, momentum, Nesterov, by hand") {
  // One parameter x = 1, gradient 2 (x - 0) = 2x each step.
  const auto run = [](double momentum, bool nesterov, double wd, int steps) {
    Tensor x = Tensor::from_vector({1}, {1.0f}).set_requires_grad(true);
    SGD opt({{"x", x}}, 0.1, momentum, nesterov, wd);
    for (int i = 0; i < steps; ++i) {
      x.zero_grad();
      sum(mul(x, x)).backward();
      opt.step();
    }
    return static_cast<double>(x.item());
  };
  // plain: x <- x - 0.1 * 2x = 0.8x
  CHECK(run(0, false, 0, 2) == doctest::Approx(0.64));
  // weight decay 0.5: d = 2x + 0.5x = 2.5x, x <- 0.75x
  CHECK(run(0, false, 0.5, 2) == doctest::Approx(0.5625));
  // momentum 0.9: step1 b = 2, x = 0.8; step2 d = 1.6, b = 0.9*2 + 1.6 = 3.4, x = 0.8 - 0.34 = 0.46
  CHECK(run(0.9, false, 0, 2) == doctest::Approx(0.46));
  // Nesterov: step1 b = 2, d = 2 + 1.8 = 3.8, x = 0.62; step2 g = 1.24, b = 1.8 + 1.24 = 3.04,
  // d = 1.24 + 0.9 * 3.04 = 3.976, x = 0.62 - 0.3976 = 0.2224
  CHECK(run(0.9, true, 0, 2) == doctest::Approx(0.2224));
  Tensor x = Tensor::ones({1}).set_requires_grad(true);
  CHECK_THROWS_AS(SGD({{"x", x}}, 0.1, 0.0, true), ValueError);
}

TEST_CASE("Adam and AdamW match torch.optim step by step") {
  for (const std::string kind : {"adam", "adamw"}) {
    CAPTURE(kind);
    Quadratic q;
    std::unique_ptr<Optimizer> opt;
    if (kind == "adam") {
      opt = std::make_unique<Adam>(NamedTensorList{{"p", q.p}}, 0.1, 0.9, 0.999, 1e-8, 0.05);
    } else {
      opt = std::make_unique<AdamW>(NamedTensorList{{"p", q.p}}, 0.1, 0.9, 0.999, 1e-8, 0.05);
    }
    Tensor expected = read_fixture("torch_ops", kind + "_steps");
    for (int step = 0; step < 5; ++step) {
      q.compute_grad();
      opt->step();
      check_close(q.p, slice(expected, 0, step, step + 1).reshape({4}), 1e-6, 1e-6);
    }
    CHECK(opt->steps() == 5);
    CHECK(opt->state().size() == 2);
  }
}

TEST_CASE("a parameter without gradient is left alone") {
  Tensor a = Tensor::ones({2}).set_requires_grad(true);
  Tensor b = Tensor::ones({2}).set_requires_grad(true);
  Adam opt({{"a", a}, {"b", b}}, 0.1);
  sum(a).backward();
  opt.step();
  CHECK(b.to_vector() == std::vector<float>{1, 1});
  CHECK(a.to_vector() != std::vector<float>{1, 1});
}

TEST_CASE("clip_grad_norm scales to the max norm and reports the original") {
  Tensor a = Tensor::zeros({2}).set_requires_grad(true);
  Tensor b = Tensor::zeros({1}).set_requires_grad(true);
  a.accumulate_grad(Tensor::from_vector({2}, {3, 0}));
  b.accumulate_grad(Tensor::from_vector({1}, {4}));
  CHECK(clip_grad_norm({a, b}, 1.0) == doctest::Approx(5.0));
  CHECK(grad_norm({a, b}) == doctest::Approx(1.0).epsilon(1e-5));
  CHECK(a.grad().to_vector()[0] == doctest::Approx(0.6f).epsilon(1e-5));
  CHECK(clip_grad_norm({a, b}, 10.0) == doctest::Approx(1.0).epsilon(1e-5));  // below: untouched
  CHECK(b.grad().to_vector()[0] == doctest::Approx(0.8f).epsilon(1e-5));
}

TEST_CASE("learning-rate schedules") {
  LrSchedule constant;
  constant.base_lr = 0.5;
  CHECK(constant.lr_at(100) == 0.5);
  LrSchedule step;
  step.kind = LrSchedule::Kind::kStep;
  step.base_lr = 1.0;
  step.step_size = 10;
  step.gamma = 0.5;
  CHECK(step.lr_at(9) == 1.0);
  CHECK(step.lr_at(10) == 0.5);
  CHECK(step.lr_at(25) == 0.25);
  LrSchedule cosine;
  cosine.kind = LrSchedule::Kind::kCosine;
  cosine.base_lr = 1.0;
  cosine.min_lr = 0.1;
  cosine.warmup_steps = 4;
  cosine.total_steps = 14;
  CHECK(cosine.lr_at(0) == doctest::Approx(0.25));  // warm-up 1/4, 2/4, ...
  CHECK(cosine.lr_at(3) == doctest::Approx(1.0));
  CHECK(cosine.lr_at(4) == doctest::Approx(1.0));   // annealing starts at the top
  CHECK(cosine.lr_at(9) == doctest::Approx(0.55));  // half way: (1 + 0.1) / 2
  CHECK(cosine.lr_at(14) == doctest::Approx(0.1));
  CHECK(cosine.lr_at(100) == doctest::Approx(0.1));
  CHECK(LrSchedule::parse_kind("cosine") == LrSchedule::Kind::kCosine);
  CHECK_THROWS_AS(LrSchedule::parse_kind("linear"), ValueError);
}
