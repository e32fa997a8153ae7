// Video decoding/encoding (FFmpeg) and still images/canvas (stb). Test clips are made with the
// ffmpeg command-line tool into a temporary directory; decoded frames are compared with what
// that tool decodes. Every decode of a damaged file runs under a time bound.
#include <doctest/doctest.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <future>
#include <map>
#include <string>
#include <vector>

#include "video/image_io.h"
#include "video/video_io.h"

using namespace stgnn;
namespace fs = std::filesystem;

namespace {

// ---- files ----

struct TempDir {
  fs::path path;
  TempDir() {
    path = fs::temp_directory_path() / ("stgnn_test_video_io_" + std::to_string(::getpid()));
    fs::create_directories(path);
  }
  ~TempDir() {
    std::error_code ignored;
    fs::remove_all(path, ignored);
  }
};

std::string temp_path(const std::string& name) {
  static TempDir dir;
  return (dir.path / name).string();
}

std::vector<uint8_t> read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  REQUIRE_MESSAGE(in.good(), "cannot read " << path);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(in), {});
}

void write_bytes(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(bytes.data()),
            static_cast<std::streamsize>(bytes.size()));
  REQUIRE_MESSAGE(out.good(), "cannot write " << path);
}

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

// ---- the ffmpeg command-line tool ----

bool ffmpeg_cli_available() {
  static const bool available = std::system("ffmpeg -hide_banner -version > /dev/null 2>&1") == 0;
  return available;
}

void run_ffmpeg(const std::string& arguments) {
  REQUIRE_MESSAGE(ffmpeg_cli_available(),
                  "the ffmpeg command-line tool (/usr/bin/ffmpeg) is needed to make the test "
                  "clips; install it with apt-get install ffmpeg");
  const std::string command = "ffmpeg -hide_banner -loglevel error -nostdin -y " + arguments;
  REQUIRE_MESSAGE(std::system(command.c_str()) == 0, "command failed: " << command);
}

constexpr int kWidth = 96;
constexpr int kHeight = 64;
constexpr double kFps = 25;

// One test clip per kind, made on first use: testsrc at 96x64, 25 fps, hue rotating.
//   mp4 (1 s, H.264 or MPEG-4), long_mp4 / long_webm (2 s, keyframe every 10 frames, for
//   seeking), long_ts (MPEG-TS: inexact seeks), long_h264 (raw H.264: no duration, no
//   seeking), long_avi (2 s, MJPEG), long_gif (2 s),
//   faststart_mp4 (moov first), webm (VP9 or VP8), mkv, avi_mjpeg, avi_mpeg4, gif,
//   zero_avi (a video stream without frames), audio (an m4a without video).
std::string clip(const std::string& kind) {
  static std::map<std::string, std::string> made;
  if (made.count(kind)) return made[kind];
  // The hue turns 10 degrees a frame, so neighbouring frames differ clearly.
  const std::string source = "-f lavfi -i testsrc=size=96x64:rate=25,hue=h=t*250 ";
  const std::string h264 =
      has_encoder("libx264") ? "-c:v libx264 -pix_fmt yuv420p " : "-c:v mpeg4 -q:v 3 ";
  const std::string vpx = has_encoder("libvpx-vp9") ? "-c:v libvpx-vp9 " : "-c:v libvpx ";
  std::string path;
  if (kind == "mp4") {
    path = temp_path("clip.mp4");
    run_ffmpeg(source + "-t 1 " + h264 + path);
  } else if (kind == "long_mp4") {
    path = temp_path("long.mp4");
    run_ffmpeg(source + "-t 2 -g 10 " + h264 + path);
  } else if (kind == "long_webm") {
    path = temp_path("long.webm");
    run_ffmpeg(source + "-t 2 -g 10 " + vpx + "-pix_fmt yuv420p -b:v 1M " + path);
  } else if (kind == "long_ts") {
    path = temp_path("long.ts");
    run_ffmpeg(source + "-t 2 -g 10 " + h264 + path);
  } else if (kind == "long_h264") {
    // An elementary stream without container: H.264 Annex B, or MPEG-4 Part 2 without x264.
    const bool x264 = has_encoder("libx264");
    path = temp_path(x264 ? "long.h264" : "long.m4v");
    run_ffmpeg(source + "-t 2 -g 10 " + h264 + (x264 ? "-f h264 " : "-f m4v ") + path);
  } else if (kind == "long_avi") {
    path = temp_path("long.avi");
    run_ffmpeg(source + "-t 2 -c:v mjpeg -q:v 2 " + path);
  } else if (kind == "long_gif") {
    path = temp_path("long.gif");
    run_ffmpeg(source + "-t 2 " + path);
  } else if (kind == "faststart_mp4") {
    path = temp_path("faststart.mp4");
    run_ffmpeg(source + "-t 1 " + h264 + "-movflags +faststart " + path);
  } else if (kind == "webm") {
    path = temp_path("clip.webm");
    run_ffmpeg(source + "-t 1 " + vpx + "-pix_fmt yuv420p -b:v 1M " + path);
  } else if (kind == "mkv") {
    path = temp_path("clip.mkv");
    run_ffmpeg(source + "-t 1 " + h264 + path);
  } else if (kind == "avi_mjpeg") {
    path = temp_path("mjpeg.avi");
    run_ffmpeg(source + "-t 1 -c:v mjpeg -q:v 2 " + path);
  } else if (kind == "avi_mpeg4") {
    path = temp_path("mpeg4.avi");
    run_ffmpeg(source + "-t 1 -c:v mpeg4 -q:v 2 " + path);
  } else if (kind == "gif") {
    path = temp_path("clip.gif");
    run_ffmpeg(source + "-t 1 " + path);
  } else if (kind == "zero_avi") {
    path = temp_path("zero.avi");
    run_ffmpeg(source + "-frames:v 0 -c:v mjpeg " + path);
  } else if (kind == "audio") {
    path = temp_path("audio.m4a");
    run_ffmpeg("-f lavfi -i sine=duration=0.5 " + path);
  } else {
    FAIL("unknown clip kind " << kind);
  }
  made[kind] = path;
  return path;
}

// ffmpeg's own decode of `path` as raw bytes (rgb24 or gray), optionally through a scale filter.
std::vector<uint8_t> reference_frames(const std::string& path, const std::string& pix_fmt,
                                      const std::string& filter = "") {
  static int counter = 0;
  const std::string out = temp_path("reference_" + std::to_string(counter++) + ".raw");
  run_ffmpeg("-i " + path + " " + (filter.empty() ? "" : "-vf " + filter + " ") +
             "-f rawvideo -pix_fmt " + pix_fmt + " " + out);
  return read_bytes(out);
}

