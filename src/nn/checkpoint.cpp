#include "nn/checkpoint.h"

#include <set>

#include "autograd/safetensors.h"

namespace stgnn {

namespace {
const std::string kOptimizerPrefix = "optimizer.";
}

void save_checkpoint(const std::string& path, const Module& model, const Optimizer* optimizer,
                     const std::map<std::string, std::string>& metadata) {
  NamedTensorList tensors = model.named_parameters();
  for (auto& entry : model.named_buffers())
    tensors.push_back(entry);
  std::map<std::string, std::string> meta = metadata;
  meta["format"] = "stgnn-checkpoint-1";
  if (optimizer) {
    for (auto& [name, t] : optimizer->state())
      tensors.emplace_back(kOptimizerPrefix + name, t);
    meta["optimizer.kind"] = optimizer->kind();
    meta["optimizer.steps"] = std::to_string(optimizer->steps());
    meta["optimizer.lr"] = std::to_string(optimizer->lr);
  }
  save_safetensors(path, tensors, meta);
}

std::map<std::string, std::string> load_checkpoint(const std::string& path, Module& model,
                                                   Optimizer* optimizer) {
  NamedTensors file = load_safetensors(path);
  const auto fail = [&path](const std::string& what) {
    throw FormatError("checkpoint '" + path + "': " + what);
  };
  NamedTensorList expected = model.named_parameters();
  for (auto& entry : model.named_buffers())
    expected.push_back(entry);
  std::set<std::string> used;
  // Check everything first, copy after, so a bad file leaves the model untouched.
  for (const auto& [name, t] : expected) {
    const auto found = file.tensors.find(name);
    if (found == file.tensors.end()) fail("missing tensor '" + name + "' " + shape_str(t.shape()));
    if (found->second.shape() != t.shape()) {
      fail("tensor '" + name + "' has shape " + shape_str(found->second.shape()) +
           ", the model expects " + shape_str(t.shape()));
    }
    used.insert(name);
  }
  if (optimizer) {
    if (file.metadata.count("optimizer.kind") == 0) fail("holds no optimizer state");
    if (file.metadata["optimizer.kind"] != optimizer->kind()) {
      fail("optimizer state is for '" + file.metadata["optimizer.kind"] + "', not '" +
           optimizer->kind() + "'");
    }
  }
  for (const auto& [name, t] : file.tensors) {
    const bool is_optimizer = name.rfind(kOptimizerPrefix, 0) == 0;
    if (!used.count(name) && !is_optimizer)
      fail("unexpected tensor '" + name + "' " + shape_str(t.shape()));
  }
  if (optimizer) {
    NamedTensorList state;
    for (const auto& [name, t] : file.tensors) {
      if (name.rfind(kOptimizerPrefix, 0) == 0)
        state.emplace_back(name.substr(kOptimizerPrefix.size()), t);
    }
    int64_t steps = 0;
    try {
      steps = std::stoll(file.metadata["optimizer.steps"]);
    } catch (const std::exception&) {
      fail("metadata optimizer.steps '" + file.metadata["optimizer.steps"] + "' is not an integer");
    }
    try {
      optimizer->load_state(state);  // validates every name and shape before changing anything
    } catch (const Error& e) {
      fail(e.what());
    }
    optimizer->set_steps(steps);
  }
  for (auto& [name, t] : expected)
    t.copy_from(file.tensors.at(name));
  return file.metadata;
}

}  // namespace stgnn
