// Video decoding and encoding through FFmpeg (libavformat, libavcodec, libswscale).
//
// Decoded clips are [T, C, H, W]: T frames, C = 1 (gray) or 3 (RGB), row-major rows of W
// pixels. They come either as bytes (FramesU8, 0..255) or as a float Tensor in [0, 1].
//
// Times are seconds from the first frame of the video stream (the stream's start_time), so
// the first frame of an ordinary file is at t = 0. A time range [start, end) holds the
// frames whose presentation time t satisfies start <= t < end.
//
// Every failure throws a typed exception from autograd/error.h that names the file (or the
// name given to a memory buffer) and, when FFmpeg reported one, FFmpeg's error text:
//   IoError     the file cannot be opened, read or written;
//   FormatError the content is not a decodable video (unknown container, no video stream,
//               unsupported codec, corrupt or truncated stream, no frames);
//   ValueError  a bad argument (time range outside the video, bad size, fps or quality).
// Decoding loops are bounded, so corrupt input ends in an exception, never in a hang.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "autograd/tensor.h"

namespace stgnn {

// How much of FFmpeg's own logging reaches stderr. The default is kQuiet: FFmpeg's error
// messages are still recorded (per thread) and appended to the text of the exception they
// explain. The first call of any function declared here installs a process-wide av_log
// callback for this.
enum class FfmpegLogLevel { kQuiet, kError, kWarning, kInfo };
void set_ffmpeg_log_level(FfmpegLogLevel level);

// True when the linked FFmpeg has an encoder of this name ("libx264", "mpeg4", "gif").
bool has_encoder(const std::string& name);

// Where VideoInfo::frame_count comes from.
enum class FrameCountSource {
  kContainer,  // stored in the file's index (mp4, avi, gif)
  kDecoded,    // counted by decoding the whole stream
  kEstimated,  // round(duration * fps); VideoReader::count_frames() replaces it by a count
};

struct VideoInfo {
  std::string path;       // file path, or the name given to a memory buffer
  std::string container;  // FFmpeg demuxer name, e.g. "mov,mp4,m4a,3gp,3g2,mj2"
  std::string codec;      // codec name, e.g. "h264", "vp9", "mjpeg", "gif"
  int width = 0;
  int height = 0;
  double fps = 0;       // average frame rate
  double duration = 0;  // seconds
  int64_t frame_count = 0;
  FrameCountSource frame_count_source = FrameCountSource::kContainer;
};

// Metadata of the first video stream of `path`. When the container does not store the number
// of frames (Matroska, WebM), counts them by decoding the whole stream. Throws FormatError for
// a file without any decodable video frame.
VideoInfo probe_video(const std::string& path);

enum class ColorMode { kGray, kRgb };          // C = 1 or C = 3
enum class ResizeFilter { kArea, kBilinear };  // swscale SWS_AREA or SWS_BILINEAR

// The frames a reader produces. width = height = 0 keeps the video's size; when exactly one
// of them is 0 it follows from the other and the video's aspect ratio.
struct FrameFormat {
  ColorMode color = ColorMode::kRgb;
  int width = 0;
  int height = 0;
  ResizeFilter filter = ResizeFilter::kArea;
};

struct ReaderOptions {
  FrameFormat format;
  int threads = 1;  // decoder threads (0: FFmpeg chooses)
  // A stream that yields this many packets (or decoder steps) in a row without a frame is
  // reported as corrupt instead of being read to its end.
  int max_packets_without_frame = 500;
  // false: a packet the demuxer or decoder rejects, or a stream that ends before the duration
  // its container states, ends decoding with FormatError.
  // true: such packets are dropped and a short stream is accepted (damaged but playable
  // files); the bound above still holds.
  bool tolerate_corruption = false;
};

// Decoded frames as bytes, [T, C, H, W]: pixels[((t * C + c) * H + y) * W + x].
struct FramesU8 {
  int64_t count = 0;
  int64_t channels = 0;
  int64_t height = 0;
  int64_t width = 0;
  std::vector<uint8_t> pixels;
  std::vector<double> times;     // [T] presentation time of each frame (s)
  std::vector<int64_t> indices;  // [T] nominal frame index, round(time * fps)

