// Reader and writer for tensors saved with torch.save (PyTorch >= 1.6 zip format), without
// Python.
//
// A .pt file is a zip archive: `<archive>/data.pkl` is a pickle that rebuilds the object, and
// each tensor storage is a raw little-endian blob `<archive>/data/<key>`. The pickle is run by a
// small stack machine that knows only what torch.save emits for a tensor (disassembled from
// torch 1.13 files): PROTO, GLOBAL, BINPUT/LONG_BINPUT, BINGET/LONG_BINGET, MARK, TUPLE,
// TUPLE1-3, EMPTY_TUPLE, BININT/BININT1/BININT2/LONG1, BINUNICODE, BINPERSID, REDUCE,
// NEWTRUE/NEWFALSE, NONE, EMPTY_DICT, SETITEM(S), STOP; plus EMPTY_LIST/APPEND(S) and the
// protocol-4 FRAME/MEMOIZE/SHORT_BINUNICODE/STACK_GLOBAL so that dicts and pickle_protocol=4
// files are recognised (and then rejected or read as appropriate).
//
// The only callables honoured are torch._utils._rebuild_tensor_v2 (storage, storage_offset,
// size, stride, requires_grad, backward_hooks[, metadata]), torch._utils._rebuild_parameter
// (an nn.Parameter) and collections.OrderedDict(); nothing is ever imported or executed.
// Storages may be Float, Half, Double or BFloat16 (converted to float32); the storage offset and
// strides are honoured, so transposed and sliced tensors come out as torch would show them.
//
// Limits (all violations throw FormatError naming the file): data.pkl at most 4 MiB, stack and
// memo at most 65 536 entries, at most 16 dimensions, every storage blob exactly
// numel * itemsize bytes, every element the strides can reach inside the storage, the tensor no
// larger than its storage (expanded stride-0 tensors bigger than their storage are refused),
// zip entries stored or deflated with a plausible ratio, checked before anything is read.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "autograd/tensor.h"

namespace stgnn {

// Reads the single tensor saved in a .pt file as float32. Throws IoError when the file cannot
// be read, FormatError (naming the file) when it is not a torch.save zip holding one tensor of
// a supported dtype (the message says what the top-level object was instead).
Tensor read_torch_tensor(const std::string& path);

// The same from an in-memory image of the file; `name_for_errors` replaces the path in messages.
Tensor parse_torch_tensor(const uint8_t* data, size_t size, const std::string& name_for_errors);

// Writes `tensor` (float32, any shape, 0-d included) as torch.save(tensor, path) does in torch
// 1.13: a zip archive of stored (uncompressed) entries <stem>/data.pkl (a protocol-2 pickle
// rebuilding the tensor through torch._utils._rebuild_tensor_v2 from persistent storage '0', a
// torch.FloatStorage on 'cpu'), <stem>/data/0 (the raw little-endian floats, padded like torch so
// that they start on a 64-byte boundary of the file) and <stem>/version ("3\n"); <stem> is the
// file name without its extension ("archive" when that holds other characters than letters,
// digits, '_', '-' and '.'). The bytes are a pure function of the tensor and the file name (fixed
// time stamps). Written atomically (write_file_atomic). Throws IoError naming the path when it
// cannot be written, ValueError for an undefined tensor.
void write_torch_tensor(const std::string& path, const Tensor& tensor);

// The file image write_torch_tensor writes, for a file named `file_name`.
std::vector<uint8_t> torch_tensor_bytes(const Tensor& tensor, const std::string& file_name);

}  // namespace stgnn
