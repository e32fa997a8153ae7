#include "video/video_io.h"

#include <algorithm>
#include <array>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <functional>
#include <limits>
#include <map>
#include <mutex>
#include <new>

extern "C" {
#include <libavcodec/avcodec.h>
#include <libavformat/avformat.h>
#include <libavutil/avutil.h>
#include <libavutil/opt.h>
#include <libavutil/pixdesc.h>
#include <libswscale/swscale.h>
}

namespace stgnn {
namespace {

constexpr int kMaxSide = 16384;                        // largest width or height accepted
constexpr int64_t kMaxOutputBytes = int64_t{1} << 33;  // largest clip a call may return
constexpr int64_t kMaxSampleCount = 10'000'000;        // largest T a sampling call may ask
constexpr double kMaxDuration = 1e7;                   // seconds; beyond is a corrupt header
constexpr double kMaxFps = 1000;
constexpr double kTimeEps = 1e-6;  // seconds; absorbs rounding of times
constexpr int kIoBufferSize = 1 << 16;

// ---- FFmpeg logging: kept per thread so that exceptions can quote it ----

thread_local std::string t_last_ffmpeg_error;

void log_callback(void* context, int level, const char* format, va_list args) {
  if (level <= AV_LOG_ERROR) {
    char line[1024];
    int print_prefix = 0;
    va_list copy;
    va_copy(copy, args);
    av_log_format_line2(context, level, format, copy, line, sizeof(line), &print_prefix);
    va_end(copy);
    std::string text(line);
    while (!text.empty() && std::isspace(static_cast<unsigned char>(text.back())))
      text.pop_back();
    if (!text.empty()) t_last_ffmpeg_error = text;
  }
  // The default callback applies av_log_get_level(), which set_ffmpeg_log_level controls.
  av_log_default_callback(context, level, format, args);
}

void ensure_ffmpeg_setup() {
  static std::once_flag once;
  std::call_once(once, [] {
    av_log_set_level(AV_LOG_QUIET);
    av_log_set_callback(log_callback);
  });
}

std::string av_error_text(int code) {
  char buffer[AV_ERROR_MAX_STRING_SIZE] = {0};
  if (av_strerror(code, buffer, sizeof(buffer)) < 0) {
    std::snprintf(buffer, sizeof(buffer), "FFmpeg error %d", code);
  }
  return buffer;
}

// FFmpeg's error text for `code`, followed by the last message FFmpeg logged, which usually
// says more ("Invalid data found when processing input (moov atom not found)").
std::string describe(int code) {
  std::string text = av_error_text(code);
  if (!t_last_ffmpeg_error.empty() && t_last_ffmpeg_error != text) {
    text += " (" + t_last_ffmpeg_error + ")";
  }
  return text;
}

bool is_io_errno(int code) {
  for (int e : {ENOENT, EACCES, EPERM, EISDIR, ENOTDIR, EIO, ENAMETOOLONG, ELOOP, EMFILE, ENFILE,
                ENOSPC, EROFS}) {
    if (code == AVERROR(e)) return true;
  }
  return false;
}

std::string seconds_str(double seconds) {
  char buffer[64];
  std::snprintf(buffer, sizeof(buffer), "%g", seconds);
  return buffer;
}

std::string video_prefix(const std::string& name) {
  return "video '" + name + "': ";
}

[[noreturn]] void throw_av(const std::string& name, const std::string& what, int code) {
  const std::string message = video_prefix(name) + what + ": " + describe(code);
  if (is_io_errno(code)) throw IoError(message);
  throw FormatError(message);
}

// ---- RAII owners of FFmpeg objects ----

struct InputDeleter {
  void operator()(AVFormatContext* context) const { avformat_close_input(&context); }
};
struct IoContextDeleter {
  void operator()(AVIOContext* context) const {
    // FFmpeg may have replaced the buffer it was given, so free the one it holds now.
    av_freep(&context->buffer);
    avio_context_free(&context);
  }
};
struct CodecContextDeleter {
  void operator()(AVCodecContext* context) const { avcodec_free_context(&context); }
};
struct FrameDeleter {
  void operator()(AVFrame* frame) const { av_frame_free(&frame); }
};
struct PacketDeleter {
  void operator()(AVPacket* packet) const { av_packet_free(&packet); }
};
struct ScalerDeleter {
  void operator()(SwsContext* context) const { sws_freeContext(context); }
};
struct OutputDeleter {
  void operator()(AVFormatContext* context) const {
    if (context->pb && !(context->oformat->flags & AVFMT_NOFILE)) avio_closep(&context->pb);
    avformat_free_context(context);
  }
};

using InputPtr = std::unique_ptr<AVFormatContext, InputDeleter>;
using IoContextPtr = std::unique_ptr<AVIOContext, IoContextDeleter>;
using CodecContextPtr = std::unique_ptr<AVCodecContext, CodecContextDeleter>;
using FramePtr = std::unique_ptr<AVFrame, FrameDeleter>;
using PacketPtr = std::unique_ptr<AVPacket, PacketDeleter>;
using ScalerPtr = std::unique_ptr<SwsContext, ScalerDeleter>;
using OutputPtr = std::unique_ptr<AVFormatContext, OutputDeleter>;

FramePtr alloc_frame() {
  FramePtr frame(av_frame_alloc());
  if (!frame) throw std::bad_alloc();
  return frame;
}

PacketPtr alloc_packet() {
  PacketPtr packet(av_packet_alloc());
  if (!packet) throw std::bad_alloc();
  return packet;
}

// Drops the packet's payload when the scope ends, whichever way it ends.
class PacketUnref {
 public:
  explicit PacketUnref(AVPacket* packet) : packet_(packet) {}
  ~PacketUnref() { av_packet_unref(packet_); }
  PacketUnref(const PacketUnref&) = delete;
  PacketUnref& operator=(const PacketUnref&) = delete;

