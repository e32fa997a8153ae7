// nn modules: hierarchical names, parameter counts, train/eval, initialisation, Sequential.
#include <doctest/doctest.h>

#include <cmath>

#include "nn/module.h"
#include "support/check.h"

using namespace stgnn;
using namespace stgnn::testing;

namespace {

class Block : public Module {
 public:
  Block() {
    send = register_module("send", std::make_shared<MLP>(std::vector<int64_t>{4, 8, 3}, true));
    norm = register_module("norm", std::make_shared<BatchNorm1d>(3));
    scale = register_parameter("scale", Tensor::ones({1}));
  }
  std::shared_ptr<MLP> send;
  std::shared_ptr<BatchNorm> norm;
  Tensor scale;
};

class Model : public Module {
 public:
  Model() { space = register_module("space", std::make_shared<Block>()); }
  std::shared_ptr<Block> space;
};

}  // namespace

TEST_CASE("hierarchical parameter and buffer names, counts") {
  Model m;
  std::vector<std::string> names;
  for (const auto& [name, t] : m.named_parameters())
    names.push_back(name);
  CHECK(names == std::vector<std::string>{"space.scale", "space.send.0.weight", "space.send.0.bias",
                                          "space.send.1.weight", "space.send.1.bias",
                                          "space.norm.weight", "space.norm.bias"});
  std::vector<std::string> buffers;
  for (const auto& [name, t] : m.named_buffers())
    buffers.push_back(name);
  CHECK(buffers == std::vector<std::string>{"space.norm.running_mean", "space.norm.running_var"});
  CHECK(m.parameter_count() == 1 + (4 * 8 + 8) + (8 * 3 + 3) + 3 + 3);
  for (const Tensor& p : m.parameters())
    CHECK(p.requires_grad());
}

TEST_CASE("train / eval propagates and changes BatchNorm and Dropout") {
  Model m;
  CHECK(m.space->norm->is_training());
  m.eval();
  CHECK_FALSE(m.space->norm->is_training());
  CHECK_FALSE(m.space->send->is_training());
  Dropout drop(0.5f);
  drop.eval();
  Tensor x = Tensor::ones({4, 4});
  CHECK(drop(x).to_vector() == x.to_vector());
  drop.train();
  CHECK(drop(x).to_vector() != x.to_vector());
  // BatchNorm in training updates running statistics; in eval it uses them and leaves them.
  BatchNorm1d bn(2);
  Tensor batch = Tensor::from_vector({3, 2}, {1, 10, 2, 20, 3, 30});
  bn(batch);
  CHECK(bn.running_mean.to_vector()[0] == doctest::Approx(0.2f));
  bn.eval();
  const std::vector<float> before = bn.running_mean.to_vector();
  bn(batch);
  CHECK(bn.running_mean.to_vector() == before);
}

TEST_CASE("default initialisation follows PyTorch's bounds") {
  Rng rng(11);
  Linear lin(50, 20, true, rng);
  const float bound = 1.0f / std::sqrt(50.0f);
  float lo = 1, hi = -1;
  for (float v : lin.weight.to_vector()) {
    lo = std::min(lo, v);
    hi = std::max(hi, v);
  }
  CHECK(lo >= -bound);
  CHECK(hi <= bound);
  CHECK(hi - lo > 1.8f * bound);  // the range is actually used
  Conv2d conv(3, 8, 3, 1, 0, true, rng);
  for (float v : conv.bias.to_vector())
    CHECK(std::fabs(v) <= 1.0f / std::sqrt(27.0f));
  // Same generator seed, same weights.
  Rng a(5), b(5);
  CHECK(Linear(7, 3, true, a).weight.to_vector() == Linear(7, 3, true, b).weight.to_vector());
}

TEST_CASE("Sequential chains layers and names them by position; gradients flow") {
  Rng rng(fresh_seed());
  Sequential seq;
  seq.add(std::make_shared<Conv2d>(1, 2, 3, 1, 1, true, rng));
  seq.add(std::make_shared<ReLU>());
  seq.add(std::make_shared<MaxPool2d>(2));
  CHECK(seq.size() == 3);
  CHECK(seq.named_parameters()[0].first == "0.weight");
  Tensor y = seq(random_tensor({2, 1, 6, 6}, rng));
  CHECK(y.shape() == Shape{2, 2, 3, 3});
  sum(y).backward();
  CHECK(seq.named_parameters()[0].second.grad().defined());
  seq.zero_grad();
  CHECK_FALSE(seq.named_parameters()[0].second.grad().defined());
}

TEST_CASE("LayerNorm and MLP layers compute what their ops compute") {
  Rng rng(fresh_seed());
  LayerNorm ln(5);
  Tensor x = random_tensor({3, 5}, rng);
  check_close(ln(x), layer_norm(x, Tensor(), Tensor()));
  MLP mlp({5, 4, 2}, false, rng);
  Tensor expect = linear(relu(linear(x, mlp.layers[0]->weight, mlp.layers[0]->bias)),
                         mlp.layers[1]->weight, mlp.layers[1]->bias);
  check_close(mlp(x), expect);
  CHECK_THROWS_AS(MLP({3}), ValueError);
}