  Shape shape() const { return {count, channels, height, width}; }
  // [T, C, H, W] float, pixel / 255.
  Tensor to_tensor() const;
};

// frames: [T, C, H, W] float; values are clamped to [0, 1] and rounded to bytes. times and
// indices are left empty.
FramesU8 frames_from_tensor(const Tensor& frames);

// The times sample_frames(count, start, end) looks for: the centres of `count` equal parts
// of [start, end).
std::vector<double> uniform_sample_times(int64_t count, double start_s, double end_s);
// The times sample_at_fps(fps, start, end) looks for: start + k / fps for every k >= 0 with
// start + k / fps < end.
std::vector<double> fps_sample_times(double fps, double start_s, double end_s);

// Decodes one video stream. Not copyable; movable. One reader must not be used from two
// threads at once; separate readers are independent.
class VideoReader {
 public:
  VideoReader();
  explicit VideoReader(const std::string& path, const ReaderOptions& options = {});
  ~VideoReader();
  VideoReader(VideoReader&& other) noexcept;
  VideoReader& operator=(VideoReader&& other) noexcept;
  VideoReader(const VideoReader&) = delete;
  VideoReader& operator=(const VideoReader&) = delete;

  // Opens a file, reads its header and prepares the decoder. Any previous video is closed.
  void open(const std::string& path, const ReaderOptions& options = {});
  // Same, reading from `bytes` (kept by the reader) through a custom AVIOContext; `name`
  // stands for the file in messages and in info().path.
  void open_memory(std::vector<uint8_t> bytes, const std::string& name = "<memory>",
                   const ReaderOptions& options = {});
  void close();
  bool is_open() const;

  const VideoInfo& info() const;
  const FrameFormat& format() const;
  void set_format(const FrameFormat& format);

  // Decodes the whole stream to count its frames; updates info() (frame_count_source
  // becomes kDecoded) and returns the count.
  int64_t count_frames();

  // Every frame with start <= t < end, in order. Throws ValueError when the range is empty,
  // negative or reaches outside [0, duration] by more than one frame period, and when no
  // frame falls inside it; FormatError when the stream ends early (truncated file).
  FramesU8 read_frames_u8(double start_s, double end_s);
  FramesU8 read_all_u8();
  // `count` frames for the times uniform_sample_times(count, start, end): each time takes the
  // frame of [start, end) nearest to it (ties go to the earlier frame), so frames repeat when
  // count exceeds the frames in the range. Seeks once and decodes forward.
  FramesU8 sample_frames_u8(int64_t count, double start_s, double end_s);
  // As sample_frames_u8 for the times fps_sample_times(fps, start, end).
  FramesU8 sample_at_fps_u8(double fps, double start_s, double end_s);

  // The same as float tensors [T, C, H, W] in [0, 1].
  Tensor read_frames(double start_s, double end_s);
  Tensor read_all();
  Tensor sample_frames(int64_t count, double start_s, double end_s);
  Tensor sample_at_fps(double fps, double start_s, double end_s);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

struct EncodeOptions {
  // "auto": libx264 when this FFmpeg has it, else mpeg4. Or any FFmpeg encoder name that
  // accepts yuv420p and that the container accepts ("libx264", "mpeg4", ...).
  std::string codec = "auto";
  int crf = 18;                   // libx264 constant rate factor, 0 (lossless) .. 51
  std::string preset = "medium";  // libx264 preset
  int qscale = 3;                 // mpeg4 (and other non-x264) fixed quantiser, 1 (best) .. 31
  // yuv420p needs even sizes. true: an odd width or height grows by one pixel that repeats
  // the last column or row; false: odd sizes throw ValueError.
  bool pad_to_even = true;
};

// Writes frames [T, C, H, W] (C = 1 or 3; float in [0, 1], clamped, or bytes) as a video in
// the container that the file name's extension names (".mp4", ".mkv", ".avi", ...), yuv420p.
// Returns the name of the encoder used. On failure no partial file is left behind.
std::string encode_video(const std::string& path, const Tensor& frames, double fps,
                         const EncodeOptions& options = {});
std::string encode_video(const std::string& path, const FramesU8& frames, double fps,
                         const EncodeOptions& options = {});

// Writes frames [T, C, H, W] (C = 1 or 3) as an animated GIF that loops forever, with FFmpeg's
// gif encoder and one palette for the whole clip: the exact colours when the clip has at most
// 256 of them (so gray clips are lossless), else a median-cut palette without dithering.
// GIF delays are whole centiseconds, so fps values that do not divide 100 are approximated.
void encode_gif(const std::string& path, const Tensor& frames, double fps);
void encode_gif(const std::string& path, const FramesU8& frames, double fps);

}  // namespace stgnn