// Mean |a - b| between our frame t ([C,H,W] planes) and reference frame k (interleaved).
double frame_difference(const FramesU8& frames, int64_t t, const std::vector<uint8_t>& reference,
                        int64_t k) {
  const int64_t c_count = frames.channels;
  const int64_t plane = frames.height * frames.width;
  const uint8_t* ours = frames.pixels.data() + t * c_count * plane;
  const uint8_t* theirs = reference.data() + k * c_count * plane;
  double total = 0;
  for (int64_t i = 0; i < plane; ++i) {
    for (int64_t c = 0; c < c_count; ++c)
      total += std::abs(ours[c * plane + i] - theirs[i * c_count + c]);
  }
  return total / static_cast<double>(plane * c_count);
}

// Runs f() on another thread; a call that does not return within the bound ends the test
// program (a hung decoder cannot be cancelled).
template <class F>
auto bounded(const std::string& what, F f, double seconds = 60) {
  auto future = std::async(std::launch::async, f);
  if (future.wait_for(std::chrono::duration<double>(seconds)) == std::future_status::timeout) {
    std::fprintf(stderr, "FATAL: %s did not finish within %g s (decoder hang)\n", what.c_str(),
                 seconds);
    std::fflush(stderr);
    std::_Exit(3);
  }
  return future.get();
}

// Decodes what it can of a damaged file (from disk or memory). Returns true when it threw an
// stgnn::Error naming the file, false when the decode succeeded; a successful decode must be
// well formed. Any other exception escapes and fails the test.
bool damaged_decode_throws(const std::string& path, bool from_memory) {
  return bounded(path, [&] {
    try {
      VideoReader reader;
      if (from_memory) {
        reader.open_memory(read_bytes(path), path);
      } else {
        reader.open(path);
      }
      const FramesU8 all = reader.read_all_u8();
      CHECK(all.count >= 1);
      CHECK(all.pixels.size() == static_cast<size_t>(all.count * 3 * all.height * all.width));
      const FramesU8 sampled = reader.sample_frames_u8(4, 0, reader.info().duration);
      CHECK(sampled.count == 4);
      return false;
    } catch (const Error& e) {
      if (std::getenv("STGNN_SHOW_ERRORS")) MESSAGE(std::string(e.what()));
      CHECK_MESSAGE(contains(e.what(), path), "message does not name the file: " << e.what());
      return true;
    }
  });
}

// A smooth moving pattern [T, 3, H, W] in [0, 1] that lossy codecs keep well.
Tensor smooth_clip(int64_t frames, int64_t height, int64_t width) {
  Tensor clip = Tensor::empty({frames, 3, height, width});
  float* data = clip.data();
  for (int64_t t = 0; t < frames; ++t) {
    const double cx = 0.3 * width + 2.0 * t;
    const double cy = 0.5 * height;
    for (int64_t y = 0; y < height; ++y) {
      for (int64_t x = 0; x < width; ++x) {
        const double blob = std::exp(-((x - cx) * (x - cx) + (y - cy) * (y - cy)) / 120.0);
        const double values[3] = {0.5 + 0.35 * std::sin(x / 9.0 + t / 4.0),
                                  0.15 + 0.7 * static_cast<double>(y) / height, 0.1 + 0.8 * blob};
        for (int c = 0; c < 3; ++c) {
          data[((t * 3 + c) * height + y) * width + x] = static_cast<float>(values[c]);
        }
      }
    }
  }
  return clip;
}

double psnr(const Tensor& a, const Tensor& b) {
  REQUIRE(a.shape() == b.shape());
  double mse = 0;
  for (int64_t i = 0; i < a.numel(); ++i) {
    const double d = a.data()[i] - b.data()[i];
    mse += d * d;
  }
  mse /= static_cast<double>(a.numel());
  return mse > 0 ? 10.0 * std::log10(1.0 / mse) : 200.0;
}

// Frames [T, C, H', W'] cropped to H x W (undoes encode padding).
Tensor crop(const Tensor& frames, int64_t height, int64_t width) {
  const int64_t t_count = frames.size(0), c_count = frames.size(1);
  const int64_t h_in = frames.size(2), w_in = frames.size(3);
  Tensor out = Tensor::empty({t_count, c_count, height, width});
  for (int64_t p = 0; p < t_count * c_count; ++p) {
    for (int64_t y = 0; y < height; ++y) {
      for (int64_t x = 0; x < width; ++x) {
        out.data()[(p * height + y) * width + x] = frames.data()[(p * h_in + y) * w_in + x];
      }
    }
  }
  return out;
}

}  // namespace

TEST_CASE("the ffmpeg command-line tool is available to make test clips") {
  REQUIRE_MESSAGE(ffmpeg_cli_available(),
                  "the ffmpeg command-line tool (/usr/bin/ffmpeg) is needed to make the test "
                  "clips; install it with apt-get install ffmpeg");
  CHECK(has_encoder("mpeg4"));
  CHECK(has_encoder("gif"));
  CHECK_FALSE(has_encoder("no_such_encoder"));
  MESSAGE("libx264: " << has_encoder("libx264") << ", libvpx-vp9: " << has_encoder("libvpx-vp9"));
}

TEST_CASE("probe_video reads the metadata of every container") {
  struct Expected {
    std::string kind;
    std::vector<std::string> codecs;
    FrameCountSource source;
  };
  const std::vector<Expected> cases = {
      {"mp4", {"h264", "mpeg4"}, FrameCountSource::kContainer},
      {"webm", {"vp9", "vp8"}, FrameCountSource::kDecoded},
      {"mkv", {"h264", "mpeg4"}, FrameCountSource::kDecoded},
      {"avi_mjpeg", {"mjpeg"}, FrameCountSource::kContainer},
      {"avi_mpeg4", {"mpeg4"}, FrameCountSource::kContainer},
      {"gif", {"gif"}, FrameCountSource::kContainer},
  };
  for (const Expected& expected : cases) {
    CAPTURE(expected.kind);
    const VideoInfo info = probe_video(clip(expected.kind));
    CHECK(info.path == clip(expected.kind));
    CHECK(info.width == kWidth);
    CHECK(info.height == kHeight);
    CHECK(info.fps == doctest::Approx(kFps));
    CHECK(info.duration == doctest::Approx(1.0).epsilon(0.02));
    CHECK(info.frame_count == 25);
    CHECK(info.frame_count_source == expected.source);
    CHECK(std::find(expected.codecs.begin(), expected.codecs.end(), info.codec) !=
          expected.codecs.end());
    CHECK_FALSE(info.container.empty());
  }
  // Without probe's count, a reader reports an estimate for Matroska.
  VideoReader reader(clip("mkv"));
  CHECK(reader.info().frame_count_source == FrameCountSource::kEstimated);
  CHECK(reader.info().frame_count == 25);
  CHECK(reader.count_frames() == 25);
  CHECK(reader.info().frame_count_source == FrameCountSource::kDecoded);
}