 private:
  AVPacket* packet_;
};

// ---- reading from memory through a custom AVIOContext ----

struct MemorySource {
  const std::vector<uint8_t>* bytes = nullptr;
  int64_t position = 0;
};

int memory_read(void* opaque, uint8_t* buffer, int size) {
  auto* source = static_cast<MemorySource*>(opaque);
  const int64_t total = static_cast<int64_t>(source->bytes->size());
  if (size <= 0 || source->position >= total) return AVERROR_EOF;
  const int64_t count = std::min<int64_t>(size, total - source->position);
  std::memcpy(buffer, source->bytes->data() + source->position, static_cast<size_t>(count));
  source->position += count;
  return static_cast<int>(count);
}

int64_t memory_seek(void* opaque, int64_t offset, int whence) {
  auto* source = static_cast<MemorySource*>(opaque);
  const int64_t total = static_cast<int64_t>(source->bytes->size());
  whence &= ~AVSEEK_FORCE;
  if (whence == AVSEEK_SIZE) return total;
  int64_t base = 0;
  if (whence == SEEK_CUR) {
    base = source->position;
  } else if (whence == SEEK_END) {
    base = total;
  } else if (whence != SEEK_SET) {
    return AVERROR(EINVAL);
  }
  // Compare before adding: offsets come from the (possibly corrupt) file.
  if (offset < -base || offset > total - base) return AVERROR(EINVAL);
  source->position = base + offset;
  return source->position;
}

bool valid_rate(AVRational rate) {
  return rate.num > 0 && rate.den > 0;
}

// FFmpeg copies colour metadata from the bitstream into enum fields without a range check (a
// corrupt MPEG-2 sequence header found by the video fuzzer gave colorspace 84). Loading such a
// value through the enum type is undefined behaviour in C++, so these read the raw int.
template <typename Enum>
int raw_enum_value(const Enum& field) {
  static_assert(sizeof(Enum) == sizeof(int), "FFmpeg enums are int-sized");
  int value = 0;
  std::memcpy(&value, &field, sizeof value);
  return value;
}

// The frame's YUV matrix, unspecified when the stream's value is not one FFmpeg knows.
int frame_colorspace(const AVFrame& frame) {
  const int value = raw_enum_value(frame.colorspace);
  return value >= 0 && value < AVCOL_SPC_NB ? value : AVCOL_SPC_UNSPECIFIED;
}

bool is_full_range_format(AVPixelFormat format) {
  switch (format) {
    case AV_PIX_FMT_YUVJ420P:
    case AV_PIX_FMT_YUVJ422P:
    case AV_PIX_FMT_YUVJ444P:
    case AV_PIX_FMT_YUVJ440P:
    case AV_PIX_FMT_YUVJ411P:
      return true;
    default:
      return false;
  }
}

bool is_yuv_format(AVPixelFormat format) {
  const AVPixFmtDescriptor* descriptor = av_pix_fmt_desc_get(format);
  return descriptor && descriptor->nb_components >= 3 &&
         !(descriptor->flags & (AV_PIX_FMT_FLAG_RGB | AV_PIX_FMT_FLAG_PAL));
}

const char* pixel_format_name(int format) {
  const char* name = av_get_pix_fmt_name(static_cast<AVPixelFormat>(format));
  return name ? name : "unknown";
}

void check_sample_range(const char* what, double start_s, double end_s) {
  if (!std::isfinite(start_s) || !std::isfinite(end_s) || start_s < 0 || end_s <= start_s) {
    throw ValueError(std::string(what) + ": time range [" + seconds_str(start_s) + ", " +
                     seconds_str(end_s) + ") s must satisfy 0 <= start < end");
  }
}

}  // namespace

void set_ffmpeg_log_level(FfmpegLogLevel level) {
  ensure_ffmpeg_setup();
  switch (level) {
    case FfmpegLogLevel::kQuiet:
      av_log_set_level(AV_LOG_QUIET);
      break;
    case FfmpegLogLevel::kError:
      av_log_set_level(AV_LOG_ERROR);
      break;
    case FfmpegLogLevel::kWarning:
      av_log_set_level(AV_LOG_WARNING);
      break;
    case FfmpegLogLevel::kInfo:
      av_log_set_level(AV_LOG_INFO);
      break;
  }
}

bool has_encoder(const std::string& name) {
  ensure_ffmpeg_setup();
  return avcodec_find_encoder_by_name(name.c_str()) != nullptr;
}

Tensor FramesU8::to_tensor() const {
  const int64_t numel = count * channels * height * width;
  if (count < 0 || channels < 0 || height < 0 || width < 0 ||
      static_cast<int64_t>(pixels.size()) != numel) {
    throw ShapeError("FramesU8::to_tensor: " + shape_str(shape()) + " needs " +
                     std::to_string(numel) + " bytes, have " + std::to_string(pixels.size()));
  }
  Tensor out = Tensor::empty(shape());
  float* data = out.data();
  for (int64_t i = 0; i < numel; ++i)
    data[i] = static_cast<float>(pixels[i]) / 255.0f;
  return out;
}

FramesU8 frames_from_tensor(const Tensor& frames) {
  if (!frames.defined() || frames.dim() != 4) {
    throw ShapeError("frames_from_tensor: expected [T,C,H,W], got " +
                     (frames.defined() ? shape_str(frames.shape()) : std::string("undefined")));
  }
  FramesU8 out;
  out.count = frames.size(0);
  out.channels = frames.size(1);
  out.height = frames.size(2);
  out.width = frames.size(3);
  const int64_t numel = frames.numel();
  out.pixels.resize(static_cast<size_t>(numel));
  const float* data = frames.data();
  for (int64_t i = 0; i < numel; ++i) {
    // NaN compares false both ways and ends at 0.
    const float v = data[i] > 0.0f ? std::min(data[i], 1.0f) : 0.0f;
    out.pixels[i] = static_cast<uint8_t>(std::lround(v * 255.0f));
  }
  return out;
}

std::vector<double> uniform_sample_times(int64_t count, double start_s, double end_s) {
  check_sample_range("uniform_sample_times", start_s, end_s);
  if (count < 1 || count > kMaxSampleCount) {
    throw ValueError("uniform_sample_times: count " + std::to_string(count) + " must be in [1, " +
                     std::to_string(kMaxSampleCount) + "]");
  }
  std::vector<double> times(static_cast<size_t>(count));
  const double step = (end_s - start_s) / static_cast<double>(count);
  for (int64_t i = 0; i < count; ++i)
    times[i] = start_s + (static_cast<double>(i) + 0.5) * step;
  return times;
}

std::vector<double> fps_sample_times(double fps, double start_s, double end_s) {
  check_sample_range("fps_sample_times", start_s, end_s);
  if (!std::isfinite(fps) || fps <= 0) {
    throw ValueError("fps_sample_times: fps " + seconds_str(fps) + " must be positive");
  }
  const double count = std::ceil((end_s - start_s) * fps - 1e-9);
  if (count > static_cast<double>(kMaxSampleCount)) {
    throw ValueError("fps_sample_times: " + seconds_str(end_s - start_s) + " s at " +
                     seconds_str(fps) + " fps gives more than " + std::to_string(kMaxSampleCount) +
                     " frames");
  }
  std::vector<double> times;
  for (int64_t k = 0; k < static_cast<int64_t>(count); ++k) {
    const double t = start_s + static_cast<double>(k) / fps;
    if (t < end_s) times.push_back(t);
  }
  if (times.empty()) times.push_back(start_s);
  return times;
}

// ============================================================================================
// VideoReader
// ============================================================================================

struct VideoReader::Impl {
  std::string name;
  ReaderOptions options;
  bool from_memory = false;
  std::vector<uint8_t> bytes;
  MemorySource memory;

  // Members are destroyed in reverse order: the demuxer closes before its I/O context goes.
  IoContextPtr io;
  InputPtr input;
  CodecContextPtr decoder;
  AVStream* stream = nullptr;
  int stream_index = -1;
  double start_pts = 0;  // stream start_time in time-base units
  double time_base = 0;  // seconds per time-base unit
  PacketPtr packet = alloc_packet();
  FramePtr frame = alloc_frame();

  // Conversion to GRAY8/RGB24 at the output size; rebuilt when any key entry changes.
  ScalerPtr scaler;
  std::array<int, 9> scaler_key{};
  FramePtr converted = alloc_frame();

  VideoInfo info;
  double frame_period = 0;      // 1 / fps
  bool video_duration = false;  // info.duration is the video's own (not an audio track's)

  bool at_start = true;       // no packet read since the input was opened
  bool demuxer_done = false;  // end of file reached and the decoder told so
  bool decoder_done = false;  // decoder drained
  bool have_last_time = false;
  double last_time = 0;

  // ---- opening ----

