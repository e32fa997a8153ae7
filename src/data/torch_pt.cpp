#include "data/torch_pt.h"

#include <zip.h>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <limits>
#include <memory>
#include <unordered_map>
#include <vector>

#include "autograd/atomic_file.h"
#include "data/bytes.h"

namespace stgnn {

namespace {

constexpr size_t kMaxPickleBytes = 4u << 20;
constexpr size_t kMaxStack = 1u << 16;
constexpr size_t kMaxMemo = 1u << 16;
constexpr size_t kMaxValues = 1u << 20;
constexpr size_t kMaxDims = 16;
constexpr size_t kMaxNameLength = 256;
// Deflate cannot expand its input by more than about 1032:1; a larger claimed size is a lie.
constexpr uint64_t kMaxDeflateRatio = 1032;

[[noreturn]] void fail(const std::string& name, const std::string& what) {
  throw FormatError("torch '" + name + "': " + what);
}

// ---------------------------------------------------------------- pickle values

enum class Kind { kNone, kBool, kInt, kString, kGlobal, kTuple, kList, kDict, kStorage, kTensor };

enum class ElementType { kFloat32, kFloat16, kFloat64, kBFloat16 };

struct StorageRef {
  ElementType type = ElementType::kFloat32;
  size_t itemsize = 4;
  std::string key;
  int64_t numel = 0;
};

struct TensorRef {
  StorageRef storage;
  int64_t offset = 0;
  Shape size;
  std::vector<int64_t> stride;
};

// Values live in the unpickler's arena and refer to each other by plain pointers, so that a
// hostile pickle can build neither reference cycles (leaks) nor deep ownership chains (recursive
// destruction); everything is freed at once with the arena.
struct Value {
  Kind kind = Kind::kNone;
  int64_t integer = 0;        // kInt, kBool
  std::string text;           // kString; kGlobal as "module.name"
  std::vector<Value*> items;  // kTuple, kList; kDict as key, value, key, value, ...
  StorageRef storage;         // kStorage
  TensorRef tensor;           // kTensor
};

// A short human description for error messages; recursion is bounded by `depth`.
std::string describe(const Value* v, int depth = 2) {
  switch (v->kind) {
    case Kind::kNone:
      return "None";
    case Kind::kBool:
      return v->integer ? "True" : "False";
    case Kind::kInt:
      return "int " + std::to_string(v->integer);
    case Kind::kString:
      return "str '" + v->text.substr(0, 40) + "'";
    case Kind::kGlobal:
      return "global " + v->text;
    case Kind::kStorage:
      return "storage '" + v->storage.key + "'";
    case Kind::kTensor:
      return "tensor " + shape_str(v->tensor.size);
    case Kind::kTuple:
    case Kind::kList: {
      std::string s = v->kind == Kind::kTuple ? "tuple of " : "list of ";
      s += std::to_string(v->items.size()) + " items";
      return s;
    }
    case Kind::kDict: {
      std::string s = "dict with keys [";
      for (size_t i = 0; i < v->items.size() && i < 10; i += 2) {
        if (i > 0) s += ", ";
        s += depth > 0 ? describe(v->items[i], depth - 1) : "...";
      }
      if (v->items.size() > 10) s += ", ...";
      return s + "]";
    }
  }
  return "?";
}

// ---------------------------------------------------------------- the stack machine

class Unpickler {
 public:
  Unpickler(const uint8_t* data, size_t size, const std::string& name)
      : data_(data), size_(size), name_(name) {}