TEST_CASE("decoded RGB frames match ffmpeg's own decode for every container") {
  for (const std::string kind : {"mp4", "webm", "mkv", "avi_mjpeg", "avi_mpeg4", "gif"}) {
    CAPTURE(kind);
    const std::string path = clip(kind);
    const std::vector<uint8_t> reference = reference_frames(path, "rgb24");
    VideoReader reader(path);
    const FramesU8 frames = reader.read_all_u8();
    REQUIRE(frames.shape() == Shape{25, 3, kHeight, kWidth});
    REQUIRE(reference.size() == frames.pixels.size());
    double worst = 0;
    for (int64_t t = 0; t < frames.count; ++t) {
      worst = std::max(worst, frame_difference(frames, t, reference, t));
      CHECK(frames.times[t] == doctest::Approx(t / kFps));
      CHECK(frames.indices[t] == t);
    }
    // YUV to RGB conversions differ in chroma interpolation and rounding only.
    CHECK(worst < 2.5);
    // The frames differ from each other, so the comparison above pins each frame's position.
    CHECK(frame_difference(frames, 3, reference, 4) > 2 * worst);

    const Tensor tensor = reader.read_all();
    CHECK(tensor.shape() == Shape{25, 3, kHeight, kWidth});
    CHECK(tensor.data()[100] == doctest::Approx(frames.pixels[100] / 255.0));
  }
}

TEST_CASE("gray output and resizing match ffmpeg's gray decode and scale filter") {
  const std::string path = clip("mp4");
  VideoReader reader(path, ReaderOptions{FrameFormat{ColorMode::kGray, 0, 0, ResizeFilter::kArea}});
  const FramesU8 gray = reader.read_all_u8();
  REQUIRE(gray.shape() == Shape{25, 1, kHeight, kWidth});
  const std::vector<uint8_t> gray_reference = reference_frames(path, "gray");
  for (int64_t t = 0; t < gray.count; ++t)
    CHECK(frame_difference(gray, t, gray_reference, t) < 1.5);

  struct Case {
    ResizeFilter filter;
    const char* flags;
  };
  for (const Case& c :
       {Case{ResizeFilter::kArea, "area"}, Case{ResizeFilter::kBilinear, "bilinear"}}) {
    CAPTURE(c.flags);
    reader.set_format(FrameFormat{ColorMode::kRgb, 48, 32, c.filter});
    const FramesU8 small = reader.read_all_u8();
    REQUIRE(small.shape() == Shape{25, 3, 32, 48});
    const std::vector<uint8_t> reference =
        reference_frames(path, "rgb24", std::string("scale=48:32:flags=") + c.flags);
    double worst = 0;
    for (int64_t t = 0; t < small.count; ++t) {
      worst = std::max(worst, frame_difference(small, t, reference, t));
    }
    CHECK(worst < 4.0);
  }
  // One side given: the other follows the aspect ratio (96x64 -> 30x20).
  reader.set_format(FrameFormat{ColorMode::kRgb, 30, 0, ResizeFilter::kBilinear});
  CHECK(reader.read_frames_u8(0, 0.1).shape() == Shape{3, 3, 20, 30});
  reader.set_format(FrameFormat{ColorMode::kGray, 0, 16, ResizeFilter::kArea});
  CHECK(reader.read_frames(0, 0.1).shape() == Shape{3, 1, 16, 24});
  CHECK_THROWS_AS(reader.set_format(FrameFormat{ColorMode::kRgb, -1, 0, ResizeFilter::kArea}),
                  ValueError);
}

TEST_CASE("read_frames decodes a time range, seeking back and forth") {
  for (const std::string kind :
       {"long_mp4", "long_webm", "long_ts", "long_h264", "long_avi", "long_gif"}) {
    const std::string path = clip(kind);
    const std::vector<uint8_t> reference = reference_frames(path, "rgb24");
    REQUIRE(reference.size() == static_cast<size_t>(50 * 3 * kHeight * kWidth));
    for (const bool from_memory : {false, true}) {
      CAPTURE(kind);
      CAPTURE(from_memory);
      VideoReader reader;
      if (from_memory) {
        reader.open_memory(read_bytes(path), kind + " in memory");
        CHECK(reader.info().path == kind + " in memory");
      } else {
        reader.open(path);
      }
      CHECK(reader.info().duration == doctest::Approx(2.0));
      // Ranges in an order that needs seeks forward, backward and to the start.
      const std::vector<std::pair<double, double>> ranges = {{1.2, 1.6},  {0.5, 0.62},  {0.0, 0.2},
                                                             {1.96, 2.0}, {0.33, 1.01}, {0.0, 2.0}};
      for (const auto& range : ranges) {
        const double start = range.first, end = range.second;  // not bindings: captured below
        CAPTURE(start);
        CAPTURE(end);
        const FramesU8 frames =
            bounded("read_frames", [&] { return reader.read_frames_u8(start, end); });
        const auto first = static_cast<int64_t>(std::ceil(start * kFps - 1e-6));
        const auto last = static_cast<int64_t>(std::ceil(end * kFps - 1e-6)) - 1;
        REQUIRE(frames.count == last - first + 1);
        for (int64_t t = 0; t < frames.count; ++t) {
          CHECK(frames.indices[t] == first + t);
          CHECK(frames.times[t] == doctest::Approx((first + t) / kFps));
          CHECK(frame_difference(frames, t, reference, first + t) < 2.5);
        }
      }
    }
  }
}