  void open_input() {
    decoder.reset();
    input.reset();
    io.reset();
    stream = nullptr;
    stream_index = -1;
    t_last_ffmpeg_error.clear();

    AVFormatContext* context = avformat_alloc_context();
    if (!context) throw std::bad_alloc();
    if (from_memory) {
      memory.bytes = &bytes;
      memory.position = 0;
      auto* buffer = static_cast<uint8_t*>(av_malloc(kIoBufferSize));
      if (!buffer) {
        avformat_free_context(context);
        throw std::bad_alloc();
      }
      io.reset(
          avio_alloc_context(buffer, kIoBufferSize, 0, &memory, memory_read, nullptr, memory_seek));
      if (!io) {
        av_free(buffer);
        avformat_free_context(context);
        throw std::bad_alloc();
      }
      context->pb = io.get();
      context->flags |= AVFMT_FLAG_CUSTOM_IO;
    }
    // A path is always a local file ("file:" keeps names like "http:x" or "pipe:0" from
    // selecting another protocol), and files that a container refers to (HLS, concat) may only
    // be local files; a memory buffer may refer to nothing at all.
    const std::string url = from_memory ? name : "file:" + name;
    AVDictionary* open_options = nullptr;
    av_dict_set(&open_options, "protocol_whitelist", from_memory ? "none" : "file", 0);
    // On failure avformat_open_input frees the context (but not a custom I/O context).
    int result = avformat_open_input(&context, url.c_str(), nullptr, &open_options);
    av_dict_free(&open_options);
    if (result < 0) throw_av(name, "cannot open", result);
    input.reset(context);

    t_last_ffmpeg_error.clear();
    result = avformat_find_stream_info(context, nullptr);
    if (result < 0) throw_av(name, "cannot read stream information", result);

    for (unsigned i = 0; i < context->nb_streams; ++i) {
      const AVStream* candidate = context->streams[i];
      if (candidate->codecpar->codec_type == AVMEDIA_TYPE_VIDEO &&
          !(candidate->disposition & AV_DISPOSITION_ATTACHED_PIC)) {
        stream_index = static_cast<int>(i);
        break;
      }
    }
    if (stream_index < 0) {
      throw FormatError(video_prefix(name) + "no video stream (container '" +
                        context->iformat->name + "', " + std::to_string(context->nb_streams) +
                        " streams)");
    }
    for (unsigned i = 0; i < context->nb_streams; ++i) {
      if (static_cast<int>(i) != stream_index) context->streams[i]->discard = AVDISCARD_ALL;
    }
    stream = context->streams[stream_index];
    time_base = av_q2d(stream->time_base);
    if (!(time_base > 0) || !std::isfinite(time_base)) {
      throw FormatError(video_prefix(name) + "video stream has an invalid time base " +
                        std::to_string(stream->time_base.num) + "/" +
                        std::to_string(stream->time_base.den));
    }
    start_pts = stream->start_time != AV_NOPTS_VALUE ? static_cast<double>(stream->start_time) : 0;

    const AVCodecID codec_id = stream->codecpar->codec_id;
    const AVCodec* codec = avcodec_find_decoder(codec_id);
    if (!codec) {
      throw FormatError(video_prefix(name) + "unsupported codec '" + avcodec_get_name(codec_id) +
                        "' (this FFmpeg has no decoder for it)");
    }
    decoder.reset(avcodec_alloc_context3(codec));
    if (!decoder) throw std::bad_alloc();
    result = avcodec_parameters_to_context(decoder.get(), stream->codecpar);
    if (result < 0) throw_av(name, "cannot configure the decoder", result);
    decoder->pkt_timebase = stream->time_base;
    decoder->thread_count = std::max(0, options.threads);
    t_last_ffmpeg_error.clear();
    result = avcodec_open2(decoder.get(), codec, nullptr);
    if (result < 0)
      throw_av(name, std::string("cannot open the ") + codec->name + " decoder", result);

    at_start = true;
    demuxer_done = false;
    decoder_done = false;
    have_last_time = false;
  }

  // Fills `info` from the container, counting frames by decoding when the container lacks
  // the duration or the frame rate.
  void read_info() {
    const AVCodecParameters* parameters = stream->codecpar;
    info = VideoInfo{};
    info.path = name;
    info.container = input->iformat->name;
    info.codec = avcodec_get_name(parameters->codec_id);
    info.width = parameters->width;
    info.height = parameters->height;
    if (info.width <= 0 || info.height <= 0 || info.width > kMaxSide || info.height > kMaxSide) {
      throw FormatError(video_prefix(name) + "video stream has an invalid size " +
                        std::to_string(info.width) + "x" + std::to_string(info.height));
    }

    AVRational rate = stream->avg_frame_rate;
    if (!valid_rate(rate)) rate = stream->r_frame_rate;
    info.fps = valid_rate(rate) ? av_q2d(rate) : 0;
    if (!std::isfinite(info.fps) || info.fps > kMaxFps) info.fps = 0;

    info.duration = 0;
    video_duration = false;
    if (stream->duration != AV_NOPTS_VALUE && stream->duration > 0) {
      info.duration = static_cast<double>(stream->duration) * time_base;
      video_duration = true;
    } else if (input->duration != AV_NOPTS_VALUE && input->duration > 0 &&
               input->duration_estimation_method != AVFMT_DURATION_FROM_BITRATE) {
      info.duration = static_cast<double>(input->duration) / AV_TIME_BASE;
      // With a single stream the container's duration is the video's.
      video_duration = input->nb_streams == 1;
    }
    if (!std::isfinite(info.duration) || info.duration > kMaxDuration) {
      throw FormatError(video_prefix(name) + "implausible duration " + seconds_str(info.duration) +
                        " s");
    }

    info.frame_count = stream->nb_frames > 0 ? stream->nb_frames : 0;
    info.frame_count_source = FrameCountSource::kContainer;
    if (info.fps <= 0 && info.duration > 0 && info.frame_count > 0) {
      info.fps = static_cast<double>(info.frame_count) / info.duration;
    }
    frame_period = info.fps > 0 ? 1.0 / info.fps : 0;
    if (info.duration <= 0 || info.fps <= 0) {
      count_frames();
    } else if (info.frame_count == 0) {
      info.frame_count = std::llround(info.duration * info.fps);
      info.frame_count_source = FrameCountSource::kEstimated;
    }
  }

  void open(const std::string& path_or_name, const ReaderOptions& reader_options) {
    if (reader_options.format.width < 0 || reader_options.format.height < 0 ||
        reader_options.format.width > kMaxSide || reader_options.format.height > kMaxSide) {
      throw ValueError(video_prefix(path_or_name) + "requested frame size " +
                       std::to_string(reader_options.format.width) + "x" +
                       std::to_string(reader_options.format.height) + " is outside [0, " +
                       std::to_string(kMaxSide) + "]");
    }
    if (reader_options.max_packets_without_frame < 1) {
      throw ValueError(video_prefix(path_or_name) + "max_packets_without_frame must be >= 1");
    }
    name = path_or_name;
    options = reader_options;
    open_input();
    read_info();
  }

  // ---- decoding ----

  // Rejects a damaged packet or frame, or lets it pass when the options tolerate corruption.
  void corrupt(int code, const std::string& what) {
    if (options.tolerate_corruption) return;
    std::string where = have_last_time ? " after t=" + seconds_str(last_time) + " s" : "";
    throw FormatError(video_prefix(name) + what + where + ": " + describe(code));
  }

  // Decodes the next frame into `frame`; false at the end of the stream. Bounded: a stream that
  // goes max_packets_without_frame steps without producing a frame is reported as corrupt.
  bool next_frame() {
    for (int steps = 0;; ++steps) {
      if (decoder_done) return false;
      if (steps > options.max_packets_without_frame) {
        throw FormatError(video_prefix(name) + std::to_string(steps) +
                          " packets in a row without a decoded frame (corrupt stream?)");
      }
      t_last_ffmpeg_error.clear();
      int result = avcodec_receive_frame(decoder.get(), frame.get());
      if (result == 0) return true;
      if (result == AVERROR_EOF) {
        decoder_done = true;
        return false;
      }
      if (result != AVERROR(EAGAIN)) {
        corrupt(result, "cannot decode a frame");
        continue;
      }
      if (demuxer_done) {
        // The decoder wants input after being flushed; nothing more will come.
        decoder_done = true;
        return false;
      }
      result = av_read_frame(input.get(), packet.get());
      at_start = false;
      if (result == AVERROR_EOF) {
        demuxer_done = true;
        result = avcodec_send_packet(decoder.get(), nullptr);
        if (result < 0 && result != AVERROR_EOF) corrupt(result, "cannot flush the decoder");
        continue;
      }
      if (result < 0) {
        corrupt(result, "cannot read a packet");
        continue;
      }
      PacketUnref unref(packet.get());
      if (packet->stream_index != stream_index) continue;
      if (packet->flags & AV_PKT_FLAG_CORRUPT) {
        corrupt(AVERROR_INVALIDDATA, "damaged packet");
        continue;
      }
      result = avcodec_send_packet(decoder.get(), packet.get());
      if (result < 0 && result != AVERROR(EAGAIN)) corrupt(result, "cannot decode a packet");
    }
  }

  // Presentation time of `decoded` in seconds from the stream start.
  double frame_time(const AVFrame* decoded) {
    int64_t ts = decoded->best_effort_timestamp;
    if (ts == AV_NOPTS_VALUE) ts = decoded->pts;
    double t = 0;
    if (ts != AV_NOPTS_VALUE) {
      t = (static_cast<double>(ts) - start_pts) * time_base;
    } else if (have_last_time) {
      t = last_time + frame_period;
    }
    last_time = t;
    have_last_time = true;
    return t;
  }

  double frame_duration(const AVFrame* decoded) const {
    if (decoded->pkt_duration > 0) return static_cast<double>(decoded->pkt_duration) * time_base;
    return frame_period;
  }

