// The whole RSTG model against PyTorch: a plain PyTorch implementation of the same network
// (bench/torch/rstg.py) wrote its weights (as a safetensors checkpoint keyed by our parameter
// names), one batch, the loss, and the gradients of every parameter and of the input. Loading
// those weights into our model must reproduce the logits, the loss and every gradient: an
// exact check of the backbone, the graph stages and the recurrent stages together, which
// finite differences cannot give through thousands of ReLU kinks.
#include <doctest/doctest.h>

#include "autograd/safetensors.h"
#include "models/rstg.h"
#include "nn/checkpoint.h"
#include "support/check.h"

using namespace stgnn;
using namespace stgnn::testing;

TEST_CASE("RSTG matches PyTorch: logits, loss and every gradient (LSTM and GRU time stages)") {
  for (const std::string cell : {"lstm", "gru"}) {
    CAPTURE(cell);
    RstgConfig config;
    config.image_size = 22;
    config.backbone_channels = {3, 4};
    config.node_dim = 5;
    config.stages = 2;
    config.grids = {2, 1};
    config.classes = 6;
    config.cell = cell;
    Rstg model(config);
    load_checkpoint(fixture_path("rstg_torch/" + cell + "_weights.safetensors"), model, nullptr);
    const NamedTensors expected =
        load_safetensors(fixture_path("rstg_torch/" + cell + "_expected.safetensors"));
    Tensor video = expected.tensors.at("video").copy().set_requires_grad(true);
    Tensor logits = model.forward(video);
    check_close(logits, expected.tensors.at("logits"), 1e-4, 1e-5);
    Tensor loss = cross_entropy(logits, IndexTensor({1, 4}));
    CHECK(loss.item() == doctest::Approx(expected.tensors.at("loss").item()).epsilon(1e-5));
    loss.backward();
    int compared = 0;
    for (const auto& named : model.named_parameters()) {
      const std::string& name = named.first;  // CAPTURE cannot capture a binding (C++17)
      const Tensor& p = named.second;
      CAPTURE(name);
      REQUIRE(expected.tensors.count(name) == 1);
      REQUIRE(p.grad().defined());
      check_close(p.grad(), expected.tensors.at(name), 2e-4, 2e-6);
      ++compared;
    }
    CHECK(compared == static_cast<int>(model.named_parameters().size()));
    check_close(video.grad(), expected.tensors.at("input"), 2e-4, 2e-6);
    // Training-mode BatchNorm updated its running statistics like PyTorch's.
    for (const auto& [name, buffer] : model.named_buffers()) {
      if (name == "node_norm.running_mean") {
        check_close(buffer, expected.tensors.at("running.node_norm.running_mean"), 1e-5, 1e-6);
      }
    }
  }
}