TEST_CASE("sampling takes the frame nearest to each requested time") {
  const std::string path = clip("long_mp4");
  const std::vector<uint8_t> reference = reference_frames(path, "rgb24");
  VideoReader reader(path);

  auto check_content = [&](const FramesU8& frames) {
    for (int64_t t = 0; t < frames.count; ++t) {
      CHECK(frame_difference(frames, t, reference, frames.indices[t]) < 2.5);
    }
  };

  // Centres of 5 equal parts of [0, 1): 0.1, 0.3, ... each halfway between two frames; ties
  // go to the earlier frame.
  const std::vector<double> times = uniform_sample_times(5, 0, 1);
  REQUIRE(times.size() == 5);
  CHECK(times[0] == doctest::Approx(0.1));
  CHECK(times[4] == doctest::Approx(0.9));
  FramesU8 sampled = reader.sample_frames_u8(5, 0, 1);
  CHECK(sampled.indices == std::vector<int64_t>{2, 7, 12, 17, 22});
  check_content(sampled);

  // [0.5, 1.5) holds frames 13..37; centres 0.6, 0.8, ... 1.4 -> frames 15, 20, 25, 30, 35.
  sampled = reader.sample_frames_u8(5, 0.5, 1.5);
  CHECK(sampled.indices == std::vector<int64_t>{15, 20, 25, 30, 35});
  check_content(sampled);

  // Nearest, not floor: 4 parts of [0.3, 0.7): centres 0.35, 0.45, 0.55, 0.65 -> 0.36 (9),
  // 0.44 (11), 0.56 (14), 0.64 (16).
  sampled = reader.sample_frames_u8(4, 0.3, 0.7);
  CHECK(sampled.indices == std::vector<int64_t>{9, 11, 14, 16});
  check_content(sampled);

  // More samples than frames in the range: frames repeat, identical bytes.
  // [1.0, 1.1) holds frames 25, 26, 27 at 1.00, 1.04, 1.08; centres 1.008, 1.025, 1.042,
  // 1.058, 1.075, 1.092.
  sampled = reader.sample_frames_u8(6, 1.0, 1.1);
  CHECK(sampled.indices == std::vector<int64_t>{25, 26, 26, 26, 27, 27});
  const int64_t frame_bytes = 3 * kHeight * kWidth;
  CHECK(std::equal(sampled.pixels.begin() + frame_bytes, sampled.pixels.begin() + 2 * frame_bytes,
                   sampled.pixels.begin() + 2 * frame_bytes));
  check_content(sampled);

  // At 5 fps from 0.2 s: 0.2, 0.4, ... 1.8 -> every fifth frame from 5.
  sampled = reader.sample_at_fps_u8(5, 0.2, 2.0);
  CHECK(sampled.indices == std::vector<int64_t>{5, 10, 15, 20, 25, 30, 35, 40, 45});
  check_content(sampled);
  CHECK(fps_sample_times(5, 0.2, 2.0).size() == 9);

  // Float tensors and gray frames at a size.
  reader.set_format(FrameFormat{ColorMode::kGray, 32, 24, ResizeFilter::kArea});
  const Tensor tensor = reader.sample_frames(8, 0, 2);
  CHECK(tensor.shape() == Shape{8, 1, 24, 32});
  for (float v : tensor.to_vector())
    REQUIRE((v >= 0.0f && v <= 1.0f));
  CHECK(reader.sample_at_fps(2, 0, 2).shape() == Shape{4, 1, 24, 32});
}

TEST_CASE("bad ranges and arguments throw ValueError naming the file") {
  const std::string path = clip("mp4");
  VideoReader reader(path);
  auto throws_value_error = [&](auto f) {
    try {
      f();
    } catch (const ValueError& e) {
      CHECK_MESSAGE(contains(e.what(), path), e.what());
      return true;
    }
    return false;
  };
  CHECK(throws_value_error([&] { reader.read_frames_u8(2.0, 3.0); }));   // after the end
  CHECK(throws_value_error([&] { reader.read_frames_u8(0.5, 5.0); }));   // ends far beyond
  CHECK(throws_value_error([&] { reader.read_frames_u8(-0.5, 0.5); }));  // negative
  CHECK(throws_value_error([&] { reader.read_frames_u8(0.5, 0.5); }));   // empty
  CHECK(throws_value_error([&] { reader.read_frames_u8(0, NAN); }));
  CHECK(throws_value_error([&] { reader.read_frames_u8(0.41, 0.43); }));  // between two frames
  CHECK(throws_value_error([&] { reader.sample_frames_u8(4, 1.5, 2.5); }));
  CHECK_THROWS_AS(reader.sample_frames_u8(0, 0, 1), ValueError);
  CHECK_THROWS_AS(reader.sample_at_fps_u8(0, 0, 1), ValueError);
  CHECK_THROWS_AS(reader.sample_at_fps_u8(-3, 0, 1), ValueError);
  CHECK_THROWS_AS(uniform_sample_times(int64_t{1} << 40, 0, 1), ValueError);
  // The end may round up to the next frame time.
  CHECK(reader.read_frames_u8(0.9, 1.04).count == 2);  // 0.92 and 0.96
  // The reader still works after errors.
  CHECK(reader.read_frames_u8(0, 1).count == 25);

  VideoReader closed;
  CHECK_FALSE(closed.is_open());
  CHECK_THROWS_AS(closed.read_all(), ValueError);
  CHECK_THROWS_AS(closed.info(), ValueError);
  reader.close();
  CHECK_THROWS_AS(reader.sample_frames(2, 0, 1), ValueError);

  // Moving a reader moves the open video.
  VideoReader moved(path);
  VideoReader target = std::move(moved);
  CHECK(target.read_frames_u8(0, 0.2).count == 5);
}

TEST_CASE("missing, non-video and frameless files throw clear errors") {
  const std::string missing = temp_path("no_such_file.mp4");
  try {
    VideoReader reader(missing);
    FAIL("opened a missing file");
  } catch (const IoError& e) {
    CHECK(contains(e.what(), missing));
    CHECK(contains(e.what(), "No such file"));
  }
  CHECK_THROWS_AS(probe_video(missing), IoError);

  const std::string text = temp_path("notes.mp4");
  write_bytes(text, std::vector<uint8_t>(5000, 'a'));
  CHECK_THROWS_AS(probe_video(text), FormatError);
  const std::string empty = temp_path("empty.mp4");
  write_bytes(empty, {});
  CHECK_THROWS_AS(probe_video(empty), FormatError);
  VideoReader reader;
  CHECK_THROWS_AS(reader.open_memory({}, "nothing"), FormatError);
  CHECK_FALSE(reader.is_open());

  try {
    probe_video(clip("audio"));
    FAIL("audio-only file accepted");
  } catch (const FormatError& e) {
    CHECK(contains(e.what(), "no video stream"));
    CHECK(contains(e.what(), clip("audio")));
  }
  try {
    probe_video(clip("zero_avi"));
    FAIL("frameless file accepted");
  } catch (const FormatError& e) {
    CHECK(contains(e.what(), "no decodable video frame"));
    CHECK(contains(e.what(), clip("zero_avi")));
  }
}

TEST_CASE("independent readers decode concurrently, also with decoder threads") {
  const std::string path = clip("long_mp4");
  VideoReader serial(path);
  const FramesU8 expected_a = serial.sample_frames_u8(7, 0.1, 1.9);
  const FramesU8 expected_b = serial.read_frames_u8(0.4, 1.4);
  ReaderOptions threaded;
  threaded.threads = 2;
  auto a = std::async(std::launch::async, [&] {
    VideoReader reader(path, threaded);
    return reader.sample_frames_u8(7, 0.1, 1.9);
  });
  auto b = std::async(std::launch::async, [&] {
    VideoReader reader;
    reader.open_memory(read_bytes(path), "copy");
    return reader.read_frames_u8(0.4, 1.4);
  });
  const FramesU8 got_a = bounded("threaded sample", [&] { return a.get(); });
  const FramesU8 got_b = bounded("memory read", [&] { return b.get(); });
  CHECK(got_a.indices == expected_a.indices);
  CHECK(got_a.pixels == expected_a.pixels);
  CHECK(got_b.indices == expected_b.indices);
  CHECK(got_b.pixels == expected_b.pixels);
}