  // Runs the pickle to its STOP and returns the single object it built.
  const Value* run() {
    while (true) {
      op_pos_ = pos_;
      const uint8_t op = read_u8();
      switch (op) {
        case 0x80: {  // PROTO
          const uint8_t version = read_u8();
          if (version > 5) error("unsupported pickle protocol " + std::to_string(version));
          break;
        }
        case 0x95:  // FRAME (protocol 4): a length prefix we do not need
          need(8);
          pos_ += 8;
          break;
        case 'c': {  // GLOBAL
          const std::string module = read_line();
          const std::string qualname = read_line();
          Value* g = make(Kind::kGlobal);
          g->text = module + "." + qualname;
          push(g);
          break;
        }
        case 0x93: {  // STACK_GLOBAL
          const Value* qualname = pop();
          const Value* module = pop();
          if (module->kind != Kind::kString || qualname->kind != Kind::kString) {
            error("STACK_GLOBAL needs two strings");
          }
          Value* g = make(Kind::kGlobal);
          g->text = module->text + "." + qualname->text;
          push(g);
          break;
        }
        case 'q':  // BINPUT
          memo_put(read_u8());
          break;
        case 'r':  // LONG_BINPUT
          memo_put(read_u32());
          break;
        case 0x94:  // MEMOIZE
          memo_put(static_cast<uint32_t>(memo_.size()));
          break;
        case 'h':  // BINGET
          push(memo_get(read_u8()));
          break;
        case 'j':  // LONG_BINGET
          push(memo_get(read_u32()));
          break;
        case '(':  // MARK
          if (marks_.size() >= kMaxStack) error("too many MARKs");
          marks_.push_back(stack_.size());
          break;
        case 't': {  // TUPLE
          Value* t = make(Kind::kTuple);
          t->items = pop_mark();
          push(t);
          break;
        }
        case ')':  // EMPTY_TUPLE
          push(make(Kind::kTuple));
          break;
        case 0x85:  // TUPLE1
        case 0x86:  // TUPLE2
        case 0x87:  // TUPLE3
          push(make_tuple_from_top(static_cast<size_t>(op - 0x85 + 1)));
          break;
        case 'J':  // BININT
          push_int(static_cast<int32_t>(read_u32()));
          break;
        case 'K':  // BININT1
          push_int(read_u8());
          break;
        case 'M': {  // BININT2
          need(2);
          push_int(load_le<uint16_t>(data_ + pos_));
          pos_ += 2;
          break;
        }
        case 0x8a:  // LONG1
          push_int(read_long1());
          break;
        case 'X': {  // BINUNICODE
          const uint32_t n = read_u32();
          push_string(n);
          break;
        }
        case 0x8c:  // SHORT_BINUNICODE
          push_string(read_u8());
          break;
        case 'N':  // NONE
          push(make(Kind::kNone));
          break;
        case 0x88:    // NEWTRUE
        case 0x89: {  // NEWFALSE
          Value* b = make(Kind::kBool);
          b->integer = op == 0x88;
          push(b);
          break;
        }
        case '}':  // EMPTY_DICT
          push(make(Kind::kDict));
          break;
        case ']':  // EMPTY_LIST
          push(make(Kind::kList));
          break;
        case 's': {  // SETITEM
          Value* value = pop();
          Value* key = pop();
          Value* dict = top();
          if (dict->kind != Kind::kDict) error("SETITEM on a " + describe(dict));
          dict->items.push_back(key);
          dict->items.push_back(value);
          break;
        }
        case 'u': {  // SETITEMS
          std::vector<Value*> pairs = pop_mark();
          Value* dict = top();
          if (dict->kind != Kind::kDict) error("SETITEMS on a " + describe(dict));
          if (pairs.size() % 2 != 0) error("SETITEMS with an odd number of items");
          dict->items.insert(dict->items.end(), pairs.begin(), pairs.end());
          break;
        }
        case 'a': {  // APPEND
          Value* value = pop();
          Value* list = top();
          if (list->kind != Kind::kList) error("APPEND on a " + describe(list));
          list->items.push_back(value);
          break;
        }
        case 'e': {  // APPENDS
          std::vector<Value*> values = pop_mark();
          Value* list = top();
          if (list->kind != Kind::kList) error("APPENDS on a " + describe(list));
          list->items.insert(list->items.end(), values.begin(), values.end());
          break;
        }
        case 'Q':  // BINPERSID
          push(persistent_load(pop()));
          break;
        case 'R': {  // REDUCE
          Value* args = pop();
          Value* callable = pop();
          push(reduce(callable, args));
          break;
        }
        case '.': {  // STOP
          if (!marks_.empty()) error("STOP inside an open MARK");
          if (stack_.size() != 1) {
            error("STOP with " + std::to_string(stack_.size()) +
                  " objects on the stack (expected 1)");
          }
          return stack_.back();
        }
        default: {
          char hex[8];
          std::snprintf(hex, sizeof(hex), "0x%02x", op);
          error(std::string("unsupported pickle opcode ") + hex +
                " (only what torch.save emits for a tensor is understood)");
        }
      }
    }
  }

 private:
  [[noreturn]] void error(const std::string& what) const {
    fail(name_, "data.pkl: " + what + " (opcode at byte " + std::to_string(op_pos_) + ")");
  }

