// NumPy .npy files (format versions 1.0, 2.0 and 3.0).
//
// Accepted dtypes: '<f4', '<f2', '<f8', '|u1', '<i4', '<i8' ('<u1' and '|i1'-style spellings
// are not produced by NumPy and are rejected, as are big-endian and structured dtypes).
// Fortran-order arrays are transposed on read, so an NpyArray is always row-major (C order).
// The header dict must hold exactly the keys 'descr', 'fortran_order' and 'shape', like NumPy
// requires, and the data must fill the rest of the file exactly: a header whose shape does not
// match the payload size is rejected before anything is allocated.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "autograd/tensor.h"

namespace stgnn {

// A decoded .npy array: dtype as written in the header ("<f4", "|u1", ...), its shape, and the
// raw little-endian elements in row-major order (shape_numel(shape) * itemsize bytes).
struct NpyArray {
  std::string dtype;
  Shape shape;
  std::vector<uint8_t> bytes;
};

// Bytes per element of a supported dtype; throws FormatError for anything else.
size_t npy_itemsize(const std::string& dtype);

// Reads a .npy file. Throws IoError when the file cannot be read, FormatError (naming the file)
// when it is malformed.
NpyArray read_npy(const std::string& path);

// Parses an in-memory .npy image; `name_for_errors` is used in messages in place of a path.
NpyArray parse_npy(const uint8_t* data, size_t size, const std::string& name_for_errors);

// The array as a float32 tensor of the same shape (from f4, f2, f8, u1, i4 or i8; integers
// beyond 2^24 lose precision as float32 always does).
Tensor npy_to_tensor(const NpyArray& array);

// The elements as int64 (from u1, i4 or i8); float dtypes are rejected with FormatError.
std::vector<int64_t> npy_to_int64(const NpyArray& array);

// Writers: format 1.0 (2.0 when the header would exceed 64 KiB), C order, header padded so the
// data starts on a 64-byte boundary like NumPy's own writer. Written atomically (see
// write_file_atomic). Shapes must be non-negative and match the element count.
void write_npy(const std::string& path, const Tensor& tensor);  // '<f4', tensor's shape
void write_npy_u8(const std::string& path, const Shape& shape, const uint8_t* values);   // '|u1'
void write_npy_i64(const std::string& path, const Shape& shape, const int64_t* values);  // '<i8'

}  // namespace stgnn