namespace {

// What FFmpeg writes to stderr while f() runs.
template <class F>
std::string captured_stderr(F f) {
  const std::string path = temp_path("stderr.txt");
  std::fflush(stderr);
  const int saved = ::dup(2);
  FILE* file = std::fopen(path.c_str(), "w");
  REQUIRE(file);
  ::dup2(::fileno(file), 2);
  f();
  std::fflush(stderr);
  ::dup2(saved, 2);
  ::close(saved);
  std::fclose(file);
  const std::vector<uint8_t> bytes = read_bytes(path);
  return std::string(bytes.begin(), bytes.end());
}

}  // namespace

TEST_CASE("FFmpeg's log stays off stderr by default and reaches it on request") {
  const std::vector<uint8_t> bytes = read_bytes(clip("mp4"));
  const std::string path = temp_path("log_cut.mp4");
  write_bytes(path, std::vector<uint8_t>(bytes.begin(), bytes.begin() + bytes.size() / 2));
  auto open_cut = [&] { CHECK_THROWS_AS(probe_video(path), FormatError); };
  CHECK(captured_stderr(open_cut).empty());
  set_ffmpeg_log_level(FfmpegLogLevel::kError);
  const std::string logged = captured_stderr(open_cut);
  set_ffmpeg_log_level(FfmpegLogLevel::kQuiet);
  CHECK_MESSAGE(contains(logged, "moov atom not found"), logged);
  CHECK(captured_stderr(open_cut).empty());
}

TEST_CASE("paths name local files only; memory buffers may not refer to other files") {
  // A colon does not select a protocol.
  const std::string colon = temp_path("http:clip.mp4");
  fs::copy_file(clip("mp4"), colon, fs::copy_options::overwrite_existing);
  CHECK(probe_video(colon).frame_count == 25);
  // A playlist on disk may name a local file; the same playlist in memory may not.
  const std::string playlist =
      "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2,\n" + clip("long_ts") + "\n#EXT-X-ENDLIST\n";
  const std::string playlist_path = temp_path("list.m3u8");
  write_bytes(playlist_path, std::vector<uint8_t>(playlist.begin(), playlist.end()));
  CHECK(probe_video(playlist_path).frame_count == 50);
  VideoReader reader;
  CHECK_THROWS_AS(
      reader.open_memory(std::vector<uint8_t>(playlist.begin(), playlist.end()), "playlist"),
      FormatError);
}

TEST_CASE("truncated and corrupt files end in exceptions, never in crashes or hangs") {
  set_ffmpeg_log_level(FfmpegLogLevel::kQuiet);
  // An ordinary mp4 keeps its index (moov) at the end: any cut loses it.
  {
    const std::vector<uint8_t> bytes = read_bytes(clip("mp4"));
    const size_t n = bytes.size();
    // (The last few dozen bytes hold only metadata; cuts there may decode, see below.)
    for (size_t cut : {size_t{0}, size_t{7}, size_t{40}, n / 4, n / 2, 3 * n / 4}) {
      CAPTURE(cut);
      const std::string path = temp_path("cut_" + std::to_string(cut) + ".mp4");
      write_bytes(path, std::vector<uint8_t>(bytes.begin(), bytes.begin() + cut));
      CHECK(damaged_decode_throws(path, false));
      CHECK(damaged_decode_throws(path, true));
    }
    // FFmpeg's own explanation reaches the message.
    const std::string path = temp_path("cut_" + std::to_string(n / 2) + ".mp4");
    try {
      probe_video(path);
      FAIL("truncated file accepted");
    } catch (const FormatError& e) {
      CHECK_MESSAGE(contains(e.what(), "moov atom not found"), e.what());
    }
  }
  // With the index first, a cut loses frames that the index still lists.
  {
    const std::vector<uint8_t> bytes = read_bytes(clip("faststart_mp4"));
    const size_t n = bytes.size();
    for (size_t cut : {n / 2, 2 * n / 3, n - 100}) {
      CAPTURE(cut);
      const std::string path = temp_path("cut_faststart_" + std::to_string(cut) + ".mp4");
      write_bytes(path, std::vector<uint8_t>(bytes.begin(), bytes.begin() + cut));
      CHECK(damaged_decode_throws(path, false));
      CHECK(damaged_decode_throws(path, true));
      // Tolerant reading returns the frames before the cut, if the cut spared any.
      ReaderOptions tolerant;
      tolerant.tolerate_corruption = true;
      const int64_t decoded = bounded("tolerant read", [&]() -> int64_t {
        try {
          VideoReader reader(path, tolerant);
          return reader.read_all_u8().count;
        } catch (const FormatError& e) {
          CHECK(contains(e.what(), "no decodable video frame"));
          return 0;
        }
      });
      CHECK(decoded < 25);
      // 24 later frames take more than 100 bytes, so this cut spares the first ones.
      if (cut == n - 100) CHECK(decoded >= 1);
    }
  }
  // Cuts, flipped bytes and garbage in every container: an exception or a well-formed decode.
  int threw = 0;
  int total = 0;
  for (const std::string kind :
       {"mp4", "faststart_mp4", "webm", "mkv", "avi_mjpeg", "avi_mpeg4", "gif"}) {
    const std::vector<uint8_t> bytes = read_bytes(clip(kind));
    const size_t n = bytes.size();
    std::vector<std::vector<uint8_t>> variants;
    for (size_t cut : {n / 3, n / 2, n - 10})
      variants.emplace_back(bytes.begin(), bytes.begin() + cut);
    for (size_t at : {size_t{20}, n / 3, n / 2, n - 60}) {
      std::vector<uint8_t> flipped = bytes;
      for (size_t i = at; i < std::min(n, at + 48); ++i)
        flipped[i] ^= 0xA5;
      variants.push_back(flipped);
    }
    std::vector<uint8_t> garbage = bytes;
    uint32_t state = 12345;
    for (size_t i = n / 4; i < n; ++i) {
      state = state * 1664525u + 1013904223u;
      garbage[i] = static_cast<uint8_t>(state >> 24);
    }
    variants.push_back(garbage);
    for (size_t v = 0; v < variants.size(); ++v) {
      const std::string path = temp_path("damaged_" + kind + "_" + std::to_string(v) + "." +
                                         fs::path(clip(kind)).extension().string().substr(1));
      write_bytes(path, variants[v]);
      CAPTURE(path);
      threw += damaged_decode_throws(path, v % 2 == 0) ? 1 : 0;
      ++total;
    }
  }
  MESSAGE(threw << " of " << total << " damaged files threw; the others decoded cleanly");
  CHECK(threw > total / 2);
}

