// safetensors checkpoints: bit-exact round trips, optimiser state, resume equivalence,
// rejection of missing / extra / mis-shaped / truncated / corrupted files, spec compliance.
#include <doctest/doctest.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>

#include "autograd/atomic_file.h"
#include "autograd/safetensors.h"
#include "nn/checkpoint.h"
#include "support/check.h"

using namespace stgnn;
using namespace stgnn::testing;

namespace {

class Net : public Module {
 public:
  explicit Net(uint64_t seed, int64_t hidden = 6) {
    Rng rng(seed);
    body = register_module("body",
                           std::make_shared<MLP>(std::vector<int64_t>{5, hidden, 3}, false, rng));
    norm = register_module("norm", std::make_shared<BatchNorm1d>(5));
  }
  Tensor forward(const Tensor& x) { return body->forward(norm->forward(x)); }
  std::shared_ptr<MLP> body;
  std::shared_ptr<BatchNorm> norm;
};

std::string temp_path(const std::string& name) {
  const auto dir =
      std::filesystem::temp_directory_path() / ("stgnn_test_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  return (dir / name).string();
}

// Trains `steps` Adam steps on a fixed random problem.
void train(Net& net, Optimizer& opt, int steps, uint64_t data_seed) {
  Rng rng(data_seed);
  for (int i = 0; i < steps; ++i) {
    Tensor x = randn({8, 5}, rng);
    IndexTensor y({0, 1, 2, 0, 1, 2, 0, 1});
    opt.zero_grad();
    cross_entropy(net.forward(x), y).backward();
    opt.step();
  }
}

std::vector<float> all_values(const Module& m) {
  std::vector<float> v;
  for (const auto& [name, t] : m.named_parameters()) {
    const auto d = t.to_vector();
    v.insert(v.end(), d.begin(), d.end());
  }
  for (const auto& [name, t] : m.named_buffers()) {
    const auto d = t.to_vector();
    v.insert(v.end(), d.begin(), d.end());
  }
  return v;
}

}  // namespace

TEST_CASE("round trip is bit-exact, optimiser included, and resuming equals not stopping") {
  const std::string path = temp_path("ckpt.safetensors");
  Net straight(1);
  Adam straight_opt(straight.named_parameters(), 0.01);
  train(straight, straight_opt, 10, 99);

  Net first(1);
  Adam first_opt(first.named_parameters(), 0.01);
  train(first, first_opt, 5, 99);
  save_checkpoint(path, first, &first_opt, {{"epoch", "5"}});

  Net resumed(2);  // different initial weights: everything must come from the file
  Adam resumed_opt(resumed.named_parameters(), 0.01);
  const auto meta = load_checkpoint(path, resumed, &resumed_opt);
  CHECK(meta.at("epoch") == "5");
  CHECK(resumed_opt.steps() == 5);
  CHECK(all_values(resumed) == all_values(first));
  // Continue with the data the straight run saw in its steps 5..9.
  Rng rng(99);
  for (int i = 0; i < 5; ++i)
    randn({8, 5}, rng);
  for (int i = 0; i < 5; ++i) {
    Tensor x = randn({8, 5}, rng);
    resumed_opt.zero_grad();
    cross_entropy(resumed.forward(x), IndexTensor({0, 1, 2, 0, 1, 2, 0, 1})).backward();
    resumed_opt.step();
  }
  CHECK(all_values(resumed) == all_values(straight));
}

TEST_CASE("same seed and thread count give bit-identical training") {
  Net a(3), b(3);
  Adam oa(a.named_parameters(), 0.01), ob(b.named_parameters(), 0.01);
  train(a, oa, 20, 7);
  train(b, ob, 20, 7);
  CHECK(all_values(a) == all_values(b));
}

TEST_CASE("loading rejects missing, extra and mis-shaped tensors, naming them") {
  const std::string path = temp_path("shape.safetensors");
  Net small(1, 6);
  save_checkpoint(path, small, nullptr);
  Net other(1, 7);
  const std::vector<float> before = all_values(other);
  try {
    load_checkpoint(path, other, nullptr);
    FAIL("no throw");
  } catch (const FormatError& e) {
    CHECK(std::string(e.what()).find(
              "tensor 'body.0.weight' has shape [6,5], the model expects [7,5]") !=
          std::string::npos);
  }
  CHECK(all_values(other) == before);  // untouched
  // Missing tensor.
  save_safetensors(path, {{"body.0.weight", Tensor::zeros({6, 5})}});
  CHECK_THROWS_WITH_AS(load_checkpoint(path, small, nullptr),
                       doctest::Contains("missing tensor 'body.0.bias'"), FormatError);
  // Extra tensor.
  NamedTensorList extra = small.named_parameters();
  for (auto& b : small.named_buffers())
    extra.push_back(b);
  extra.emplace_back("stray", Tensor::zeros({2}));
  save_safetensors(path, extra);
  CHECK_THROWS_WITH_AS(load_checkpoint(path, small, nullptr),
                       doctest::Contains("unexpected tensor 'stray'"), FormatError);
  // Optimiser state asked for but absent.
  save_checkpoint(path, small, nullptr);
  Adam opt(small.named_parameters(), 0.1);
  CHECK_THROWS_WITH_AS(load_checkpoint(path, small, &opt), doctest::Contains("no optimizer state"),
                       FormatError);
}

TEST_CASE("truncated and corrupted files are refused cleanly") {
  const std::string path = temp_path("bad.safetensors");
  Net net(1);
  const std::string good = encode_safetensors(net.named_parameters(), {});
  for (size_t cut :
       {size_t{0}, size_t{4}, size_t{8}, size_t{20}, good.size() / 2, good.size() - 1}) {
    CAPTURE(cut);
    CHECK_THROWS_AS(decode_safetensors(good.substr(0, cut), "cut"), FormatError);
  }
  // A flipped bit in the data section is caught by the checksum.
  std::string flipped = good;
  flipped[flipped.size() - 3] ^= 0x10;
  CHECK_THROWS_WITH_AS(decode_safetensors(flipped, "flip"), doctest::Contains("checksum mismatch"),
                       FormatError);
  // Any single flipped bit, header or data, is refused: the data CRC-32 and the header CRC-32
  // ("stgnn.header_crc32") in the metadata cover every byte but the padding, and a flipped
  // padding byte is no longer a space, so the JSON does not parse.
  for (size_t byte = 0; byte < good.size(); ++byte) {
    CAPTURE(byte);
    std::string bad = good;
    bad[byte] = static_cast<char>(bad[byte] ^ (1 << (byte % 8)));
    CHECK_THROWS_AS(decode_safetensors(bad, "flip"), FormatError);
  }
  // Lying headers: huge length, offsets beyond the data, overlapping tensors, wrong sizes.
  const auto with_header = [](const std::string& json) {
    std::string h = json;
    std::string out(8, '\0');
    for (int i = 0; i < 8; ++i)
      out[static_cast<size_t>(i)] = static_cast<char>((h.size() >> (8 * i)) & 0xff);
    return out + h + std::string(16, '\0');
  };
  std::string huge(8, '\xff');
  CHECK_THROWS_AS(decode_safetensors(huge + "{}", "huge"), FormatError);
  CHECK_THROWS_WITH_AS(
      decode_safetensors(
          with_header(R"({"a":{"dtype":"F32","shape":[100],"data_offsets":[0,400]}})"), "x"),
      doctest::Contains("outside the data section"), FormatError);
  CHECK_THROWS_WITH_AS(
      decode_safetensors(
          with_header(
              R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})"),
          "x"),
      doctest::Contains("overlap"), FormatError);
  CHECK_THROWS_WITH_AS(
      decode_safetensors(with_header(R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})"),
                         "x"),
      doctest::Contains("needs 12"), FormatError);
  CHECK_THROWS_AS(decode_safetensors(
                      with_header(R"({"a":{"dtype":"I8","shape":[1],"data_offsets":[0,1]}})"), "x"),
                  FormatError);
  CHECK_THROWS_AS(decode_safetensors(with_header("not json"), "x"), FormatError);
  // A shape of 10^12 elements is refused from the header alone, before allocating.
  CHECK_THROWS_AS(
      decode_safetensors(
          with_header(
              R"({"a":{"dtype":"F32","shape":[1000000,1000000],"data_offsets":[0,4000000000000]}})"),
          "x"),
      FormatError);
  CHECK_THROWS_AS(
      decode_safetensors(
          with_header(
              R"({"a":{"dtype":"F32","shape":[0,18446744073709551615],"data_offsets":[0,0]}})"),
          "x"),
      FormatError);
  CHECK_THROWS_AS(
      decode_safetensors(with_header(R"({"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,0]}})"),
                         "x"),
      FormatError);
  // A truncated file on disk gives a message naming the file.
  write_file_atomic(path, good.substr(0, 30));
  CHECK_THROWS_WITH_AS(load_checkpoint(path, net, nullptr), doctest::Contains(path.c_str()),
                       FormatError);
  CHECK_THROWS_AS(load_checkpoint(temp_path("does-not-exist"), net, nullptr), IoError);
}