  void need(size_t n) const {
    if (n > size_ - pos_) error("truncated pickle");
  }
  uint8_t read_u8() {
    need(1);
    return data_[pos_++];
  }
  uint32_t read_u32() {
    need(4);
    const uint32_t v = load_le<uint32_t>(data_ + pos_);
    pos_ += 4;
    return v;
  }
  // A GLOBAL operand: printable text up to '\n'.
  std::string read_line() {
    std::string out;
    while (true) {
      const uint8_t c = read_u8();
      if (c == '\n') return out;
      if (c < 0x20 || c >= 0x7f) error("non-printable byte in a GLOBAL name");
      if (out.size() >= kMaxNameLength) error("GLOBAL name too long");
      out.push_back(static_cast<char>(c));
    }
  }
  // LONG1: a two's-complement little-endian integer of up to 8 bytes (more would not fit int64).
  int64_t read_long1() {
    const uint8_t n = read_u8();
    if (n > 8) error("LONG1 of " + std::to_string(n) + " bytes does not fit in 64 bits");
    need(n);
    uint64_t v = 0;
    for (uint8_t i = 0; i < n; ++i)
      v |= static_cast<uint64_t>(data_[pos_ + i]) << (8 * i);
    if (n > 0 && n < 8 && (data_[pos_ + n - 1] & 0x80)) v |= ~uint64_t{0} << (8 * n);
    pos_ += n;
    return static_cast<int64_t>(v);
  }

  Value* make(Kind kind) {
    if (arena_.size() >= kMaxValues) error("too many objects");
    arena_.push_back(std::make_unique<Value>());
    arena_.back()->kind = kind;
    return arena_.back().get();
  }
  void push(Value* v) {
    if (stack_.size() >= kMaxStack) error("stack deeper than " + std::to_string(kMaxStack));
    stack_.push_back(v);
  }
  void push_int(int64_t value) {
    Value* v = make(Kind::kInt);
    v->integer = value;
    push(v);
  }
  void push_string(size_t n) {
    need(n);
    Value* v = make(Kind::kString);
    v->text.assign(reinterpret_cast<const char*>(data_ + pos_), n);
    pos_ += n;
    push(v);
  }
  // Items above the innermost MARK; popping below it would mix two constructions.
  size_t available() const { return stack_.size() - (marks_.empty() ? 0 : marks_.back()); }
  Value* top() const {
    if (available() == 0) error("stack underflow");
    return stack_.back();
  }
  Value* pop() {
    Value* v = top();
    stack_.pop_back();
    return v;
  }
  std::vector<Value*> pop_mark() {
    if (marks_.empty()) error("no MARK to pop to");
    const size_t mark = marks_.back();
    marks_.pop_back();
    std::vector<Value*> items(stack_.begin() + static_cast<std::ptrdiff_t>(mark), stack_.end());
    stack_.resize(mark);
    return items;
  }
  Value* make_tuple_from_top(size_t n) {
    if (available() < n) error("stack underflow");
    Value* t = make(Kind::kTuple);
    t->items.assign(stack_.end() - static_cast<std::ptrdiff_t>(n), stack_.end());
    stack_.resize(stack_.size() - n);
    return t;
  }
  void memo_put(uint32_t index) {
    if (memo_.size() >= kMaxMemo && memo_.find(index) == memo_.end()) {
      error("memo larger than " + std::to_string(kMaxMemo) + " entries");
    }
    memo_[index] = top();
  }
  Value* memo_get(uint32_t index) const {
    const auto it = memo_.find(index);
    if (it == memo_.end()) error("memo key " + std::to_string(index) + " was never stored");
    return it->second;
  }

  // ('storage', torch.<Type>Storage, key, location, numel) -> a storage reference.
  Value* persistent_load(const Value* pid) {
    const std::vector<Value*>& a = pid->items;
    if (pid->kind != Kind::kTuple || a.size() != 5 || a[0]->kind != Kind::kString ||
        a[0]->text != "storage") {
      error("persistent id is a " + describe(pid) +
            ", expected ('storage', type, key, location, numel)");
    }
    if (a[1]->kind != Kind::kGlobal || a[2]->kind != Kind::kString || a[4]->kind != Kind::kInt) {
      error("malformed storage persistent id");
    }
    Value* s = make(Kind::kStorage);
    const std::string& type = a[1]->text;
    if (type == "torch.FloatStorage") {
      s->storage.type = ElementType::kFloat32;
      s->storage.itemsize = 4;
    } else if (type == "torch.HalfStorage") {
      s->storage.type = ElementType::kFloat16;
      s->storage.itemsize = 2;
    } else if (type == "torch.DoubleStorage") {
      s->storage.type = ElementType::kFloat64;
      s->storage.itemsize = 8;
    } else if (type == "torch.BFloat16Storage") {
      s->storage.type = ElementType::kBFloat16;
      s->storage.itemsize = 2;
    } else {
      error("unsupported storage type " + type +
            " (float32, float16, float64 and bfloat16 tensors are read)");
    }
    if (a[2]->text.empty() || a[2]->text.size() > kMaxNameLength) error("bad storage key");
    if (a[4]->integer < 0) error("negative storage size " + std::to_string(a[4]->integer));
    s->storage.key = a[2]->text;
    s->storage.numel = a[4]->integer;
    return s;
  }