TEST_CASE("encode_video round trip: H.264 (or MPEG-4) keeps PSNR above 30 dB") {
  const Tensor original = smooth_clip(12, 64, 96);
  const std::string path = temp_path("roundtrip.mp4");
  EncodeOptions options;
  options.crf = 12;
  options.qscale = 2;
  const std::string encoder = encode_video(path, original, 25, options);
  CHECK(encoder == (has_encoder("libx264") ? "libx264" : "mpeg4"));
  const VideoInfo info = probe_video(path);
  CHECK(info.codec == (has_encoder("libx264") ? "h264" : "mpeg4"));
  CHECK(info.frame_count == 12);
  CHECK(info.fps == doctest::Approx(25));
  CHECK(info.width == 96);
  CHECK(info.height == 64);
  VideoReader reader(path);
  const Tensor decoded = reader.read_all();
  REQUIRE(decoded.shape() == original.shape());
  const double quality = psnr(original, decoded);
  MESSAGE(encoder << " crf 12 PSNR: " << quality << " dB");
  CHECK(quality > 30.0);

  // MPEG-4 Part 2 in AVI, forced.
  EncodeOptions mpeg4;
  mpeg4.codec = "mpeg4";
  mpeg4.qscale = 2;
  const std::string avi = temp_path("roundtrip.avi");
  CHECK(encode_video(avi, original, 10, mpeg4) == "mpeg4");
  VideoReader avi_reader(avi);
  CHECK(avi_reader.info().codec == "mpeg4");
  CHECK(avi_reader.info().fps == doctest::Approx(10));
  const double mpeg4_quality = psnr(original, avi_reader.read_all());
  MESSAGE("mpeg4 qscale 2 PSNR: " << mpeg4_quality << " dB");
  CHECK(mpeg4_quality > 30.0);

  // Bytes in, gray, odd size: padded to even by repeating the last row and column.
  FramesU8 gray = frames_from_tensor(crop(smooth_clip(5, 33, 47), 33, 47));
  {
    FramesU8 one_channel;
    one_channel.count = 5;
    one_channel.channels = 1;
    one_channel.height = 33;
    one_channel.width = 47;
    one_channel.pixels.assign(gray.pixels.begin(), gray.pixels.end());
    // Keep the first channel of each frame.
    for (int64_t t = 0; t < 5; ++t) {
      std::copy_n(gray.pixels.begin() + t * 3 * 33 * 47, 33 * 47,
                  one_channel.pixels.begin() + t * 33 * 47);
    }
    one_channel.pixels.resize(5 * 33 * 47);
    gray = one_channel;
  }
  const std::string odd = temp_path("odd.mkv");
  encode_video(odd, gray, 12.5, options);
  VideoReader odd_reader(odd,
                         ReaderOptions{FrameFormat{ColorMode::kGray, 0, 0, ResizeFilter::kArea}});
  CHECK(odd_reader.info().width == 48);
  CHECK(odd_reader.info().height == 34);
  CHECK(odd_reader.info().fps == doctest::Approx(12.5));
  const Tensor odd_decoded = crop(odd_reader.read_all(), 33, 47);
  CHECK(psnr(gray.to_tensor(), odd_decoded) > 30.0);
  // The padding repeats the last column.
  const Tensor padded = odd_reader.read_frames(0, 0.08);
  CHECK(padded.data()[47] == doctest::Approx(padded.data()[46]).epsilon(0.05));

  EncodeOptions strict = options;
  strict.pad_to_even = false;
  CHECK_THROWS_AS(encode_video(temp_path("strict.mp4"), gray, 25, strict), ValueError);
  CHECK_FALSE(fs::exists(temp_path("strict.mp4")));
}

TEST_CASE("encode_video rejects bad arguments and leaves no partial file") {
  const Tensor clip4 = smooth_clip(2, 16, 16);
  CHECK_THROWS_AS(encode_video(temp_path("a.mp4"), clip4, 0), ValueError);
  CHECK_THROWS_AS(encode_video(temp_path("a.mp4"), clip4, NAN), ValueError);
  CHECK_THROWS_AS(encode_video(temp_path("a.mp4"), Tensor::zeros({2, 2, 16, 16}), 25), ShapeError);
  CHECK_THROWS_AS(encode_video(temp_path("a.mp4"), Tensor::zeros({16, 16}), 25), ShapeError);
  CHECK_THROWS_AS(encode_video(temp_path("a.mp4"), Tensor::zeros({0, 3, 16, 16}), 25), ShapeError);
  EncodeOptions bad;
  bad.codec = "no_such_codec";
  CHECK_THROWS_AS(encode_video(temp_path("a.mp4"), clip4, 25, bad), ValueError);
  bad = EncodeOptions{};
  bad.codec = "mpeg4";
  bad.qscale = 0;
  CHECK_THROWS_AS(encode_video(temp_path("a.mp4"), clip4, 25, bad), ValueError);
  if (has_encoder("libx264")) {
    bad = EncodeOptions{};
    bad.crf = 60;
    CHECK_THROWS_AS(encode_video(temp_path("a.mp4"), clip4, 25, bad), ValueError);
    bad.crf = 20;
    bad.preset = "no_such_preset";
    CHECK_THROWS_AS(encode_video(temp_path("a.mp4"), clip4, 25, bad), ValueError);
  }
  CHECK_THROWS_AS(encode_video(temp_path("a.unknown_extension"), clip4, 25), ValueError);
  CHECK_FALSE(fs::exists(temp_path("a.mp4")));
  try {
    encode_video(temp_path("no_dir/a.mp4"), clip4, 25);
    FAIL("wrote into a missing directory");
  } catch (const IoError& e) {
    CHECK(contains(e.what(), "no_dir/a.mp4"));
  }
  // A write error after the file exists (a full disk): IoError, and the device stays.
  const std::string full = temp_path("full.mp4");
  fs::create_symlink("/dev/full", full);
  CHECK_THROWS_AS(encode_video(full, smooth_clip(30, 64, 64), 25), IoError);
  CHECK(fs::exists("/dev/full"));
  // A gif cannot hold H.264.
  EncodeOptions h264;
  h264.codec = has_encoder("libx264") ? "libx264" : "mpeg4";
  CHECK_THROWS_AS(encode_video(temp_path("a.gif"), clip4, 25, h264), ValueError);
}

