// Typed exceptions. Every message names the op, file, field or shapes involved, so that a
// program can catch at main(), print what() and exit non-zero.
#pragma once

#include <stdexcept>
#include <string>

namespace stgnn {

// Base of every stgnn error.
class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message) : std::runtime_error(message) {}
};

// An op received tensors whose shapes it cannot combine ("matmul: [3,4] x [5,6]").
class ShapeError : public Error {
 public:
  using Error::Error;
};

// An argument outside its domain (negative stride, index out of range, bad option value).
class ValueError : public Error {
 public:
  using Error::Error;
};

// A file could not be opened, read or written ("cannot open 'x.pt': No such file").
class IoError : public Error {
 public:
  using Error::Error;
};

// A file was read but its content is malformed (bad magic, truncated, wrong dtype, ...).
class FormatError : public Error {
 public:
  using Error::Error;
};

// Training produced a NaN or an infinity.
class DivergenceError : public Error {
 public:
  using Error::Error;
};

}  // namespace stgnn