  Value* reduce(const Value* callable, const Value* args) {
    if (callable->kind != Kind::kGlobal) error("REDUCE on a " + describe(callable));
    if (args->kind != Kind::kTuple) error("REDUCE with arguments that are a " + describe(args));
    const std::string& fn = callable->text;
    const std::vector<Value*>& a = args->items;
    if (fn == "torch._utils._rebuild_tensor_v2") return rebuild_tensor(a);
    if (fn == "torch._utils._rebuild_parameter" ||
        fn == "torch._utils._rebuild_parameter_with_state") {
      if (a.size() < 3 || a.size() > 4 || a[0]->kind != Kind::kTensor) {
        error(fn + " expects (tensor, requires_grad, hooks[, state])");
      }
      return a[0];
    }
    if (fn == "collections.OrderedDict") {
      if (!a.empty()) error("OrderedDict with initial items is not supported");
      return make(Kind::kDict);
    }
    error("unsupported callable " + fn + " (only tensors can be read)");
  }

  Value* rebuild_tensor(const std::vector<Value*>& a) {
    if (a.size() != 6 && a.size() != 7) {
      error("_rebuild_tensor_v2 with " + std::to_string(a.size()) + " arguments (expected 6 or 7)");
    }
    if (a[0]->kind != Kind::kStorage || a[1]->kind != Kind::kInt || a[2]->kind != Kind::kTuple ||
        a[3]->kind != Kind::kTuple) {
      error("_rebuild_tensor_v2 arguments are not (storage, offset, size, stride, ...)");
    }
    Value* t = make(Kind::kTensor);
    TensorRef& ref = t->tensor;
    ref.storage = a[0]->storage;
    ref.offset = a[1]->integer;
    if (a[2]->items.size() > kMaxDims) {
      error("tensor with " + std::to_string(a[2]->items.size()) + " dimensions (at most " +
            std::to_string(kMaxDims) + ")");
    }
    if (a[3]->items.size() != a[2]->items.size()) error("size and stride differ in length");
    for (size_t k = 0; k < a[2]->items.size(); ++k) {
      const Value* d = a[2]->items[k];
      const Value* s = a[3]->items[k];
      if (d->kind != Kind::kInt || s->kind != Kind::kInt) error("size or stride is not an int");
      if (d->integer < 0 || s->integer < 0) error("negative size or stride");
      ref.size.push_back(d->integer);
      ref.stride.push_back(s->integer);
    }
    check_bounds(ref);
    return t;
  }

  // Every element the sizes and strides reach must lie inside the storage, and the tensor may
  // not be larger than the storage (its float32 copy is allocated from these numbers).
  void check_bounds(const TensorRef& ref) const {
    const std::string what = "tensor " + shape_str(ref.size) + " (stride " + shape_str(ref.stride) +
                             ", offset " + std::to_string(ref.offset) + ") on a storage of " +
                             std::to_string(ref.storage.numel) + " elements";
    if (ref.offset < 0) error(what + ": negative offset");
    int64_t numel = 1;
    int64_t last = ref.offset;
    for (size_t k = 0; k < ref.size.size(); ++k) {
      if (__builtin_mul_overflow(numel, ref.size[k], &numel)) error(what + ": size overflows");
    }
    if (numel == 0) {
      if (ref.offset > ref.storage.numel) error(what + ": offset beyond the storage");
      return;
    }
    for (size_t k = 0; k < ref.size.size(); ++k) {
      int64_t span = 0;
      if (__builtin_mul_overflow(ref.size[k] - 1, ref.stride[k], &span) ||
          __builtin_add_overflow(last, span, &last)) {
        error(what + ": strides overflow");
      }
    }
    if (last >= ref.storage.numel) error(what + ": reaches element " + std::to_string(last));
    if (numel > ref.storage.numel) error(what + ": more elements than the storage holds");
  }

  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
  size_t op_pos_ = 0;
  const std::string& name_;
  std::vector<std::unique_ptr<Value>> arena_;
  std::vector<Value*> stack_;
  std::vector<size_t> marks_;
  std::unordered_map<uint32_t, Value*> memo_;
};

// ---------------------------------------------------------------- zip access

class ZipReader {
 public:
  ZipReader(const uint8_t* data, size_t size, const std::string& name) : size_(size), name_(name) {
    // The end-of-central-directory record alone is 22 bytes; anything shorter is not a zip, and
    // libzip need not see a null pointer.
    if (size < 22) not_a_zip("file of " + std::to_string(size) + " bytes");
    zip_error_t err;
    zip_error_init(&err);
    zip_source_t* source = zip_source_buffer_create(data, size, 0, &err);
    if (!source) {
      const std::string why = zip_error_strerror(&err);
      zip_error_fini(&err);
      fail(name_, "cannot open zip: " + why);
    }
    archive_ = zip_open_from_source(source, ZIP_RDONLY | ZIP_CHECKCONS, &err);
    if (!archive_) {
      zip_source_free(source);
      const std::string why = zip_error_strerror(&err);
      zip_error_fini(&err);
      not_a_zip(why);
    }
    zip_error_fini(&err);
  }
  ~ZipReader() { zip_discard(archive_); }
  ZipReader(const ZipReader&) = delete;
  ZipReader& operator=(const ZipReader&) = delete;