TEST_CASE("encode_gif round trip: exact for few colours and gray, close otherwise, loops forever") {
  // Four flat colours, moving squares: at most 256 colours, so the palette is exact.
  FramesU8 flat;
  flat.count = 6;
  flat.channels = 3;
  flat.height = 20;
  flat.width = 30;
  flat.pixels.assign(6 * 3 * 20 * 30, 0);
  const uint8_t colors[4][3] = {{10, 20, 30}, {250, 0, 0}, {0, 200, 100}, {255, 255, 255}};
  for (int64_t t = 0; t < 6; ++t) {
    for (int64_t y = 0; y < 20; ++y) {
      for (int64_t x = 0; x < 30; ++x) {
        const int k = (x >= 3 * t && x < 3 * t + 8) ? 1 + static_cast<int>((y / 7) % 3) : 0;
        for (int c = 0; c < 3; ++c)
          flat.pixels[((t * 3 + c) * 20 + y) * 30 + x] = colors[k][c];
      }
    }
  }
  const std::string path = temp_path("flat.gif");
  encode_gif(path, flat, 25);
  VideoReader reader(path);
  CHECK(reader.info().codec == "gif");
  CHECK(reader.info().fps == doctest::Approx(25));
  CHECK(reader.info().frame_count == 6);
  const FramesU8 decoded = reader.read_all_u8();
  REQUIRE(decoded.shape() == flat.shape());
  CHECK(decoded.pixels == flat.pixels);

  // Loops forever: the NETSCAPE2.0 extension with a loop count of 0.
  const std::vector<uint8_t> bytes = read_bytes(path);
  const std::string netscape = "NETSCAPE2.0";
  const auto found = std::search(bytes.begin(), bytes.end(), netscape.begin(), netscape.end());
  REQUIRE(found != bytes.end());
  const auto at = static_cast<size_t>(found - bytes.begin()) + netscape.size();
  REQUIRE(at + 4 <= bytes.size());
  CHECK(bytes[at] == 3);
  CHECK(bytes[at + 1] == 1);
  CHECK(bytes[at + 2] == 0);
  CHECK(bytes[at + 3] == 0);

  // Gray: 256 levels, exact.
  FramesU8 gray;
  gray.count = 3;
  gray.channels = 1;
  gray.height = 16;
  gray.width = 16;
  for (int i = 0; i < 3 * 256; ++i)
    gray.pixels.push_back(static_cast<uint8_t>((i * 7) % 256));
  encode_gif(temp_path("gray.gif"), gray, 10);
  VideoReader gray_reader(temp_path("gray.gif"),
                          ReaderOptions{FrameFormat{ColorMode::kGray, 0, 0, ResizeFilter::kArea}});
  CHECK(gray_reader.info().fps == doctest::Approx(10));
  const FramesU8 gray_decoded = gray_reader.read_all_u8();
  REQUIRE(gray_decoded.shape() == gray.shape());
  CHECK(gray_decoded.pixels == gray.pixels);

  // Thousands of colours: median cut, small error.
  const Tensor smooth = smooth_clip(4, 40, 60);
  encode_gif(temp_path("smooth.gif"), smooth, 20);
  VideoReader smooth_reader(temp_path("smooth.gif"));
  const Tensor smooth_decoded = smooth_reader.read_all();
  REQUIRE(smooth_decoded.shape() == smooth.shape());
  double total = 0;
  for (int64_t i = 0; i < smooth.numel(); ++i)
    total += std::abs(smooth.data()[i] - smooth_decoded.data()[i]);
  const double mean_error = total / static_cast<double>(smooth.numel()) * 255.0;
  MESSAGE("GIF median-cut mean abs error: " << mean_error << " / 255");
  // 256 colours spread over this clip's colour volume leave about 4-5 levels per channel.
  CHECK(mean_error < 6.0);

  CHECK_THROWS_AS(encode_gif(temp_path("fast.gif"), flat, 200), ValueError);
  CHECK_THROWS_AS(encode_gif(temp_path("bad.gif"), Tensor::zeros({1, 4, 8, 8}), 10), ShapeError);
  CHECK_THROWS_AS(encode_gif(temp_path("no_dir/x.gif"), flat, 10), IoError);
}

TEST_CASE("PNG and JPEG round trips; image errors name the file") {
  Tensor image = Tensor::empty({3, 20, 30});
  for (int64_t i = 0; i < image.numel(); ++i)
    image.data()[i] = static_cast<float>((i * 37) % 256) / 255.0f;
  const std::string png = temp_path("image.png");
  write_png(png, image);
  const Tensor back = read_image(png, 3);
  REQUIRE(back.shape() == image.shape());
  for (int64_t i = 0; i < image.numel(); ++i)
    REQUIRE(back.data()[i] == image.data()[i]);

  const ImageU8 gray = read_image_u8(png, 1);
  CHECK(gray.channels == 1);
  CHECK(gray.pixels.size() == 600);
  const ImageU8 rgba = read_image_u8(png, 4);
  CHECK(rgba.pixels[3] == 255);

  // JPEG of a smooth picture at quality 95 stays close.
  const Tensor smooth = smooth_clip(1, 48, 64).reshape({3, 48, 64});
  const std::string jpeg = temp_path("image.jpg");
  write_jpeg(jpeg, smooth, 95);
  const Tensor jpeg_back = read_image(jpeg, 3);
  REQUIRE(jpeg_back.shape() == smooth.shape());
  double total = 0;
  for (int64_t i = 0; i < smooth.numel(); ++i)
    total += std::abs(smooth.data()[i] - jpeg_back.data()[i]);
  CHECK(total / static_cast<double>(smooth.numel()) < 0.02);

  // Bytes in, gray; [H, W] tensors are gray.
  ImageU8 small{4, 2, 1, {0, 50, 100, 150, 200, 250, 255, 1}};
  write_png(temp_path("small.png"), small);
  CHECK(read_image_u8(temp_path("small.png"), 1).pixels == small.pixels);
  write_png(temp_path("hw.png"), Tensor::full({5, 7}, 0.5f));
  CHECK(read_image(temp_path("hw.png"), 1).shape() == Shape{1, 5, 7});

  CHECK_THROWS_AS(read_image(temp_path("missing.png")), IoError);
  write_bytes(temp_path("junk.png"), std::vector<uint8_t>(100, 7));
  try {
    read_image(temp_path("junk.png"));
    FAIL("junk accepted");
  } catch (const FormatError& e) {
    CHECK(contains(e.what(), "junk.png"));
  }
  std::vector<uint8_t> cut = read_bytes(png);
  cut.resize(cut.size() / 2);
  CHECK_THROWS_AS(decode_image_u8(cut.data(), cut.size(), "half.png", 3), FormatError);
  CHECK_THROWS_AS(decode_image_u8(nullptr, 0, "none", 3), FormatError);
  CHECK_THROWS_AS(read_image(png, 5), ValueError);
  CHECK_THROWS_AS(write_png(temp_path("no_dir/x.png"), image), IoError);
  CHECK_THROWS_AS(write_jpeg(temp_path("q.jpg"), image, 0), ValueError);
  CHECK_THROWS_AS(write_png(temp_path("x.png"), Tensor::zeros({5, 4, 4})), ShapeError);
  CHECK_THROWS_AS(write_png(temp_path("x.png"), ImageU8{4, 4, 3, std::vector<uint8_t>(10)}),
                  ShapeError);
}