  // Seeks to the last keyframe at or before t; false when the demuxer cannot seek.
  bool seek(double t) {
    const double target = start_pts + t / time_base;
    if (!std::isfinite(target) || std::fabs(target) > 9e18) return false;
    t_last_ffmpeg_error.clear();
    if (av_seek_frame(input.get(), stream_index, static_cast<int64_t>(std::floor(target)),
                      AVSEEK_FLAG_BACKWARD) < 0) {
      return false;
    }
    avcodec_flush_buffers(decoder.get());
    at_start = false;
    demuxer_done = false;
    decoder_done = false;
    have_last_time = false;
    return true;
  }

  // Prepares decoding so that the first frame comes at or before `target`: a seek, or the
  // first packet of the stream. Returns true in the second case.
  bool position(double target) {
    // Near the beginning, decoding from the first packet costs less than a seek.
    if (at_start && target < 1.0) return true;
    if (target > 0 && seek(target)) return false;
    open_input();
    return true;
  }

  // Decodes the frames of [start, end) in order and hands each to on_frame(frame, t), which
  // returns false to stop. Frames before `start` are decoded but not converted.
  //
  // Demuxers without an exact index (MPEG-TS, MPEG-PS) may seek past the target, even past
  // the end of the stream; the seek is then retried 1, 4, 16, ... s earlier, and finally
  // decoding starts from the first packet, so every attempt count is bounded.
  //
  // When the stream ends before `end` and before the duration the container states for the
  // video, the file is truncated: FormatError (unless corruption is tolerated).
  template <class OnFrame>
  void scan(double start, double end, OnFrame&& on_frame) {
    double backoff = 0;
    for (;;) {
      const bool from_beginning = position(start - backoff);
      bool landed_late = false;
      bool any_frame = false;
      double stream_end = 0;  // end time of the last decoded frame
      while (next_frame()) {
        const double t = frame_time(frame.get());
        if (!any_frame && !from_beginning && t > start + kTimeEps) {
          landed_late = true;
          break;
        }
        any_frame = true;
        stream_end = std::max(stream_end, t + frame_duration(frame.get()));
        if (t < start - kTimeEps) continue;
        if (t >= end - kTimeEps) return;
        if (!on_frame(frame.get(), t)) return;
      }
      if (landed_late || (!any_frame && !from_beginning)) {
        backoff = backoff == 0 ? 1 : 4 * backoff;
        continue;
      }
      if (!any_frame) {
        throw FormatError(video_prefix(name) +
                          "no decodable video frame (empty, truncated or corrupt file)");
      }
      const double expected_end = video_duration ? std::min(end, info.duration) : 0;
      if (!options.tolerate_corruption &&
          stream_end + 0.5 * frame_period < expected_end - kTimeEps) {
        throw FormatError(video_prefix(name) + "the stream ends at t=" + seconds_str(stream_end) +
                          " s but the container says the video lasts " +
                          seconds_str(info.duration) + " s (truncated or corrupt file)");
      }
      return;
    }
  }

  int64_t count_frames() {
    if (!at_start) open_input();
    int64_t count = 0;
    double first_time = 0;
    double last = 0;
    double last_duration = 0;
    while (next_frame()) {
      const double t = frame_time(frame.get());
      if (count == 0) first_time = t;
      last = t;
      last_duration = frame.get()->pkt_duration > 0
                          ? static_cast<double>(frame.get()->pkt_duration) * time_base
                          : 0;
      ++count;
    }
    if (count == 0) {
      throw FormatError(video_prefix(name) + "no decodable video frame (empty or corrupt file)");
    }
    info.frame_count = count;
    info.frame_count_source = FrameCountSource::kDecoded;
    if (info.fps <= 0) {
      // Without a stated rate, the spacing of the decoded frames gives it; a single frame
      // gets FFmpeg's customary 25 fps.
      info.fps = count > 1 && last > first_time
                     ? static_cast<double>(count - 1) / (last - first_time)
                     : 25.0;
      if (info.fps > kMaxFps) info.fps = kMaxFps;
      frame_period = 1.0 / info.fps;
    }
    if (info.duration <= 0) {
      info.duration = last + (last_duration > 0 ? last_duration : frame_period);
      video_duration = true;
    }
    return count;
  }

  // ---- conversion ----

  struct OutputSize {
    int channels;
    int height;
    int width;
    int64_t frame_bytes() const { return int64_t{channels} * height * width; }
  };

  OutputSize output_size() const {
    const FrameFormat& format = options.format;
    int64_t width = format.width;
    int64_t height = format.height;
    if (width == 0 && height == 0) {
      width = info.width;
      height = info.height;
    } else if (width == 0) {
      width = std::max<int64_t>(
          1, std::llround(static_cast<double>(height) * info.width / info.height));
    } else if (height == 0) {
      height =
          std::max<int64_t>(1, std::llround(static_cast<double>(width) * info.height / info.width));
    }
    if (width > kMaxSide || height > kMaxSide) {
      throw ValueError(video_prefix(name) + "output size " + std::to_string(width) + "x" +
                       std::to_string(height) + " exceeds " + std::to_string(kMaxSide));
    }
    return {format.color == ColorMode::kGray ? 1 : 3, static_cast<int>(height),
            static_cast<int>(width)};
  }

  // Converts `decoded` to the output format and writes it as [C, H, W] bytes to `out`.
  void convert(const AVFrame* decoded, const OutputSize& size, uint8_t* out) {
    if (decoded->width <= 0 || decoded->height <= 0 || decoded->width > kMaxSide ||
        decoded->height > kMaxSide) {
      throw FormatError(video_prefix(name) + "decoded frame has an invalid size " +
                        std::to_string(decoded->width) + "x" + std::to_string(decoded->height));
    }
    const auto source_format = static_cast<AVPixelFormat>(decoded->format);
    if (!sws_isSupportedInput(source_format)) {
      throw FormatError(video_prefix(name) + "frames in pixel format '" +
                        pixel_format_name(decoded->format) + "' cannot be converted");
    }
    const AVPixelFormat target_format = size.channels == 1 ? AV_PIX_FMT_GRAY8 : AV_PIX_FMT_RGB24;
    // No SWS_ACCURATE_RND / SWS_FULL_CHR_H_INT: both leave swscale's exact unscaled YUV->RGB
    // path and, on typical 4:2:0 content, move the result further from the source RGB.
    const int flags = options.format.filter == ResizeFilter::kArea ? SWS_AREA : SWS_BILINEAR;
    const bool yuv = is_yuv_format(source_format);
    const int full_range = is_full_range_format(source_format) ||
                           raw_enum_value(decoded->color_range) == AVCOL_RANGE_JPEG;
    const int colorspace = frame_colorspace(*decoded);
    const std::array<int, 9> key = {decoded->width, decoded->height, decoded->format,
                                    size.width,     size.height,     target_format,
                                    flags,          colorspace,      full_range};
    if (!scaler || key != scaler_key) {
      scaler.reset(sws_getContext(decoded->width, decoded->height, source_format, size.width,
                                  size.height, target_format, flags, nullptr, nullptr, nullptr));
      if (!scaler) {
        throw FormatError(video_prefix(name) + "cannot convert " +
                          pixel_format_name(decoded->format) + " " +
                          std::to_string(decoded->width) + "x" + std::to_string(decoded->height) +
                          " frames to " + pixel_format_name(target_format) + " " +
                          std::to_string(size.width) + "x" + std::to_string(size.height));
      }
      if (yuv) {
        // Honour the stream's matrix (BT.601/709/...) and range; the output is full range.
        const int* coefficients = sws_getCoefficients(colorspace);
        sws_setColorspaceDetails(scaler.get(), coefficients, full_range, coefficients, 1, 0,
                                 1 << 16, 1 << 16);
      }
      scaler_key = key;
    }
    if (converted->width != size.width || converted->height != size.height ||
        converted->format != target_format) {
      av_frame_unref(converted.get());
      converted->width = size.width;
      converted->height = size.height;
      converted->format = target_format;
      const int result = av_frame_get_buffer(converted.get(), 0);
      if (result < 0) throw_av(name, "cannot allocate a frame", result);
    }
    const int rows = sws_scale(scaler.get(), decoded->data, decoded->linesize, 0, decoded->height,
                               converted->data, converted->linesize);
    if (rows <= 0) {
      throw FormatError(video_prefix(name) + "swscale failed to convert a frame");
    }
    // Interleaved rows to planes.
    const int64_t plane = int64_t{size.height} * size.width;
    for (int y = 0; y < size.height; ++y) {
      const uint8_t* row = converted->data[0] + static_cast<ptrdiff_t>(y) * converted->linesize[0];
      for (int c = 0; c < size.channels; ++c) {
        uint8_t* dst = out + c * plane + int64_t{y} * size.width;
        for (int x = 0; x < size.width; ++x)
          dst[x] = row[x * size.channels + c];
      }
    }
  }

