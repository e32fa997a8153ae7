// Checkpoints: a model's parameters and buffers, and optionally an optimiser's state, in one
// safetensors file. Tensor names are the module's parameter names (so
// safetensors.torch.load_file gives a state dict keyed like ours); optimiser state is stored
// as "optimizer.<state>.<parameter>" and its step count, kind and learning rate in the
// metadata. Writes are atomic; loads check every name and shape.
#pragma once

#include <map>
#include <string>

#include "nn/module.h"
#include "nn/optim.h"

namespace stgnn {

// Saves model (+ optimizer when given) with extra metadata (epoch, config, ...).
void save_checkpoint(const std::string& path, const Module& model, const Optimizer* optimizer,
                     const std::map<std::string, std::string>& metadata = {});

// Loads into model (+ optimizer when given) and returns the metadata. Throws FormatError
// naming the tensor when one is missing, unexpected or of the wrong shape, and when the file
// is truncated or corrupt; the model is left untouched on any error.
std::map<std::string, std::string> load_checkpoint(const std::string& path, Module& model,
                                                   Optimizer* optimizer);

}  // namespace stgnn