  // The archive's top-level folder: the one entry "<prefix>/data.pkl".
  std::string find_prefix() const {
    const zip_int64_t n = zip_get_num_entries(archive_, 0);
    std::string prefix;
    int found = 0;
    for (zip_int64_t i = 0; i < n; ++i) {
      const char* entry = zip_get_name(archive_, static_cast<zip_uint64_t>(i), ZIP_FL_ENC_RAW);
      if (!entry) continue;
      const std::string s(entry);
      const std::string suffix = "/data.pkl";
      if (s.size() > suffix.size() &&
          s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0 &&
          s.find('/') == s.size() - suffix.size()) {
        prefix = s.substr(0, s.size() - suffix.size());
        ++found;
      }
    }
    if (found == 0) {
      fail(name_,
           "zip has no '<archive>/data.pkl' entry (not a torch.save file; the legacy "
           "pre-1.6 format is not supported)");
    }
    if (found > 1)
      fail(name_, "zip has " + std::to_string(found) + " '<archive>/data.pkl' entries");
    return prefix;
  }

  bool has(const std::string& entry) const {
    return zip_name_locate(archive_, entry.c_str(), ZIP_FL_ENC_RAW) >= 0;
  }

  // The entry's bytes. Its size (from the central directory) is checked against `max_size`
  // and, when `exact_size` >= 0, against that, before anything is allocated or decompressed.
  std::vector<uint8_t> read(const std::string& entry, uint64_t max_size, int64_t exact_size) const {
    const zip_int64_t index = zip_name_locate(archive_, entry.c_str(), ZIP_FL_ENC_RAW);
    if (index < 0) fail(name_, "zip has no entry '" + entry + "'");
    zip_stat_t st;
    zip_stat_init(&st);
    if (zip_stat_index(archive_, static_cast<zip_uint64_t>(index), 0, &st) != 0) {
      fail(name_, "cannot stat zip entry '" + entry + "': " + zip_strerror(archive_));
    }
    const zip_uint64_t needed = ZIP_STAT_SIZE | ZIP_STAT_COMP_SIZE | ZIP_STAT_COMP_METHOD;
    if ((st.valid & needed) != needed)
      fail(name_, "zip entry '" + entry + "' lacks size information");
    const std::string sizes = "zip entry '" + entry + "' (" + std::to_string(st.size) + " bytes, " +
                              std::to_string(st.comp_size) + " compressed)";
    if (st.comp_size > size_) fail(name_, sizes + " is larger than the file");
    if (st.comp_method == ZIP_CM_STORE) {
      if (st.size != st.comp_size) fail(name_, sizes + ": stored sizes disagree");
    } else if (st.comp_method == ZIP_CM_DEFLATE) {
      if (st.size / kMaxDeflateRatio > st.comp_size) fail(name_, sizes + ": impossible ratio");
    } else {
      fail(name_, sizes + ": unsupported compression method " + std::to_string(st.comp_method));
    }
    if (st.size > max_size)
      fail(name_, sizes + ": larger than the limit of " + std::to_string(max_size));
    if (exact_size >= 0 && st.size != static_cast<zip_uint64_t>(exact_size)) {
      fail(name_, sizes + ": expected " + std::to_string(exact_size) + " bytes");
    }
    zip_file_t* file = zip_fopen_index(archive_, static_cast<zip_uint64_t>(index), 0);
    if (!file) fail(name_, "cannot open zip entry '" + entry + "': " + zip_strerror(archive_));
    std::vector<uint8_t> bytes(static_cast<size_t>(st.size));
    size_t done = 0;
    std::string problem;
    while (done < bytes.size()) {
      const zip_int64_t n = zip_fread(file, bytes.data() + done, bytes.size() - done);
      if (n < 0) {
        problem = zip_file_strerror(file);
        break;
      }
      if (n == 0) {
        problem = "ends after " + std::to_string(done) + " bytes";
        break;
      }
      done += static_cast<size_t>(n);
    }
    // Reading past the end makes libzip verify the CRC of what was read.
    if (problem.empty()) {
      uint8_t extra;
      const zip_int64_t n = zip_fread(file, &extra, 1);
      if (n < 0) problem = zip_file_strerror(file);
      if (n > 0) problem = "holds more bytes than its header says";
    }
    zip_fclose(file);
    if (!problem.empty()) fail(name_, "zip entry '" + entry + "': " + problem);
    return bytes;
  }