  FramesU8 empty_output(const OutputSize& size) const {
    FramesU8 out;
    out.channels = size.channels;
    out.height = size.height;
    out.width = size.width;
    return out;
  }

  int64_t nominal_index(double t) const { return std::llround(t * info.fps); }

  // ---- public operations ----

  void check_range(double start_s, double end_s) const {
    if (!std::isfinite(start_s) || !std::isfinite(end_s) || start_s < 0 || end_s <= start_s) {
      throw ValueError(video_prefix(name) + "time range [" + seconds_str(start_s) + ", " +
                       seconds_str(end_s) + ") s must satisfy 0 <= start < end");
    }
    // One frame period of slack lets callers round the end up to the next frame.
    if (start_s >= info.duration || end_s > info.duration + frame_period + kTimeEps) {
      throw ValueError(video_prefix(name) + "time range [" + seconds_str(start_s) + ", " +
                       seconds_str(end_s) + ") s lies outside the video (duration " +
                       seconds_str(info.duration) + " s)");
    }
  }

  FramesU8 read_range(double start_s, double end_s) {
    const OutputSize size = output_size();
    FramesU8 out = empty_output(size);
    const int64_t frame_bytes = size.frame_bytes();
    scan(start_s, end_s, [&](const AVFrame* decoded, double t) {
      if ((out.count + 1) * frame_bytes > kMaxOutputBytes) {
        throw ValueError(video_prefix(name) + "the frames of [" + seconds_str(start_s) + ", " +
                         seconds_str(end_s) + ") s exceed " + std::to_string(kMaxOutputBytes) +
                         " bytes; read a shorter range or a smaller size");
      }
      out.pixels.resize(static_cast<size_t>((out.count + 1) * frame_bytes));
      convert(decoded, size, out.pixels.data() + out.count * frame_bytes);
      out.times.push_back(t);
      out.indices.push_back(nominal_index(t));
      ++out.count;
      return true;
    });
    if (out.count == 0) {
      throw ValueError(video_prefix(name) + "no frame has a time in [" + seconds_str(start_s) +
                       ", " + seconds_str(end_s) + ") s");
    }
    return out;
  }

