// The safetensors format (https://huggingface.co/docs/safetensors): an 8-byte little-endian
// header length N, N bytes of JSON {"__metadata__": {str: str}, name: {"dtype", "shape",
// "data_offsets": [begin, end]}}, then the raw little-endian tensor bytes.
//
// We write F32 tensors, names sorted (as the reference implementation does), the header
// padded with spaces to a multiple of 8, and two CRC-32s in the metadata so that a bit flip
// anywhere in the file is detected on load: "stgnn.crc32" of the data section and
// "stgnn.header_crc32" of the header (serialised canonically: keys sorted, no spaces, without
// that entry). Files from other writers, which carry neither, are read unchecked. We read F32,
// F16, BF16 and F64 (converted to float32), and validate every entry (dtype, shape, offsets
// inside the data, no overlap) before any tensor is allocated.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "autograd/tensor.h"

namespace stgnn {

struct NamedTensors {
  std::map<std::string, Tensor> tensors;
  std::map<std::string, std::string> metadata;
};

// Serialises to bytes (used by the atomic writer and by tests).
std::string encode_safetensors(const std::vector<std::pair<std::string, Tensor>>& tensors,
                               const std::map<std::string, std::string>& metadata);
// Writes atomically (temporary + fsync + rename).
void save_safetensors(const std::string& path,
                      const std::vector<std::pair<std::string, Tensor>>& tensors,
                      const std::map<std::string, std::string>& metadata = {});

// Parses bytes; `source` names the file in error messages. Throws FormatError on anything
// malformed: short file, header length beyond the file, bad JSON, unknown dtype, offsets
// outside the data or overlapping, size not matching the shape, more than 2^50 elements,
// checksum mismatch.
NamedTensors decode_safetensors(const std::string& bytes, const std::string& source);
NamedTensors load_safetensors(const std::string& path);

}  // namespace stgnn
