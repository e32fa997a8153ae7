// Reader for tensors saved with torch.save (PyTorch >= 1.6 zip format), without Python.
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

#include "autograd/tensor.h"

namespace stgnn {

// Reads the single tensor saved in a .pt file as float32. Throws IoError when the file cannot
// be read, FormatError (naming the file) when it is not a torch.save zip holding one tensor of
// a supported dtype (the message says what the top-level object was instead).
Tensor read_torch_tensor(const std::string& path);

// The same from an in-memory image of the file; `name_for_errors` replaces the path in messages.
Tensor parse_torch_tensor(const uint8_t* data, size_t size, const std::string& name_for_errors);

}  // namespace stgnn