  // For each of the ascending `targets` in [start, end), the frame of [start, end) nearest to
  // it. Frames are held by reference (no copy) until the next frame shows which is nearer.
  FramesU8 sample(const std::vector<double>& targets, double start_s, double end_s) {
    const OutputSize size = output_size();
    FramesU8 out = empty_output(size);
    const int64_t frame_bytes = size.frame_bytes();
    const auto count = static_cast<int64_t>(targets.size());
    if (count * frame_bytes > kMaxOutputBytes) {
      throw ValueError(video_prefix(name) + std::to_string(count) + " frames of " +
                       std::to_string(frame_bytes) + " bytes exceed " +
                       std::to_string(kMaxOutputBytes) + " bytes");
    }
    out.count = count;
    out.pixels.resize(static_cast<size_t>(count * frame_bytes));
    out.times.resize(targets.size());
    out.indices.resize(targets.size());

    FramePtr held = alloc_frame();
    bool holding = false;
    double held_time = 0;
    int64_t held_serial = -1;
    int64_t serial = 0;
    int64_t last_assigned = -1;
    int64_t next = 0;
    // Writes frame number `frame_serial` to the next output slot; a repeated frame is copied
    // from the slot before rather than converted again.
    auto assign = [&](const AVFrame* decoded, double t, int64_t frame_serial) {
      uint8_t* dst = out.pixels.data() + next * frame_bytes;
      if (frame_serial == last_assigned) {
        std::memcpy(dst, dst - frame_bytes, static_cast<size_t>(frame_bytes));
      } else {
        convert(decoded, size, dst);
      }
      last_assigned = frame_serial;
      out.times[next] = t;
      out.indices[next] = nominal_index(t);
      ++next;
    };
    scan(start_s, end_s, [&](AVFrame* decoded, double t) {
      const int64_t current = serial++;
      while (next < count && t >= targets[next]) {
        const double target = targets[next];
        if (holding && target - held_time <= t - target + kTimeEps) {
          assign(held.get(), held_time, held_serial);
        } else {
          assign(decoded, t, current);
        }
      }
      if (next == count) return false;
      av_frame_unref(held.get());
      av_frame_move_ref(held.get(), decoded);
      holding = true;
      held_time = t;
      held_serial = current;
      return true;
    });
    if (next < count && !holding) {
      throw ValueError(video_prefix(name) + "no frame has a time in [" + seconds_str(start_s) +
                       ", " + seconds_str(end_s) + ") s");
    }
    while (next < count)
      assign(held.get(), held_time, held_serial);
    return out;
  }
};

VideoReader::VideoReader() = default;
VideoReader::VideoReader(const std::string& path, const ReaderOptions& options) {
  open(path, options);
}
VideoReader::~VideoReader() = default;
VideoReader::VideoReader(VideoReader&& other) noexcept = default;
VideoReader& VideoReader::operator=(VideoReader&& other) noexcept = default;

void VideoReader::open(const std::string& path, const ReaderOptions& options) {
  ensure_ffmpeg_setup();
  impl_.reset();
  auto impl = std::make_unique<Impl>();
  impl->open(path, options);
  impl_ = std::move(impl);
}

void VideoReader::open_memory(std::vector<uint8_t> bytes, const std::string& name,
                              const ReaderOptions& options) {
  ensure_ffmpeg_setup();
  impl_.reset();
  auto impl = std::make_unique<Impl>();
  impl->from_memory = true;
  impl->bytes = std::move(bytes);
  impl->open(name, options);
  impl_ = std::move(impl);
}

void VideoReader::close() {
  impl_.reset();
}
bool VideoReader::is_open() const {
  return impl_ != nullptr;
}

namespace {
[[noreturn]] void throw_not_open(const char* what) {
  throw ValueError(std::string("VideoReader::") + what + ": no video is open");
}
}  // namespace

const VideoInfo& VideoReader::info() const {
  if (!impl_) throw_not_open("info");
  return impl_->info;
}

const FrameFormat& VideoReader::format() const {
  if (!impl_) throw_not_open("format");
  return impl_->options.format;
}

void VideoReader::set_format(const FrameFormat& format) {
  if (!impl_) throw_not_open("set_format");
  if (format.width < 0 || format.height < 0 || format.width > kMaxSide ||
      format.height > kMaxSide) {
    throw ValueError(video_prefix(impl_->name) + "requested frame size " +
                     std::to_string(format.width) + "x" + std::to_string(format.height) +
                     " is outside [0, " + std::to_string(kMaxSide) + "]");
  }
  impl_->options.format = format;
}

int64_t VideoReader::count_frames() {
  if (!impl_) throw_not_open("count_frames");
  return impl_->count_frames();
}

FramesU8 VideoReader::read_frames_u8(double start_s, double end_s) {
  if (!impl_) throw_not_open("read_frames");
  impl_->check_range(start_s, end_s);
  return impl_->read_range(start_s, end_s);
}

FramesU8 VideoReader::read_all_u8() {
  if (!impl_) throw_not_open("read_all");
  return impl_->read_range(0, std::numeric_limits<double>::infinity());
}

FramesU8 VideoReader::sample_frames_u8(int64_t count, double start_s, double end_s) {
  if (!impl_) throw_not_open("sample_frames");
  impl_->check_range(start_s, end_s);
  return impl_->sample(uniform_sample_times(count, start_s, end_s), start_s, end_s);
}

FramesU8 VideoReader::sample_at_fps_u8(double fps, double start_s, double end_s) {
  if (!impl_) throw_not_open("sample_at_fps");
  impl_->check_range(start_s, end_s);
  return impl_->sample(fps_sample_times(fps, start_s, end_s), start_s, end_s);
}

Tensor VideoReader::read_frames(double start_s, double end_s) {
  return read_frames_u8(start_s, end_s).to_tensor();
}
Tensor VideoReader::read_all() {
  return read_all_u8().to_tensor();
}
Tensor VideoReader::sample_frames(int64_t count, double start_s, double end_s) {
  return sample_frames_u8(count, start_s, end_s).to_tensor();
}
Tensor VideoReader::sample_at_fps(double fps, double start_s, double end_s) {
  return sample_at_fps_u8(fps, start_s, end_s).to_tensor();
}

VideoInfo probe_video(const std::string& path) {
  VideoReader reader(path);
  if (reader.info().frame_count_source == FrameCountSource::kEstimated) reader.count_frames();
  return reader.info();
}

// ============================================================================================
// Encoding
// ============================================================================================

namespace {

void check_frames(const char* what, const std::string& path, const FramesU8& frames) {
  const std::string prefix = std::string(what) + " '" + path + "': ";
  if (frames.count < 1 || (frames.channels != 1 && frames.channels != 3) || frames.height < 1 ||
      frames.width < 1 || frames.height > kMaxSide || frames.width > kMaxSide) {
    throw ShapeError(prefix + "frames must be [T>=1, C in {1,3}, H, W] with 1 <= H, W <= " +
                     std::to_string(kMaxSide) + ", got " + shape_str(frames.shape()));
  }
  const int64_t frame_bytes = frames.channels * frames.height * frames.width;
  if (frames.count > kMaxOutputBytes / frame_bytes ||
      static_cast<int64_t>(frames.pixels.size()) != frames.count * frame_bytes) {
    throw ShapeError(prefix + shape_str(frames.shape()) + " needs " +
                     std::to_string(frames.count * frame_bytes) + " bytes, have " +
                     std::to_string(frames.pixels.size()));
  }
}

void check_fps(const char* what, const std::string& path, double fps, double max_fps) {
  if (!std::isfinite(fps) || fps <= 0 || fps > max_fps) {
    throw ValueError(std::string(what) + " '" + path + "': fps " + seconds_str(fps) +
                     " must be in (0, " + seconds_str(max_fps) + "]");
  }
}

// Everything an encode needs besides the pixels; fill(t, frame) writes frame t.
struct EncodeJob {
  std::string path;
  const char* container = nullptr;  // nullptr: from the file name
  const AVCodec* codec = nullptr;
  AVPixelFormat pixel_format = AV_PIX_FMT_NONE;
  int width = 0;
  int height = 0;
  double fps = 0;
  int64_t frame_count = 0;
  std::function<void(AVCodecContext*, AVDictionary**)> configure;
  std::function<void(int64_t, AVFrame*)> fill;
};

// Opens the container and encoder, writes every frame and the trailer. Any failure throws
// and removes the partly written file.
void run_encode(const EncodeJob& job) {
  const std::string& path = job.path;
  t_last_ffmpeg_error.clear();
  AVFormatContext* raw_output = nullptr;
  int result = avformat_alloc_output_context2(&raw_output, nullptr, job.container, path.c_str());
  if (result < 0 || !raw_output) {
    throw ValueError(video_prefix(path) + "cannot choose a container for this file name: " +
                     describe(result < 0 ? result : AVERROR_MUXER_NOT_FOUND));
  }
  OutputPtr output(raw_output);
  if (avformat_query_codec(output->oformat, job.codec->id, FF_COMPLIANCE_NORMAL) != 1) {
    throw ValueError(video_prefix(path) + "container '" + output->oformat->name + "' cannot hold " +
                     job.codec->name + " video");
  }
  AVStream* stream = avformat_new_stream(output.get(), nullptr);
  if (!stream) throw std::bad_alloc();

  CodecContextPtr encoder(avcodec_alloc_context3(job.codec));
  if (!encoder) throw std::bad_alloc();
  const AVRational rate = av_d2q(job.fps, 100000);
  if (!valid_rate(rate)) {
    throw ValueError(video_prefix(path) + "fps " + seconds_str(job.fps) + " has no rational form");
  }
  encoder->width = job.width;
  encoder->height = job.height;
  encoder->pix_fmt = job.pixel_format;
  encoder->time_base = av_inv_q(rate);
  encoder->framerate = rate;
  encoder->sample_aspect_ratio = AVRational{1, 1};
  if (output->oformat->flags & AVFMT_GLOBALHEADER) encoder->flags |= AV_CODEC_FLAG_GLOBAL_HEADER;
  AVDictionary* codec_options = nullptr;
  if (job.configure) job.configure(encoder.get(), &codec_options);
  t_last_ffmpeg_error.clear();
  result = avcodec_open2(encoder.get(), job.codec, &codec_options);
  av_dict_free(&codec_options);
  if (result < 0)
    throw_av(path, std::string("cannot open the ") + job.codec->name + " encoder", result);
  result = avcodec_parameters_from_context(stream->codecpar, encoder.get());
  if (result < 0) throw_av(path, "cannot configure the stream", result);
  stream->time_base = encoder->time_base;
  stream->avg_frame_rate = rate;

  // From here on a file exists; remove it unless the trailer is written.
  bool created = false;
  bool finished = false;
  struct RemoveUnfinished {
    const std::string& path;
    const bool& created;
    const bool& finished;
    OutputPtr& output;
    ~RemoveUnfinished() {
      if (created && !finished) {
        output.reset();  // close the file before removing it
        std::remove(path.c_str());
      }
    }
  } remove_unfinished{path, created, finished, output};

  if (!(output->oformat->flags & AVFMT_NOFILE)) {
    // Only a regular file (new or overwritten) is ours to remove after a failure; never a
    // device or pipe that the path names.
    std::error_code ignored;
    const auto status = std::filesystem::status(path, ignored);
    const bool removable =
        !std::filesystem::exists(status) || std::filesystem::is_regular_file(status);
    t_last_ffmpeg_error.clear();
    result = avio_open(&output->pb, path.c_str(), AVIO_FLAG_WRITE);
    if (result < 0) {
      throw IoError(video_prefix(path) + "cannot create the file: " + describe(result));
    }
    created = removable;
  }
  t_last_ffmpeg_error.clear();
  result = avformat_write_header(output.get(), nullptr);
  if (result < 0) throw_av(path, "cannot write the header", result);

  PacketPtr packet = alloc_packet();
  auto drain = [&] {
    for (;;) {
      result = avcodec_receive_packet(encoder.get(), packet.get());
      if (result == AVERROR(EAGAIN) || result == AVERROR_EOF) return;
      if (result < 0) throw_av(path, "encoding failed", result);
      av_packet_rescale_ts(packet.get(), encoder->time_base, stream->time_base);
      packet->stream_index = stream->index;
      result = av_interleaved_write_frame(output.get(), packet.get());
      if (result < 0) {
        throw IoError(video_prefix(path) + "cannot write a packet: " + describe(result));
      }
    }
  };
  FramePtr frame = alloc_frame();
  frame->format = job.pixel_format;
  frame->width = job.width;
  frame->height = job.height;
  result = av_frame_get_buffer(frame.get(), 0);
  if (result < 0) throw_av(path, "cannot allocate a frame", result);
  for (int64_t t = 0; t < job.frame_count; ++t) {
    result = av_frame_make_writable(frame.get());
    if (result < 0) throw_av(path, "cannot allocate a frame", result);
    job.fill(t, frame.get());
    frame->pts = t;
    t_last_ffmpeg_error.clear();
    result = avcodec_send_frame(encoder.get(), frame.get());
    if (result < 0) throw_av(path, "encoding failed", result);
    drain();
  }
  result = avcodec_send_frame(encoder.get(), nullptr);
  if (result < 0) throw_av(path, "cannot flush the encoder", result);
  drain();
  result = av_write_trailer(output.get());
  if (result < 0) throw_av(path, "cannot write the trailer", result);
  if (output->pb && !(output->oformat->flags & AVFMT_NOFILE)) {
    result = avio_closep(&output->pb);
    if (result < 0)
      throw IoError(video_prefix(path) + "cannot close the file: " + describe(result));
  }
  finished = true;
}

const AVCodec* choose_video_encoder(const std::string& path, const std::string& requested) {
  if (requested == "auto") {
    if (const AVCodec* x264 = avcodec_find_encoder_by_name("libx264")) return x264;
    if (const AVCodec* mpeg4 = avcodec_find_encoder_by_name("mpeg4")) return mpeg4;
    throw ValueError(video_prefix(path) + "this FFmpeg has neither libx264 nor mpeg4");
  }
  const AVCodec* codec = avcodec_find_encoder_by_name(requested.c_str());
  if (!codec || codec->type != AVMEDIA_TYPE_VIDEO) {
    throw ValueError(video_prefix(path) + "this FFmpeg has no video encoder named '" + requested +
                     "'");
  }
  return codec;
}

// Frame t of `frames` as interleaved GRAY8/RGB24 rows of out_width pixels; the extra column or
// row of an odd size repeats the last one.
void interleave_padded(const FramesU8& frames, int64_t t, int out_width, int out_height,
                       uint8_t* out, int out_stride) {
  const int64_t channels = frames.channels;
  const int64_t plane = frames.height * frames.width;
  const uint8_t* source = frames.pixels.data() + t * channels * plane;
  for (int y = 0; y < out_height; ++y) {
    const int64_t sy = std::min<int64_t>(y, frames.height - 1);
    uint8_t* row = out + static_cast<ptrdiff_t>(y) * out_stride;
    for (int x = 0; x < out_width; ++x) {
      const int64_t sx = std::min<int64_t>(x, frames.width - 1);
      for (int64_t c = 0; c < channels; ++c) {
        row[x * channels + c] = source[c * plane + sy * frames.width + sx];
      }
    }
  }
}

}  // namespace

std::string encode_video(const std::string& path, const FramesU8& frames, double fps,
                         const EncodeOptions& options) {
  ensure_ffmpeg_setup();
  check_frames("encode_video", path, frames);
  check_fps("encode_video", path, fps, kMaxFps);
  const AVCodec* codec = choose_video_encoder(path, options.codec);
  if (codec->pix_fmts) {
    bool takes_yuv420p = false;
    for (const AVPixelFormat* f = codec->pix_fmts; *f != AV_PIX_FMT_NONE; ++f) {
      takes_yuv420p = takes_yuv420p || *f == AV_PIX_FMT_YUV420P;
    }
    if (!takes_yuv420p) {
      throw ValueError(video_prefix(path) + "encoder '" + codec->name + "' does not take yuv420p");
    }
  }
  const bool x264 = std::strcmp(codec->name, "libx264") == 0;
  // Checked here because libx264 prints its own complaint to stderr.
  const std::vector<std::string> x264_presets = {"ultrafast", "superfast", "veryfast", "faster",
                                                 "fast",      "medium",    "slow",     "slower",
                                                 "veryslow",  "placebo"};
  if (x264 &&
      std::find(x264_presets.begin(), x264_presets.end(), options.preset) == x264_presets.end()) {
    throw ValueError(video_prefix(path) + "unknown libx264 preset '" + options.preset + "'");
  }
  if (x264 && (options.crf < 0 || options.crf > 51)) {
    throw ValueError(video_prefix(path) + "crf " + std::to_string(options.crf) +
                     " must be in [0, 51]");
  }
  if (!x264 && (options.qscale < 1 || options.qscale > 31)) {
    throw ValueError(video_prefix(path) + "qscale " + std::to_string(options.qscale) +
                     " must be in [1, 31]");
  }
  const bool odd = (frames.width % 2) != 0 || (frames.height % 2) != 0;
  if (odd && !options.pad_to_even) {
    throw ValueError(video_prefix(path) + "yuv420p needs an even size, got " +
                     std::to_string(frames.width) + "x" + std::to_string(frames.height) +
                     " (set pad_to_even)");
  }
  const int width = static_cast<int>(frames.width + frames.width % 2);
  const int height = static_cast<int>(frames.height + frames.height % 2);
  const int channels = static_cast<int>(frames.channels);
  const AVPixelFormat source_format = channels == 1 ? AV_PIX_FMT_GRAY8 : AV_PIX_FMT_RGB24;

  ScalerPtr scaler(sws_getContext(width, height, source_format, width, height, AV_PIX_FMT_YUV420P,
                                  SWS_BICUBIC | SWS_ACCURATE_RND | SWS_FULL_CHR_H_INP, nullptr,
                                  nullptr, nullptr));
  if (!scaler)
    throw FormatError(video_prefix(path) + "cannot set up the RGB to yuv420p conversion");
  // Full-range RGB or gray to limited-range BT.601 YUV, as the stream header will say.
  const int* bt601 = sws_getCoefficients(SWS_CS_ITU601);
  sws_setColorspaceDetails(scaler.get(), bt601, 1, bt601, 0, 0, 1 << 16, 1 << 16);
  const int stride = width * channels;
  std::vector<uint8_t> interleaved(static_cast<size_t>(stride) * height);

  EncodeJob job;
  job.path = path;
  job.codec = codec;
  job.pixel_format = AV_PIX_FMT_YUV420P;
  job.width = width;
  job.height = height;
  job.fps = fps;
  job.frame_count = frames.count;
  job.configure = [&](AVCodecContext* encoder, AVDictionary** codec_options) {
    encoder->colorspace = AVCOL_SPC_SMPTE170M;
    encoder->color_range = AVCOL_RANGE_MPEG;
    if (x264) {
      av_dict_set(codec_options, "crf", std::to_string(options.crf).c_str(), 0);
      av_dict_set(codec_options, "preset", options.preset.c_str(), 0);
    } else {
      encoder->flags |= AV_CODEC_FLAG_QSCALE;
      encoder->global_quality = FF_QP2LAMBDA * options.qscale;
    }
  };
  job.fill = [&](int64_t t, AVFrame* frame) {
    interleave_padded(frames, t, width, height, interleaved.data(), stride);
    const uint8_t* source_planes[1] = {interleaved.data()};
    const int source_strides[1] = {stride};
    if (sws_scale(scaler.get(), source_planes, source_strides, 0, height, frame->data,
                  frame->linesize) <= 0) {
      throw FormatError(video_prefix(path) + "swscale failed to convert frame " +
                        std::to_string(t));
    }
  };
  run_encode(job);
  return codec->name;
}

std::string encode_video(const std::string& path, const Tensor& frames, double fps,
                         const EncodeOptions& options) {
  return encode_video(path, frames_from_tensor(frames), fps, options);
}

namespace {

// One palette for a whole clip: ≤ 256 colours and a map from pixel colour to palette index.
class GifPalette {
 public:
  explicit GifPalette(const FramesU8& frames) {
    if (frames.channels == 1) {
      for (int v = 0; v < 256; ++v)
        colors_.push_back({uint8_t(v), uint8_t(v), uint8_t(v)});
      gray_ = true;
      return;
    }
    if (collect_exact(frames)) return;
    median_cut(frames);
  }

