// Little-endian scalar loads and 16-bit float conversions shared by the .npy and .pt readers.
//
// Both formats store little-endian data; the project targets little-endian hosts only (x86-64,
// aarch64), which the static_assert below makes explicit instead of byte-swapping everywhere.
#pragma once

#include <cstdint>
#include <cstring>

namespace stgnn {

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "stgnn data readers need a little-endian host");

// Reads a T stored little-endian at p (no alignment requirement).
template <typename T>
inline T load_le(const uint8_t* p) {
  T value;
  std::memcpy(&value, p, sizeof(T));
  return value;
}

// IEEE 754 binary16 -> binary32, exact for every input (subnormals, infinities, NaN payloads).
inline float half_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exponent = (h >> 10) & 0x1fu;
  uint32_t mantissa = h & 0x3ffu;
  uint32_t bits;
  if (exponent == 0) {
    if (mantissa == 0) {
      bits = sign;
    } else {
      // A half subnormal is a float normal: shift the mantissa up until its leading one reaches
      // the implicit-bit position, lowering the exponent once per shift.
      uint32_t shifts = 0;
      while ((mantissa & 0x400u) == 0) {
        mantissa <<= 1;
        ++shifts;
      }
      mantissa &= 0x3ffu;
      bits = sign | ((127 - 15 + 1 - shifts) << 23) | (mantissa << 13);
    }
  } else if (exponent == 31) {
    bits = sign | 0x7f800000u | (mantissa << 13);
  } else {
    bits = sign | ((exponent + 127 - 15) << 23) | (mantissa << 13);
  }
  float f;
  std::memcpy(&f, &bits, sizeof(f));
  return f;
}

// bfloat16 is the upper half of a binary32.
inline float bfloat16_to_float(uint16_t b) {
  const uint32_t bits = static_cast<uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof(f));
  return f;
}

}  // namespace stgnn