 private:
  [[noreturn]] void not_a_zip(const std::string& why) const {
    fail(name_, "not a zip archive (torch.save >= 1.6 format expected): " + why);
  }

  zip_t* archive_ = nullptr;
  size_t size_;
  const std::string& name_;
};

// ---------------------------------------------------------------- tensor materialisation

float element(ElementType type, const uint8_t* p) {
  switch (type) {
    case ElementType::kFloat32:
      return load_le<float>(p);
    case ElementType::kFloat16:
      return half_to_float(load_le<uint16_t>(p));
    case ElementType::kFloat64:
      return static_cast<float>(load_le<double>(p));
    case ElementType::kBFloat16:
      return bfloat16_to_float(load_le<uint16_t>(p));
  }
  return 0.0f;
}

// Gathers ref's elements (row-major over ref.size) from the storage blob into a float32 tensor.
Tensor materialise(const TensorRef& ref, const std::vector<uint8_t>& blob) {
  Tensor out = Tensor::empty(ref.size);
  const int64_t numel = out.numel();
  if (numel == 0) return out;
  float* dst = out.data();
  const size_t itemsize = ref.storage.itemsize;
  const uint8_t* base = blob.data();
  bool contiguous = true;
  int64_t expected = 1;
  for (size_t k = ref.size.size(); k-- > 0;) {
    if (ref.size[k] != 1 && ref.stride[k] != expected) contiguous = false;
    expected *= ref.size[k];
  }
  if (contiguous) {
    const uint8_t* src = base + static_cast<size_t>(ref.offset) * itemsize;
    if (ref.storage.type == ElementType::kFloat32) {
      std::memcpy(dst, src, static_cast<size_t>(numel) * sizeof(float));
    } else {
      for (int64_t i = 0; i < numel; ++i) {
        dst[i] = element(ref.storage.type, src + static_cast<size_t>(i) * itemsize);
      }
    }
    return out;
  }
  // Odometer over the output index, keeping the storage offset in step.
  const size_t rank = ref.size.size();
  std::vector<int64_t> index(rank, 0);
  int64_t src = ref.offset;
  for (int64_t i = 0; i < numel; ++i) {
    dst[i] = element(ref.storage.type, base + static_cast<size_t>(src) * itemsize);
    for (size_t k = rank; k-- > 0;) {
      if (++index[k] < ref.size[k]) {
        src += ref.stride[k];
        break;
      }
      src -= ref.stride[k] * (ref.size[k] - 1);
      index[k] = 0;
    }
  }
  return out;
}

}  // namespace

Tensor parse_torch_tensor(const uint8_t* data, size_t size, const std::string& name_for_errors) {
  const std::string& name = name_for_errors;
  ZipReader zip(data, size, name);
  const std::string prefix = zip.find_prefix();
  if (zip.has(prefix + "/byteorder")) {
    const std::vector<uint8_t> order = zip.read(prefix + "/byteorder", 16, -1);
    if (std::string(order.begin(), order.end()) != "little") {
      fail(name, "storages are not little-endian");
    }
  }
  const std::vector<uint8_t> pickle = zip.read(prefix + "/data.pkl", kMaxPickleBytes, -1);
  Unpickler unpickler(pickle.data(), pickle.size(), name);
  const Value* result = unpickler.run();
  if (result->kind != Kind::kTensor) {
    fail(name, "the saved object is a " + describe(result) + ", not a tensor");
  }
  const TensorRef& ref = result->tensor;
  int64_t nbytes = 0;
  if (__builtin_mul_overflow(ref.storage.numel, static_cast<int64_t>(ref.storage.itemsize),
                             &nbytes)) {
    fail(name, "storage of " + std::to_string(ref.storage.numel) + " elements overflows");
  }
  const std::vector<uint8_t> blob =
      zip.read(prefix + "/data/" + ref.storage.key, std::numeric_limits<uint64_t>::max(), nbytes);
  return materialise(ref, blob);
}

Tensor read_torch_tensor(const std::string& path) {
  const std::vector<uint8_t> bytes = read_file_bytes(path);
  return parse_torch_tensor(bytes.data(), bytes.size(), path);
}

}  // namespace stgnn

// ---------------------------------------------------------------- writer