  // ARGB entries as AVFrame palettes store them.
  void write(uint32_t* palette) const {
    for (int i = 0; i < 256; ++i) {
      const std::array<uint8_t, 3> c =
          i < static_cast<int>(colors_.size()) ? colors_[i] : std::array<uint8_t, 3>{0, 0, 0};
      palette[i] = 0xFF000000u | (uint32_t{c[0]} << 16) | (uint32_t{c[1]} << 8) | c[2];
    }
  }

  uint8_t index(uint8_t r, uint8_t g, uint8_t b) const {
    if (gray_) return r;
    if (!exact_.empty()) return exact_.at(pack(r, g, b));
    return bin_to_index_[bin(r, g, b)];
  }

 private:
  static uint32_t pack(uint8_t r, uint8_t g, uint8_t b) {
    return (uint32_t{r} << 16) | (uint32_t{g} << 8) | b;
  }
  static int bin(uint8_t r, uint8_t g, uint8_t b) {
    return ((r >> 3) << 10) | ((g >> 3) << 5) | (b >> 3);
  }

  template <class F>
  static void for_each_pixel(const FramesU8& frames, F&& f) {
    const int64_t plane = frames.height * frames.width;
    for (int64_t t = 0; t < frames.count; ++t) {
      const uint8_t* base = frames.pixels.data() + t * 3 * plane;
      for (int64_t i = 0; i < plane; ++i)
        f(base[i], base[plane + i], base[2 * plane + i]);
    }
  }