TEST_CASE("canvas drawing: rectangles, lines, blits and text land on the right pixels") {
  const Color black{0, 0, 0};
  const Color red{255, 0, 0};
  const Color green{0, 255, 0};
  const Color white{255, 255, 255};
  auto same = [](Color a, Color b) { return a.r == b.r && a.g == b.g && a.b == b.b; };

  Canvas canvas(40, 60, black);
  CHECK(canvas.rgb.size() == 40 * 60 * 3);

  canvas.fill_rect(2, 3, 4, 5, red);  // columns 2..5, rows 3..7
  CHECK(same(canvas.pixel(2, 3), red));
  CHECK(same(canvas.pixel(5, 7), red));
  CHECK(same(canvas.pixel(6, 7), black));
  CHECK(same(canvas.pixel(5, 8), black));
  CHECK(same(canvas.pixel(1, 3), black));

  // Outline 2 pixels thick inside the 20x12 rectangle at (30, 10).
  canvas.draw_rect(30, 10, 20, 12, green, 2);
  CHECK(same(canvas.pixel(30, 10), green));
  CHECK(same(canvas.pixel(31, 15), green));
  CHECK(same(canvas.pixel(32, 15), black));
  CHECK(same(canvas.pixel(49, 21), green));
  CHECK(same(canvas.pixel(48, 20), green));
  CHECK(same(canvas.pixel(47, 19), black));
  CHECK(same(canvas.pixel(50, 21), black));

  // Clipping: shapes partly or wholly off the canvas.
  canvas.fill_rect(-5, -5, 8, 8, white);
  CHECK(same(canvas.pixel(0, 0), white));
  CHECK(same(canvas.pixel(2, 2), white));
  CHECK(same(canvas.pixel(3, 3), red));
  canvas.fill_rect(2147483600, 5, 1000, 1000, white);
  canvas.draw_rect(-100, -100, 50, 50, white, 3);
  canvas.draw_line(-1e9f, -1e9f, 1e9f, -1e9f, white, 3);
  CHECK_THROWS_AS(canvas.draw_line(0, 0, NAN, 1, white), ValueError);
  CHECK_THROWS_AS(canvas.pixel(60, 0), ValueError);

  // A horizontal line 3 pixels thick at y = 30 from x = 10 to 20: rows 29..31.
  Canvas lines(40, 60, black);
  lines.draw_line(10, 30, 20, 30, white, 3);
  CHECK(same(lines.pixel(15, 29), white));
  CHECK(same(lines.pixel(15, 31), white));
  CHECK(same(lines.pixel(15, 32), black));
  CHECK(same(lines.pixel(15, 28), black));
  CHECK(same(lines.pixel(10, 30), white));
  CHECK(same(lines.pixel(22, 30), black));
  // Diagonal: every pixel on y = x is set.
  lines.draw_line(0, 0, 9, 9, red, 1);
  for (int i = 0; i <= 9; ++i)
    CHECK(same(lines.pixel(i, i), red));
  CHECK(same(lines.pixel(0, 5), black));
  // Antialiased: the centre row is full, the rows at the edge partly covered.
  // Antialiased: a line 2 pixels thick centred on y = 10.25 covers rows 9.25 .. 11.25, so row
  // 9 a quarter, row 10 fully, row 11 three quarters.
  Canvas smooth(20, 20, black);
  smooth.draw_line(2, 10.25f, 17, 10.25f, white, 2, true);
  CHECK(smooth.pixel(9, 8).r == 0);
  CHECK(smooth.pixel(9, 9).r == 64);
  CHECK(smooth.pixel(9, 10).r == 255);
  CHECK(smooth.pixel(9, 11).r == 191);
  CHECK(smooth.pixel(9, 12).r == 0);

  // Blit a 2x2 RGB frame at scale 3, and a gray frame.
  Canvas blit(10, 10, black);
  Tensor frame = Tensor::from_vector({3, 2, 2}, {1, 0, 0, 0.5f, 0, 1, 0, 0.5f, 0, 0, 1, 0.5f});
  blit.blit(frame, 1, 2, 3);  // covers columns 1..6, rows 2..7
  CHECK(same(blit.pixel(1, 2), red));
  CHECK(same(blit.pixel(3, 4), red));
  CHECK(same(blit.pixel(4, 2), green));
  CHECK(same(blit.pixel(1, 5), Color{0, 0, 255}));
  CHECK(same(blit.pixel(6, 7), Color{128, 128, 128}));
  CHECK(same(blit.pixel(7, 7), black));
  CHECK(same(blit.pixel(0, 2), black));
  const uint8_t gray[4] = {10, 20, 30, 40};
  blit.blit(gray, 1, 2, 2, 8, 8, 1);  // partly off the canvas
  CHECK(same(blit.pixel(8, 8), Color{10, 10, 10}));
  CHECK(same(blit.pixel(9, 9), Color{40, 40, 40}));
  CHECK_THROWS_AS(blit.blit(Tensor::zeros({2, 2, 2}), 0, 0), ShapeError);
  CHECK_THROWS_AS(blit.blit(frame, 0, 0, 0), ValueError);

  // Text: pixels only inside its box, and some inside it.
  Canvas text(30, 80, black);
  const int width = text.draw_text(5, 6, "Ab 12", white, 2);
  CHECK(width == text_width("Ab 12", 2));
  CHECK(width > 0);
  CHECK(text_height("Ab 12", 2) == 24);
  CHECK(text_height("a\nb", 1) == 24);
  int inside = 0;
  int outside = 0;
  for (int y = 0; y < 30; ++y) {
    for (int x = 0; x < 80; ++x) {
      if (!same(text.pixel(x, y), white)) continue;
      const bool in_box = x >= 5 && x < 5 + width && y >= 6 && y < 6 + text_height("Ab 12", 2);
      (in_box ? inside : outside) += 1;
    }
  }
  CHECK(inside > 40);
  CHECK(outside == 0);
  // Non-ASCII bytes are drawn as '?', never read out of the glyph table.
  CHECK(text.draw_text(0, 0, "\xff\x01\x7f", white) == text_width("???"));
  CHECK_THROWS_AS(text.draw_text(0, 0, "x", white, 0), ValueError);

  // A canvas saves as PNG.
  write_png(temp_path("canvas.png"), canvas);
  const ImageU8 saved = read_image_u8(temp_path("canvas.png"), 3);
  CHECK(saved.pixels == canvas.rgb);
  CHECK_THROWS_AS(Canvas(-1, 5), ValueError);
}