namespace stgnn {

namespace {

// The pickle opcodes Python's protocol-2 pickler emits for a tensor, with its memo numbering
// (BINPUT after every memoised object, none after the empty tuple), so the stream matches the
// one torch.save writes byte for byte.
class PickleWriter {
 public:
  void proto2() {
    out_.push_back(0x80);
    out_.push_back(2);
  }
  void opcode(uint8_t op) { out_.push_back(op); }
  void global(const std::string& module, const std::string& name) {
    out_.push_back('c');
    append(module + "\n" + name + "\n");
    memoise();
  }
  void unicode(const std::string& text) {
    out_.push_back('X');
    append_le(static_cast<uint32_t>(text.size()));
    append(text);
    memoise();
  }
  // BININT1 / BININT2 / BININT / LONG1, the smallest that holds v (Python's save_long).
  void integer(int64_t v) {
    if (v >= 0 && v <= 0xff) {
      out_.push_back('K');
      out_.push_back(static_cast<uint8_t>(v));
    } else if (v >= 0 && v <= 0xffff) {
      out_.push_back('M');
      append_le(static_cast<uint16_t>(v));
    } else if (v >= INT32_MIN && v <= INT32_MAX) {
      out_.push_back('J');
      append_le(static_cast<int32_t>(v));
    } else {
      // Two's complement, little-endian, as short as the sign allows.
      std::vector<uint8_t> bytes;
      int64_t rest = v;
      do {
        bytes.push_back(static_cast<uint8_t>(rest & 0xff));
        rest >>= 8;
      } while (!((rest == 0 && (bytes.back() & 0x80) == 0) ||
                 (rest == -1 && (bytes.back() & 0x80) != 0)));
      out_.push_back(0x8a);
      out_.push_back(static_cast<uint8_t>(bytes.size()));
      out_.insert(out_.end(), bytes.begin(), bytes.end());
    }
  }
  void int_tuple(const std::vector<int64_t>& values) {
    if (values.empty()) {
      out_.push_back(')');
      return;
    }
    if (values.size() > 3) out_.push_back('(');
    for (int64_t v : values)
      integer(v);
    out_.push_back(values.size() > 3 ? 't' : static_cast<uint8_t>(0x85 + values.size() - 1));
    memoise();
  }
  void memoise() {
    if (memo_ < 256) {
      out_.push_back('q');
      out_.push_back(static_cast<uint8_t>(memo_));
    } else {
      out_.push_back('r');
      append_le(static_cast<uint32_t>(memo_));
    }
    ++memo_;
  }
  std::vector<uint8_t> take() { return std::move(out_); }

 private:
  void append(const std::string& s) { out_.insert(out_.end(), s.begin(), s.end()); }
  template <typename T>
  void append_le(T v) {
    uint8_t b[sizeof(T)];
    std::memcpy(b, &v, sizeof(T));
    out_.insert(out_.end(), b, b + sizeof(T));
  }
  std::vector<uint8_t> out_;
  uint32_t memo_ = 0;
};

std::vector<uint8_t> tensor_pickle(const Shape& shape) {
  const int64_t numel = shape_numel(shape);
  std::vector<int64_t> stride(shape.size());
  int64_t running = 1;
  for (size_t k = shape.size(); k-- > 0;) {
    stride[k] = running;
    running *= std::max<int64_t>(shape[k], 1);
  }
  PickleWriter p;
  p.proto2();
  p.global("torch._utils", "_rebuild_tensor_v2");
  p.opcode('(');
  p.opcode('(');
  p.unicode("storage");
  p.global("torch", "FloatStorage");
  p.unicode("0");
  p.unicode("cpu");
  p.integer(numel);
  p.opcode('t');
  p.memoise();
  p.opcode('Q');  // BINPERSID
  p.integer(0);   // storage offset
  p.int_tuple(shape);
  p.int_tuple(stride);
  p.opcode(0x89);  // NEWFALSE: requires_grad
  p.global("collections", "OrderedDict");
  p.opcode(')');
  p.opcode('R');
  p.memoise();
  p.opcode('t');
  p.memoise();
  p.opcode('R');
  p.memoise();
  p.opcode('.');
  return p.take();
}

std::string archive_name(const std::string& file_name) {
  std::string stem = std::filesystem::path(file_name).stem().string();
  const bool safe = !stem.empty() && std::all_of(stem.begin(), stem.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-' || c == '.';
  });
  return safe ? stem : "archive";
}

// Owns a libzip archive written into a growing memory buffer.
class ZipWriter {
 public:
  explicit ZipWriter(const std::string& name) : name_(name) {
    zip_error_init(&error_);
    source_ = zip_source_buffer_create(nullptr, 0, 0, &error_);
    if (source_ == nullptr) fail("cannot create a memory buffer");
    archive_ = zip_open_from_source(source_, ZIP_TRUNCATE, &error_);
    if (archive_ == nullptr) {
      zip_source_free(source_);
      source_ = nullptr;
      fail("cannot open a zip archive in memory");
    }
    zip_source_keep(source_);  // the bytes are read back after zip_close
  }
  ~ZipWriter() {
    if (archive_ != nullptr) zip_discard(archive_);
    if (source_ != nullptr) zip_source_free(source_);
    zip_error_fini(&error_);
  }
  ZipWriter(const ZipWriter&) = delete;
  ZipWriter& operator=(const ZipWriter&) = delete;