  // The exact colours when there are at most 256 of them.
  bool collect_exact(const FramesU8& frames) {
    std::map<uint32_t, uint8_t> seen;
    bool fits = true;
    for_each_pixel(frames, [&](uint8_t r, uint8_t g, uint8_t b) {
      if (!fits) return;
      seen.emplace(pack(r, g, b), 0);
      fits = seen.size() <= 256;
    });
    if (!fits) return false;
    for (auto& [color, index] : seen) {
      index = static_cast<uint8_t>(colors_.size());
      colors_.push_back({uint8_t(color >> 16), uint8_t(color >> 8), uint8_t(color)});
    }
    exact_ = std::move(seen);
    return true;
  }

  // Heckbert's median cut on a 5-bit-per-channel histogram (repeatedly split the box with the
  // largest pixels x longest side at the pixel median of that side), refined by k-means.
  void median_cut(const FramesU8& frames) {
    struct Bin {
      int64_t count = 0;
      int64_t sum[3] = {0, 0, 0};
    };
    std::vector<Bin> bins(1 << 15);
    for_each_pixel(frames, [&](uint8_t r, uint8_t g, uint8_t b) {
      Bin& entry = bins[bin(r, g, b)];
      ++entry.count;
      entry.sum[0] += r;
      entry.sum[1] += g;
      entry.sum[2] += b;
    });
    auto coordinate = [](int id, int axis) { return (id >> (10 - 5 * axis)) & 31; };
    struct Box {
      std::vector<int> ids;
      int64_t pixels = 0;
      int longest_axis = 0;
      int longest_side = 0;
    };
    auto measure = [&](Box& box) {
      int lo[3] = {31, 31, 31};
      int hi[3] = {0, 0, 0};
      box.pixels = 0;
      for (int id : box.ids) {
        box.pixels += bins[id].count;
        for (int a = 0; a < 3; ++a) {
          lo[a] = std::min(lo[a], coordinate(id, a));
          hi[a] = std::max(hi[a], coordinate(id, a));
        }
      }
      box.longest_axis = 0;
      for (int a = 1; a < 3; ++a) {
        if (hi[a] - lo[a] > hi[box.longest_axis] - lo[box.longest_axis]) box.longest_axis = a;
      }
      box.longest_side = hi[box.longest_axis] - lo[box.longest_axis];
    };
    std::vector<Box> boxes(1);
    for (int id = 0; id < (1 << 15); ++id) {
      if (bins[id].count > 0) boxes[0].ids.push_back(id);
    }
    measure(boxes[0]);
    while (boxes.size() < 256) {
      int best = -1;
      double best_score = 0;
      for (size_t i = 0; i < boxes.size(); ++i) {
        if (boxes[i].ids.size() < 2) continue;
        const double score = static_cast<double>(boxes[i].pixels) * (boxes[i].longest_side + 1);
        if (score > best_score) {
          best_score = score;
          best = static_cast<int>(i);
        }
      }
      if (best < 0) break;
      Box& box = boxes[best];
      const int axis = box.longest_axis;
      std::sort(box.ids.begin(), box.ids.end(), [&](int a, int b) {
        return coordinate(a, axis) < coordinate(b, axis) ||
               (coordinate(a, axis) == coordinate(b, axis) && a < b);
      });
      int64_t running = 0;
      size_t cut = 1;
      for (; cut < box.ids.size(); ++cut) {
        running += bins[box.ids[cut - 1]].count;
        if (2 * running >= box.pixels) break;
      }
      cut = std::min(cut, box.ids.size() - 1);
      Box upper;
      upper.ids.assign(box.ids.begin() + static_cast<ptrdiff_t>(cut), box.ids.end());
      box.ids.resize(cut);
      measure(box);
      measure(upper);
      boxes.push_back(std::move(upper));
    }
    for (const Box& box : boxes) {
      int64_t sum[3] = {0, 0, 0};
      for (int id : box.ids) {
        for (int a = 0; a < 3; ++a)
          sum[a] += bins[id].sum[a];
      }
      std::array<uint8_t, 3> color{};
      for (int a = 0; a < 3; ++a) {
        color[a] =
            static_cast<uint8_t>((sum[a] + box.pixels / 2) / std::max<int64_t>(1, box.pixels));
      }
      colors_.push_back(color);
    }
    // Mean colour of each occupied bin.
    std::vector<int> occupied;
    std::vector<std::array<int, 3>> means;
    for (int id = 0; id < (1 << 15); ++id) {
      const Bin& entry = bins[id];
      if (entry.count == 0) continue;
      occupied.push_back(id);
      std::array<int, 3> mean{};
      for (int a = 0; a < 3; ++a) {
        mean[a] = static_cast<int>((entry.sum[a] + entry.count / 2) / entry.count);
      }
      means.push_back(mean);
    }
    auto nearest = [&](const std::array<int, 3>& color) {
      int best = 0;
      int best_distance = std::numeric_limits<int>::max();
      for (size_t i = 0; i < colors_.size(); ++i) {
        int distance = 0;
        for (int a = 0; a < 3; ++a) {
          const int d = color[a] - colors_[i][a];
          distance += d * d;
        }
        if (distance < best_distance) {
          best_distance = distance;
          best = static_cast<int>(i);
        }
      }
      return best;
    };
    // A few Lloyd (k-means) rounds over the occupied bins move each colour to the mean of the
    // pixels nearest to it, which lowers the error that median cut leaves.
    for (int round = 0; round < 4; ++round) {
      std::vector<std::array<int64_t, 4>> totals(colors_.size(), {0, 0, 0, 0});
      for (size_t k = 0; k < occupied.size(); ++k) {
        const Bin& entry = bins[occupied[k]];
        std::array<int64_t, 4>& total = totals[nearest(means[k])];
        for (int a = 0; a < 3; ++a)
          total[a] += entry.sum[a];
        total[3] += entry.count;
      }
      for (size_t i = 0; i < colors_.size(); ++i) {
        if (totals[i][3] == 0) continue;
        for (int a = 0; a < 3; ++a) {
          colors_[i][a] = static_cast<uint8_t>((totals[i][a] + totals[i][3] / 2) / totals[i][3]);
        }
      }
    }
    bin_to_index_.assign(1 << 15, 0);
    for (size_t k = 0; k < occupied.size(); ++k) {
      bin_to_index_[occupied[k]] = static_cast<uint8_t>(nearest(means[k]));
    }
  }

  std::vector<std::array<uint8_t, 3>> colors_;
  bool gray_ = false;
  std::map<uint32_t, uint8_t> exact_;
  std::vector<uint8_t> bin_to_index_;
};

}  // namespace

void encode_gif(const std::string& path, const FramesU8& frames, double fps) {
  ensure_ffmpeg_setup();
  check_frames("encode_gif", path, frames);
  // GIF delays are whole centiseconds.
  check_fps("encode_gif", path, fps, 100);
  const AVCodec* codec = avcodec_find_encoder(AV_CODEC_ID_GIF);
  if (!codec) throw ValueError(video_prefix(path) + "this FFmpeg has no GIF encoder");
  const GifPalette palette(frames);
  const int64_t plane = frames.height * frames.width;

  EncodeJob job;
  job.path = path;
  job.container = "gif";
  job.codec = codec;
  job.pixel_format = AV_PIX_FMT_PAL8;
  job.width = static_cast<int>(frames.width);
  job.height = static_cast<int>(frames.height);
  job.fps = fps;
  job.frame_count = frames.count;
  job.fill = [&](int64_t t, AVFrame* frame) {
    const uint8_t* source = frames.pixels.data() + t * frames.channels * plane;
    for (int64_t y = 0; y < frames.height; ++y) {
      uint8_t* row = frame->data[0] + y * frame->linesize[0];
      for (int64_t x = 0; x < frames.width; ++x) {
        const int64_t i = y * frames.width + x;
        row[x] = frames.channels == 1
                     ? source[i]
                     : palette.index(source[i], source[plane + i], source[2 * plane + i]);
      }
    }
    palette.write(reinterpret_cast<uint32_t*>(frame->data[1]));
  };
  run_encode(job);
}

void encode_gif(const std::string& path, const Tensor& frames, double fps) {
  encode_gif(path, frames_from_tensor(frames), fps);
}

}  // namespace stgnn