TEST_CASE("reads a file written from the spec by an independent writer (F32, F16, BF16, F64)") {
  NamedTensors file = load_safetensors(fixture_path("safetensors/spec_written.safetensors"));
  CHECK(file.metadata.at("origin") == "spec-writer");
  CHECK(file.tensors.at("layer.weight").shape() == Shape{2, 3});
  CHECK(file.tensors.at("layer.weight").to_vector() ==
        std::vector<float>{0, 0.25f, 0.5f, 0.75f, 1, 1.25f});
  CHECK(file.tensors.at("layer.bias").to_vector() == std::vector<float>{-1.5f, 2.25f});
  CHECK(file.tensors.at("scale").to_vector() == std::vector<float>{3.0f});
  CHECK(file.tensors.at("brain").to_vector() == std::vector<float>{1.0f, -0.5f, 3.0f});
}

TEST_CASE("our files follow the spec: aligned header, sorted names, exact offsets") {
  const std::string bytes =
      encode_safetensors({{"z", Tensor::ones({2})}, {"a", Tensor::zeros({1, 3})}}, {});
  uint64_t n = 0;
  for (int i = 0; i < 8; ++i)
    n |= static_cast<uint64_t>(static_cast<unsigned char>(bytes[static_cast<size_t>(i)]))
         << (8 * i);
  CHECK(n % 8 == 0);
  CHECK(bytes.size() == 8 + n + 5 * 4);
  const std::string header = bytes.substr(8, n);
  CHECK(header.find(R"("a":{"dtype":"F32","shape":[1,3],"data_offsets":[0,12]})") !=
        std::string::npos);
  CHECK(header.find(R"("z":{"dtype":"F32","shape":[2],"data_offsets":[12,20]})") !=
        std::string::npos);
}

TEST_CASE("atomic writes leave no temporary and report unwritable paths") {
  const std::string path = temp_path("atomic.bin");
  write_file_atomic(path, "hello");
  CHECK(read_file(path) == "hello");
  for (const auto& entry :
       std::filesystem::directory_iterator(std::filesystem::path(path).parent_path())) {
    CHECK(entry.path().string().find(".tmp.") == std::string::npos);
  }
  CHECK_THROWS_WITH_AS(write_file_atomic("/nonexistent-dir/x.bin", "x"),
                       doctest::Contains("/nonexistent-dir/x.bin"), IoError);
}