  // A stored entry whose data starts on a 64-byte boundary of the file: torch pads the local
  // header with an extra field 'FB' of 'Z' bytes so that storages can be memory-mapped.
  // `bytes` must stay alive until finish().
  void add_stored(const std::string& entry, const std::vector<uint8_t>& bytes) {
    constexpr uint64_t kAlign = 64, kLocalHeader = 30, kExtraHeader = 4;
    const uint64_t unpadded = offset_ + kLocalHeader + entry.size() + kExtraHeader;
    const uint64_t pad = (kAlign - unpadded % kAlign) % kAlign;
    zip_source_t* s = zip_source_buffer(archive_, bytes.data(), bytes.size(), 0);
    if (s == nullptr) fail_archive("entry '" + entry + "'");
    const zip_int64_t index = zip_file_add(archive_, entry.c_str(), s, ZIP_FL_ENC_UTF_8);
    if (index < 0) {
      zip_source_free(s);
      fail_archive("entry '" + entry + "'");
    }
    const auto i = static_cast<zip_uint64_t>(index);
    const std::vector<uint8_t> padding(pad, 'Z');
    if (zip_set_file_compression(archive_, i, ZIP_CM_STORE, 0) != 0 ||
        zip_file_set_mtime(archive_, i, kFixedTime, 0) != 0 ||
        zip_file_extra_field_set(archive_, i, kPaddingField, ZIP_EXTRA_FIELD_NEW, padding.data(),
                                 static_cast<zip_uint16_t>(pad), ZIP_FL_LOCAL) < 0) {
      fail_archive("entry '" + entry + "'");
    }
    offset_ = unpadded + pad + bytes.size();
  }

  std::vector<uint8_t> finish() {
    if (zip_close(archive_) != 0) fail_archive("closing the archive");
    archive_ = nullptr;
    std::vector<uint8_t> out;
    if (zip_source_open(source_) != 0) fail("cannot reopen the memory buffer");
    zip_source_seek(source_, 0, SEEK_END);
    const zip_int64_t size = zip_source_tell(source_);
    zip_source_seek(source_, 0, SEEK_SET);
    if (size < 0) {
      zip_source_close(source_);
      fail("cannot size the memory buffer");
    }
    out.resize(static_cast<size_t>(size));
    const zip_int64_t got = zip_source_read(source_, out.data(), out.size());
    zip_source_close(source_);
    if (got != size) fail("short read of the memory buffer");
    return out;
  }

 private:
  static constexpr zip_uint16_t kPaddingField = 0x4246;  // "FB" little-endian
  static constexpr time_t kFixedTime = 315532800;        // 1980-01-01, the DOS epoch
  [[noreturn]] void fail(const std::string& what) {
    throw IoError("torch '" + name_ + "': " + what + ": " + zip_error_strerror(&error_));
  }
  [[noreturn]] void fail_archive(const std::string& what) {
    throw IoError("torch '" + name_ + "': " + what + ": " + zip_strerror(archive_));
  }
  std::string name_;
  zip_error_t error_;
  zip_source_t* source_ = nullptr;
  zip_t* archive_ = nullptr;
  uint64_t offset_ = 0;
};

}  // namespace

std::vector<uint8_t> torch_tensor_bytes(const Tensor& tensor, const std::string& file_name) {
  if (!tensor.defined())
    throw ValueError("write_torch_tensor '" + file_name + "': undefined tensor");
  const std::string prefix = archive_name(file_name);
  const std::vector<uint8_t> pickle = tensor_pickle(tensor.shape());
  std::vector<uint8_t> storage(static_cast<size_t>(tensor.numel()) * sizeof(float));
  if (!storage.empty()) std::memcpy(storage.data(), tensor.data(), storage.size());
  const std::vector<uint8_t> version = {'3', '\n'};
  ZipWriter zip(file_name);
  zip.add_stored(prefix + "/data.pkl", pickle);
  zip.add_stored(prefix + "/data/0", storage);
  zip.add_stored(prefix + "/version", version);
  return zip.finish();
}

void write_torch_tensor(const std::string& path, const Tensor& tensor) {
  const std::vector<uint8_t> bytes = torch_tensor_bytes(tensor, path);
  write_file_atomic(path, {ByteSpan{bytes.data(), bytes.size()}});
}

}  // namespace stgnn
