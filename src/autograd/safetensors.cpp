#include "autograd/safetensors.h"

#include <zlib.h>

#include <algorithm>
#include <cstring>
#include <limits>
#include <nlohmann/json.hpp>

#include "autograd/atomic_file.h"

namespace stgnn {

namespace {

constexpr uint64_t kMaxHeaderBytes = 100 * 1024 * 1024;  // the reference implementation's limit
constexpr const char* kChecksumKey = "stgnn.crc32";
constexpr const char* kHeaderChecksumKey = "stgnn.header_crc32";
constexpr size_t kMaxDims = 64;
// Elements of one tensor, and any single dimension: 2^50 floats is 4 PiB, far beyond any file.
constexpr uint64_t kMaxElements = uint64_t{1} << 50;

uint32_t crc32_of(const char* data, size_t size) {
  uLong crc = crc32(0L, Z_NULL, 0);
  // zlib takes uInt lengths: feed large buffers in pieces.
  while (size > 0) {
    const uInt piece = static_cast<uInt>(std::min<size_t>(size, 1u << 30));
    crc = crc32(crc, reinterpret_cast<const Bytef*>(data), piece);
    data += piece;
    size -= piece;
  }
  return static_cast<uint32_t>(crc);
}

float half_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  uint32_t exponent = (h >> 10) & 0x1fu;
  uint32_t mantissa = h & 0x3ffu;
  uint32_t bits;
  if (exponent == 0) {
    if (mantissa == 0) {
      bits = sign;
    } else {  // subnormal: renormalise
      exponent = 127 - 15 + 1;
      while (!(mantissa & 0x400u)) {
        mantissa <<= 1;
        --exponent;
      }
      bits = sign | (exponent << 23) | ((mantissa & 0x3ffu) << 13);
    }
  } else if (exponent == 31) {
    bits = sign | 0x7f800000u | (mantissa << 13);
  } else {
    bits = sign | ((exponent + 127 - 15) << 23) | (mantissa << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

[[noreturn]] void bad(const std::string& source, const std::string& what) {
  throw FormatError("safetensors '" + source + "': " + what);
}

// The CRC-32 of the header with its own checksum entry removed, serialised canonically
// (nlohmann::json sorts keys and writes no spaces), so it does not depend on the writer's key
// order or padding.
std::string header_checksum(nlohmann::json header) {
  auto meta = header.find("__metadata__");
  if (meta != header.end() && meta->is_object()) meta->erase(kHeaderChecksumKey);
  const std::string canonical = header.dump();
  return std::to_string(crc32_of(canonical.data(), canonical.size()));
}

// The data CRC covers the tensors only; this one covers shapes, offsets and metadata (epoch,
// step, optimizer state names), where a flipped bit would otherwise go unnoticed.
void check_header_checksum(const nlohmann::json& header, const std::string& source) {
  const auto meta = header.find("__metadata__");
  if (meta == header.end() || !meta->is_object()) return;
  const auto stored = meta->find(kHeaderChecksumKey);
  if (stored == meta->end()) {
    // Files of other writers and of stgnn before the header checksum carry none and are read
    // unchecked; but a key one flipped bit away from it is our checksum's name, damaged.
    const std::string key = kHeaderChecksumKey;
    for (const auto& [name, value] : meta->items()) {
      if (name.size() != key.size()) continue;
      int differing_bits = 0;
      for (size_t i = 0; i < key.size(); ++i)
        differing_bits += __builtin_popcount(static_cast<unsigned char>(name[i] ^ key[i]));
      if (differing_bits == 1) {
        bad(source, "metadata key '" + name + "' is '" + key +
                        "' with a bit flipped: the file is " + "corrupted");
      }
    }
    return;
  }
  if (!stored->is_string())
    bad(source, std::string("metadata '") + kHeaderChecksumKey + "' is not a string");
  const std::string actual = header_checksum(header);
  if (actual != stored->get<std::string>()) {
    bad(source, "header checksum mismatch (stored " + stored->get<std::string>() + ", computed " +
                    actual + "): the file is corrupted");
  }
}

// A validated tensor entry: its bytes are [begin, end) of the data section.
struct Entry {
  std::string name;
  std::string dtype;
  size_t element = 0;
  Shape shape;
  uint64_t numel = 0;
  uint64_t begin = 0, end = 0;
};

Entry parse_entry(const std::string& name, const nlohmann::json& entry, uint64_t data_size,
                  const std::string& source) {
  const std::string where = "tensor '" + name + "'";
  if (!entry.is_object() || !entry.contains("dtype") || !entry.contains("shape") ||
      !entry.contains("data_offsets")) {
    bad(source, where + " lacks dtype, shape or data_offsets");
  }
  const auto& dtype_json = entry["dtype"];
  const auto& shape_json = entry["shape"];
  const auto& offsets_json = entry["data_offsets"];
  if (!dtype_json.is_string() || !shape_json.is_array() || !offsets_json.is_array() ||
      offsets_json.size() != 2 || !offsets_json[0].is_number_unsigned() ||
      !offsets_json[1].is_number_unsigned()) {
    bad(source, where + " has a malformed dtype, shape or data_offsets");
  }
  Entry e;
  e.name = name;
  e.dtype = dtype_json.get<std::string>();
  if (e.dtype == "F32")
    e.element = 4;
  else if (e.dtype == "F16" || e.dtype == "BF16")
    e.element = 2;
  else if (e.dtype == "F64")
    e.element = 8;
  else
    bad(source, where + " has unsupported dtype " + e.dtype + " (F32, F16, BF16, F64 are read)");
  if (shape_json.size() > kMaxDims) {
    bad(source, where + " has " + std::to_string(shape_json.size()) + " dimensions (at most " +
                    std::to_string(kMaxDims) + ")");
  }
  e.numel = 1;
  for (const auto& d : shape_json) {
    if (!d.is_number_unsigned()) bad(source, where + " has a non-integer or negative dimension");
    const uint64_t dim = d.get<uint64_t>();
    // Each dimension and the running product stay far inside int64 (a zero dimension does
    // not excuse a huge one: Shape holds signed sizes).
    if (dim > kMaxElements || (dim != 0 && e.numel > kMaxElements / dim))
      bad(source, where + " shape overflows");
    e.numel *= dim;
    e.shape.push_back(static_cast<int64_t>(dim));
  }
  e.begin = offsets_json[0].get<uint64_t>();
  e.end = offsets_json[1].get<uint64_t>();
  if (e.begin > e.end || e.end > data_size) {
    bad(source, where + " data_offsets [" + std::to_string(e.begin) + ", " + std::to_string(e.end) +
                    ") outside the data section of " + std::to_string(data_size) + " bytes");
  }
  if (e.end - e.begin != e.numel * e.element) {
    bad(source, where + " holds " + std::to_string(e.end - e.begin) + " bytes but shape " +
                    shape_str(e.shape) + " of " + e.dtype + " needs " +
                    std::to_string(e.numel * e.element));
  }
  return e;
}

// The entry's elements (at `src`, little-endian) as float32.
Tensor to_float_tensor(const Entry& e, const char* src) {
  Tensor t = Tensor::empty(e.shape);
  float* out = t.data();
  for (uint64_t i = 0; i < e.numel; ++i) {
    if (e.element == 4) {
      std::memcpy(out + i, src + 4 * i, 4);
    } else if (e.element == 8) {
      double v;
      std::memcpy(&v, src + 8 * i, 8);
      out[i] = static_cast<float>(v);
    } else {
      uint16_t h;
      std::memcpy(&h, src + 2 * i, 2);
      if (e.dtype == "F16") {
        out[i] = half_to_float(h);
      } else {
        const uint32_t bits = static_cast<uint32_t>(h) << 16;
        std::memcpy(out + i, &bits, 4);
      }
    }
  }
  return t;
}

}  // namespace

std::string encode_safetensors(const std::vector<std::pair<std::string, Tensor>>& tensors,
                               const std::map<std::string, std::string>& metadata) {
  std::vector<std::pair<std::string, Tensor>> sorted = tensors;
  std::sort(sorted.begin(), sorted.end(),
            [](const auto& a, const auto& b) { return a.first < b.first; });
  for (size_t i = 1; i < sorted.size(); ++i) {
    if (sorted[i].first == sorted[i - 1].first)
      throw ValueError("safetensors: duplicate name '" + sorted[i].first + "'");
  }
  std::string data;
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  nlohmann::ordered_json meta = nlohmann::ordered_json::object();
  for (const auto& [key, value] : metadata)
    meta[key] = value;
  uint64_t offset = 0;
  nlohmann::ordered_json entries = nlohmann::ordered_json::object();
  for (const auto& [name, t] : sorted) {
    if (name == "__metadata__")
      throw ValueError("safetensors: reserved tensor name '__metadata__'");
    const uint64_t bytes = static_cast<uint64_t>(t.numel()) * sizeof(float);
    entries[name] = {
        {"dtype", "F32"}, {"shape", t.shape()}, {"data_offsets", {offset, offset + bytes}}};
    data.append(reinterpret_cast<const char*>(t.data()), bytes);
    offset += bytes;
  }
  meta[kChecksumKey] = std::to_string(crc32_of(data.data(), data.size()));
  header["__metadata__"] = meta;
  for (auto& [name, entry] : entries.items())
    header[name] = entry;
  header["__metadata__"][kHeaderChecksumKey] =
      header_checksum(nlohmann::json::parse(header.dump()));
  std::string json = header.dump();
  json.append((8 - json.size() % 8) % 8, ' ');
  std::string out(8, '\0');
  const uint64_t n = json.size();
  for (int i = 0; i < 8; ++i)
    out[static_cast<size_t>(i)] = static_cast<char>((n >> (8 * i)) & 0xff);
  out += json;
  out += data;
  return out;
}

void save_safetensors(const std::string& path,
                      const std::vector<std::pair<std::string, Tensor>>& tensors,
                      const std::map<std::string, std::string>& metadata) {
  write_file_atomic(path, encode_safetensors(tensors, metadata));
}

NamedTensors decode_safetensors(const std::string& bytes, const std::string& source) {
  if (bytes.size() < 8)
    bad(source, "file of " + std::to_string(bytes.size()) +
                    " bytes is shorter than its 8-byte header length");
  uint64_t header_len = 0;
  for (int i = 0; i < 8; ++i)
    header_len |= static_cast<uint64_t>(static_cast<unsigned char>(bytes[static_cast<size_t>(i)]))
                  << (8 * i);
  if (header_len > kMaxHeaderBytes || header_len > bytes.size() - 8) {
    bad(source, "header length " + std::to_string(header_len) + " exceeds the file (" +
                    std::to_string(bytes.size()) + " bytes)");
  }
  // nlohmann::json stops at a NUL byte as at the end of the input, so a NUL in the padding
  // (a space with one bit flipped) would pass unseen; JSON text never holds one.
  if (std::memchr(bytes.data() + 8, '\0', static_cast<size_t>(header_len)) != nullptr)
    bad(source, "header holds a NUL byte");
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(bytes.begin() + 8,
                                   bytes.begin() + 8 + static_cast<int64_t>(header_len));
  } catch (const nlohmann::json::exception& e) {
    bad(source, std::string("header is not valid JSON (") + e.what() + ")");
  }
  if (!header.is_object()) bad(source, "header is not a JSON object");
  check_header_checksum(header, source);
  const char* data = bytes.data() + 8 + header_len;
  const uint64_t data_size = bytes.size() - 8 - header_len;
  NamedTensors result;
  // Every entry is validated, and the ranges checked for overlap, before any tensor is
  // allocated: a header that lies about offsets costs nothing.
  std::vector<Entry> entries;
  for (const auto& [name, entry] : header.items()) {
    if (name == "__metadata__") {
      if (!entry.is_object()) bad(source, "__metadata__ is not an object");
      for (const auto& [key, value] : entry.items()) {
        if (!value.is_string()) bad(source, "metadata '" + key + "' is not a string");
        result.metadata[key] = value.get<std::string>();
      }
      continue;
    }
    entries.push_back(parse_entry(name, entry, data_size, source));
  }
  std::vector<const Entry*> by_offset;
  for (const Entry& e : entries)
    by_offset.push_back(&e);
  std::sort(by_offset.begin(), by_offset.end(),
            [](const Entry* a, const Entry* b) { return a->begin < b->begin; });
  for (size_t i = 1; i < by_offset.size(); ++i) {
    if (by_offset[i]->begin < by_offset[i - 1]->end) {
      bad(source, "tensors '" + by_offset[i - 1]->name + "' and '" + by_offset[i]->name +
                      "' overlap in the data section");
    }
  }
  const auto checksum = result.metadata.find(kChecksumKey);
  if (checksum != result.metadata.end()) {
    const std::string actual = std::to_string(crc32_of(data, data_size));
    if (actual != checksum->second) {
      bad(source, "checksum mismatch (stored " + checksum->second + ", computed " + actual +
                      "): the file is corrupted");
    }
  }
  for (const Entry& e : entries)
    result.tensors[e.name] = to_float_tensor(e, data + e.begin);
  return result;
}

NamedTensors load_safetensors(const std::string& path) {
  return decode_safetensors(read_file(path), path);
}

}  // namespace stgnn
