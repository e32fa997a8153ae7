// bad_inputs: feeds one hand-made bad input to each parser and prints the message the user
// sees (RELIABILITY.md, "Bad inputs"). Built with the fuzz harnesses (make fuzz) as
// build-fuzz/bad_inputs [FULL_DIR]; with FULL_DIR (a directory on a filesystem with less than
// 4 MiB free, e.g. a small tmpfs) it also writes a 4 MiB checkpoint there. It exits non-zero when
// any input is accepted or escapes as something other than a typed stgnn::Error.
#include <cstdio>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "autograd/atomic_file.h"
#include "autograd/error.h"
#include "autograd/safetensors.h"
#include "data/egoexo.h"
#include "data/mnist.h"
#include "data/npy.h"
#include "data/torch_pt.h"
#include "video/video_io.h"

using namespace stgnn;

namespace {

int failures = 0;

void expect_refused(const char* what, const std::function<void()>& parse) {
  try {
    parse();
    std::printf("ACCEPTED  %s\n", what);
    ++failures;
  } catch (const Error& e) {
    std::printf("%-44s -> %s\n", what, e.what());
  } catch (const std::exception& e) {
    std::printf("UNTYPED   %s -> %s\n", what, e.what());
    ++failures;
  }
}

std::string npy_with_header(const std::string& dict, size_t payload) {
  std::string header = dict;
  header.append((64 - (10 + header.size() + 1) % 64) % 64, ' ');
  header += '\n';
  std::string out = std::string("\x93NUMPY\x01\x00", 8);
  out += static_cast<char>(header.size() & 0xff);
  out += static_cast<char>(header.size() >> 8);
  return out + header + std::string(payload, '\0');
}

std::vector<uint8_t> be32s(std::initializer_list<uint32_t> words) {
  std::vector<uint8_t> out;
  for (uint32_t w : words)
    for (int s = 24; s >= 0; s -= 8)
      out.push_back(static_cast<uint8_t>(w >> s));
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string npy_lie =
      npy_with_header("{'descr': '<f4', 'fortran_order': False, 'shape': (1000000000000,), }", 8);
  expect_refused("npy: header claims 10^12 elements", [&] {
    parse_npy(reinterpret_cast<const uint8_t*>(npy_lie.data()), npy_lie.size(), "lie.npy");
  });

  const std::vector<uint8_t> images = be32s({2051, 0xFFFFFFFFu, 28, 28});
  const std::vector<uint8_t> labels = be32s({2049, 0xFFFFFFFFu});
  expect_refused("MNIST IDX: header claims 2^32-1 images", [&] {
    parse_idx(images.data(), images.size(), labels.data(), labels.size(), "train-images");
  });

  const std::string good =
      encode_safetensors({{"w", Tensor::full({4, 4}, 0.5f)}}, {{"epoch", "3"}});
  std::string data_flip = good, header_flip = good;
  data_flip[data_flip.size() - 5] ^= 0x04;
  header_flip[good.find("\"epoch\":\"3\"") + 9] ^= 0x01;  // epoch 3 -> 2
  expect_refused("safetensors: one bit flipped in the data",
                 [&] { decode_safetensors(data_flip, "runs/a/last.safetensors"); });
  expect_refused("safetensors: one bit flipped in the header",
                 [&] { decode_safetensors(header_flip, "runs/a/last.safetensors"); });
  const std::string lying = R"({"w":{"dtype":"F32","shape":[1000000,1000000],)"
                            R"("data_offsets":[0,4000000000000]}})";
  std::string lie_file(8, '\0');
  for (int i = 0; i < 8; ++i)
    lie_file[static_cast<size_t>(i)] = static_cast<char>((lying.size() >> (8 * i)) & 0xff);
  lie_file += lying + std::string(16, '\0');
  expect_refused("safetensors: header lies about offsets",
                 [&] { decode_safetensors(lie_file, "lie.safetensors"); });
  expect_refused("safetensors: header length 2^64-1",
                 [&] { decode_safetensors(std::string(8, '\xff') + "{}", "huge.safetensors"); });

  const std::string not_zip = "PK\x03\x04 torn";
  expect_refused("torch .pt: not a zip archive", [&] {
    parse_torch_tensor(reinterpret_cast<const uint8_t*>(not_zip.data()), not_zip.size(),
                       "model.pt");
  });

  expect_refused("label CSV: a column missing", [&] {
    parse_label_mapping("label_id,step_unique_id\n0,1000\n", "label_mapping.csv");
  });
  expect_refused("annotation JSON: cut in the middle", [&] {
    parse_keystep_segments(R"({"annotations": {"take": [{"start_time": 1.0,)",
                           "keystep_segment_train.json", nullptr);
  });

  expect_refused("video: 4 KiB of noise", [&] {
    std::vector<uint8_t> noise(4096);
    for (size_t i = 0; i < noise.size(); ++i)
      noise[i] = static_cast<uint8_t>((i * 2654435761u) >> 13);
    ReaderOptions options;
    options.format = {ColorMode::kGray, 16, 16, ResizeFilter::kArea};
    VideoReader reader;
    reader.open_memory(std::move(noise), "clip.mp4", options);
    reader.read_all_u8();
  });

  expect_refused("checkpoint write into a missing directory",
                 [&] { write_file_atomic("/nonexistent-dir/last.safetensors", good); });
  expect_refused("checkpoint write below a regular file",
                 [&] { write_file_atomic("/etc/hostname/last.safetensors", good); });
  if (argc > 1) {
    const std::string big = encode_safetensors({{"w", Tensor::zeros({1024, 1024})}}, {});
    expect_refused("checkpoint write on a full filesystem",
                   [&] { write_file_atomic(std::string(argv[1]) + "/last.safetensors", big); });
  }
  return failures == 0 ? 0 : 1;
}
