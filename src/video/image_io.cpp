#include "video/image_io.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <memory>

#include <stb/stb_image.h>
#include <stb/stb_image_write.h>
// stb_easy_font is header-only with static functions; not all of them are used here.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#include <stb/stb_easy_font.h>
#pragma GCC diagnostic pop

namespace stgnn {
namespace {

constexpr int kMaxImageSide = 32768;
constexpr int64_t kMaxImageBytes = int64_t{1} << 31;  // decoded pixels and encoded files

std::string image_prefix(const std::string& name) {
  return "image '" + name + "': ";
}

struct FileCloser {
  void operator()(std::FILE* file) const { std::fclose(file); }
};
using FilePtr = std::unique_ptr<std::FILE, FileCloser>;

std::vector<uint8_t> read_file(const std::string& path) {
  errno = 0;
  FilePtr file(std::fopen(path.c_str(), "rb"));
  if (!file) throw IoError(image_prefix(path) + "cannot open: " + std::strerror(errno));
  std::vector<uint8_t> bytes;
  uint8_t chunk[1 << 16];
  for (;;) {
    const size_t got = std::fread(chunk, 1, sizeof(chunk), file.get());
    if (got > 0) {
      if (static_cast<int64_t>(bytes.size() + got) > kMaxImageBytes) {
        throw FormatError(image_prefix(path) + "file is larger than " +
                          std::to_string(kMaxImageBytes) + " bytes");
      }
      bytes.insert(bytes.end(), chunk, chunk + got);
    }
    if (got < sizeof(chunk)) break;
  }
  if (std::ferror(file.get())) throw IoError(image_prefix(path) + "read error");
  return bytes;
}

void write_file(const std::string& path, const std::vector<uint8_t>& bytes) {
  errno = 0;
  FilePtr file(std::fopen(path.c_str(), "wb"));
  if (!file) throw IoError(image_prefix(path) + "cannot create: " + std::strerror(errno));
  const bool written = std::fwrite(bytes.data(), 1, bytes.size(), file.get()) == bytes.size();
  const bool closed = std::fclose(file.release()) == 0;
  if (!written || !closed) {
    const std::string reason = std::strerror(errno);
    std::remove(path.c_str());
    throw IoError(image_prefix(path) + "write error: " + reason);
  }
}

void check_channels(const std::string& name, int channels) {
  if (channels < 1 || channels > 4) {
    throw ValueError(image_prefix(name) + "channels " + std::to_string(channels) +
                     " must be in 1..4");
  }
}

void check_image(const std::string& path, const ImageU8& image) {
  check_channels(path, image.channels);
  if (image.width < 1 || image.height < 1 || image.width > kMaxImageSide ||
      image.height > kMaxImageSide ||
      static_cast<int64_t>(image.pixels.size()) !=
          int64_t{image.width} * image.height * image.channels) {
    throw ShapeError(image_prefix(path) + "image " + std::to_string(image.height) + "x" +
                     std::to_string(image.width) + "x" + std::to_string(image.channels) +
                     " (1 <= H, W <= " + std::to_string(kMaxImageSide) + ") needs " +
                     std::to_string(int64_t{image.width} * image.height * image.channels) +
                     " bytes, have " + std::to_string(image.pixels.size()));
  }
}

void append_bytes(void* context, void* data, int size) {
  auto* out = static_cast<std::vector<uint8_t>*>(context);
  const auto* bytes = static_cast<const uint8_t*>(data);
  if (size > 0) out->insert(out->end(), bytes, bytes + size);
}

uint8_t to_byte(float value) {
  // NaN compares false both ways and ends at 0.
  const float v = value > 0.0f ? std::min(value, 1.0f) : 0.0f;
  return static_cast<uint8_t>(std::lround(v * 255.0f));
}

}  // namespace

Tensor ImageU8::to_tensor() const {
  if (width < 0 || height < 0 || channels < 0 ||
      static_cast<int64_t>(pixels.size()) != int64_t{width} * height * channels) {
    throw ShapeError("ImageU8::to_tensor: " + std::to_string(height) + "x" + std::to_string(width) +
                     "x" + std::to_string(channels) + " image has " +
                     std::to_string(pixels.size()) + " bytes");
  }
  Tensor out = Tensor::empty({channels, height, width});
  float* data = out.data();
  const int64_t plane = int64_t{height} * width;
  for (int64_t i = 0; i < plane; ++i) {
    for (int c = 0; c < channels; ++c) {
      data[c * plane + i] = static_cast<float>(pixels[i * channels + c]) / 255.0f;
    }
  }
  return out;
}

ImageU8 image_from_tensor(const Tensor& image) {
  if (!image.defined() || (image.dim() != 2 && image.dim() != 3) ||
      (image.dim() == 3 && (image.size(0) < 1 || image.size(0) > 4))) {
    throw ShapeError("image_from_tensor: expected [C,H,W] with C in 1..4 or [H,W], got " +
                     (image.defined() ? shape_str(image.shape()) : std::string("undefined")));
  }
  const int64_t channels = image.dim() == 3 ? image.size(0) : 1;
  const int64_t height = image.size(-2);
  const int64_t width = image.size(-1);
  if (height > kMaxImageSide || width > kMaxImageSide) {
    throw ShapeError("image_from_tensor: " + shape_str(image.shape()) + " exceeds " +
                     std::to_string(kMaxImageSide) + " pixels a side");
  }
  ImageU8 out;
  out.channels = static_cast<int>(channels);
  out.height = static_cast<int>(height);
  out.width = static_cast<int>(width);
  out.pixels.resize(static_cast<size_t>(channels * height * width));
  const float* data = image.data();
  const int64_t plane = height * width;
  for (int64_t i = 0; i < plane; ++i) {
    for (int64_t c = 0; c < channels; ++c)
      out.pixels[i * channels + c] = to_byte(data[c * plane + i]);
  }
  return out;
}

ImageU8 decode_image_u8(const uint8_t* data, size_t size, const std::string& name, int channels) {
  check_channels(name, channels);
  if (size > static_cast<size_t>(std::numeric_limits<int>::max())) {
    throw FormatError(image_prefix(name) + "encoded image is larger than 2 GiB");
  }
  const int length = static_cast<int>(size);
  int width = 0;
  int height = 0;
  int file_channels = 0;
  if (!data || length == 0 ||
      !stbi_info_from_memory(data, length, &width, &height, &file_channels)) {
    throw FormatError(image_prefix(name) + "not a readable image: " +
                      (length == 0 ? "empty file" : stbi_failure_reason()));
  }
  if (width < 1 || height < 1 || width > kMaxImageSide || height > kMaxImageSide ||
      int64_t{width} * height * channels > kMaxImageBytes) {
    throw FormatError(image_prefix(name) + "implausible size " + std::to_string(width) + "x" +
                      std::to_string(height));
  }
  int got_width = 0;
  int got_height = 0;
  int ignored = 0;
  std::unique_ptr<stbi_uc, void (*)(void*)> pixels(
      stbi_load_from_memory(data, length, &got_width, &got_height, &ignored, channels),
      stbi_image_free);
  if (!pixels) {
    throw FormatError(image_prefix(name) + "cannot decode: " + stbi_failure_reason());
  }
  if (got_width != width || got_height != height) {
    throw FormatError(image_prefix(name) + "header says " + std::to_string(width) + "x" +
                      std::to_string(height) + " but decoded " + std::to_string(got_width) + "x" +
                      std::to_string(got_height));
  }
  ImageU8 out;
  out.width = width;
  out.height = height;
  out.channels = channels;
  out.pixels.assign(pixels.get(), pixels.get() + int64_t{width} * height * channels);
  return out;
}

ImageU8 read_image_u8(const std::string& path, int channels) {
  check_channels(path, channels);
  const std::vector<uint8_t> bytes = read_file(path);
  return decode_image_u8(bytes.data(), bytes.size(), path, channels);
}

Tensor read_image(const std::string& path, int channels) {
  return read_image_u8(path, channels).to_tensor();
}

void write_png(const std::string& path, const ImageU8& image) {
  check_image(path, image);
  std::vector<uint8_t> encoded;
  if (!stbi_write_png_to_func(append_bytes, &encoded, image.width, image.height, image.channels,
                              image.pixels.data(), image.width * image.channels)) {
    throw FormatError(image_prefix(path) + "PNG encoding failed");
  }
  write_file(path, encoded);
}

void write_png(const std::string& path, const Tensor& image) {
  write_png(path, image_from_tensor(image));
}

void write_jpeg(const std::string& path, const ImageU8& image, int quality) {
  check_image(path, image);
  if (quality < 1 || quality > 100) {
    throw ValueError(image_prefix(path) + "JPEG quality " + std::to_string(quality) +
                     " must be in 1..100");
  }
  std::vector<uint8_t> encoded;
  if (!stbi_write_jpg_to_func(append_bytes, &encoded, image.width, image.height, image.channels,
                              image.pixels.data(), quality)) {
    throw FormatError(image_prefix(path) + "JPEG encoding failed");
  }
  write_file(path, encoded);
}

void write_jpeg(const std::string& path, const Tensor& image, int quality) {
  write_jpeg(path, image_from_tensor(image), quality);
}

// ---- Canvas ----

Canvas::Canvas(int height, int width, Color background) {
  if (height < 0 || width < 0 || height > kMaxImageSide || width > kMaxImageSide) {
    throw ValueError("Canvas: size " + std::to_string(height) + "x" + std::to_string(width) +
                     " must be within 0..." + std::to_string(kMaxImageSide));
  }
  h = height;
  w = width;
  rgb.resize(static_cast<size_t>(h) * w * 3);
  for (size_t i = 0; i < rgb.size(); i += 3) {
    rgb[i] = background.r;
    rgb[i + 1] = background.g;
    rgb[i + 2] = background.b;
  }
}

Color Canvas::pixel(int x, int y) const {
  if (x < 0 || y < 0 || x >= w || y >= h) {
    throw ValueError("Canvas::pixel: (" + std::to_string(x) + ", " + std::to_string(y) +
                     ") lies outside the " + std::to_string(w) + "x" + std::to_string(h) +
                     " canvas");
  }
  const size_t i = (static_cast<size_t>(y) * w + x) * 3;
  return {rgb[i], rgb[i + 1], rgb[i + 2]};
}

void Canvas::set_pixel(int x, int y, Color color) {
  if (x < 0 || y < 0 || x >= w || y >= h) return;
  const size_t i = (static_cast<size_t>(y) * w + x) * 3;
  rgb[i] = color.r;
  rgb[i + 1] = color.g;
  rgb[i + 2] = color.b;
}

void Canvas::blend_pixel(int x, int y, Color color, float alpha) {
  if (x < 0 || y < 0 || x >= w || y >= h || !(alpha > 0.0f)) return;
  const float a = std::min(alpha, 1.0f);
  const size_t i = (static_cast<size_t>(y) * w + x) * 3;
  const uint8_t source[3] = {color.r, color.g, color.b};
  for (int c = 0; c < 3; ++c) {
    const float mixed = (1.0f - a) * rgb[i + c] + a * source[c];
    rgb[i + c] = static_cast<uint8_t>(std::lround(std::min(255.0f, std::max(0.0f, mixed))));
  }
}

void Canvas::fill_rect(int x, int y, int width, int height, Color color) {
  // 64-bit so that x + width cannot overflow.
  const int64_t x0 = std::max<int64_t>(x, 0);
  const int64_t y0 = std::max<int64_t>(y, 0);
  const int64_t x1 = std::min<int64_t>(int64_t{x} + std::max(width, 0), w);
  const int64_t y1 = std::min<int64_t>(int64_t{y} + std::max(height, 0), h);
  for (int64_t yy = y0; yy < y1; ++yy) {
    for (int64_t xx = x0; xx < x1; ++xx)
      set_pixel(static_cast<int>(xx), static_cast<int>(yy), color);
  }
}

void Canvas::draw_rect(int x, int y, int width, int height, Color color, int thickness) {
  if (width <= 0 || height <= 0 || thickness <= 0) return;
  if (2 * int64_t{thickness} >= width || 2 * int64_t{thickness} >= height) {
    fill_rect(x, y, width, height, color);
    return;
  }
  fill_rect(x, y, width, thickness, color);
  fill_rect(x, static_cast<int>(int64_t{y} + height - thickness), width, thickness, color);
  fill_rect(x, y + thickness, thickness, height - 2 * thickness, color);
  fill_rect(static_cast<int>(int64_t{x} + width - thickness), y + thickness, thickness,
            height - 2 * thickness, color);
}

void Canvas::draw_line(float x0, float y0, float x1, float y1, Color color, float thickness,
                       bool antialias) {
  if (!std::isfinite(x0) || !std::isfinite(y0) || !std::isfinite(x1) || !std::isfinite(y1) ||
      !std::isfinite(thickness) || thickness <= 0) {
    throw ValueError("Canvas::draw_line: coordinates and thickness must be finite, thickness > 0");
  }
  const double radius = 0.5 * thickness;
  const double margin = radius + 1.0;
  // The segment's bounding box, clipped before converting to int.
  const double left = std::max(0.0, std::floor(std::min(x0, x1) - margin));
  const double right = std::min(static_cast<double>(w) - 1, std::ceil(std::max(x0, x1) + margin));
  const double top = std::max(0.0, std::floor(std::min(y0, y1) - margin));
  const double bottom = std::min(static_cast<double>(h) - 1, std::ceil(std::max(y0, y1) + margin));
  if (left > right || top > bottom) return;
  const double dx = static_cast<double>(x1) - x0;
  const double dy = static_cast<double>(y1) - y0;
  const double length2 = dx * dx + dy * dy;
  for (int y = static_cast<int>(top); y <= static_cast<int>(bottom); ++y) {
    for (int x = static_cast<int>(left); x <= static_cast<int>(right); ++x) {
      // Distance from the pixel centre to the closest point of the segment.
      double s = length2 > 0 ? ((x - x0) * dx + (y - y0) * dy) / length2 : 0.0;
      s = std::min(1.0, std::max(0.0, s));
      const double ex = x - (x0 + s * dx);
      const double ey = y - (y0 + s * dy);
      const double distance = std::sqrt(ex * ex + ey * ey);
      if (antialias) {
        const double coverage = radius + 0.5 - distance;
        if (coverage > 0) blend_pixel(x, y, color, static_cast<float>(std::min(1.0, coverage)));
      } else if (distance <= radius + 1e-9) {
        set_pixel(x, y, color);
      }
    }
  }
}

void Canvas::blit(const uint8_t* planes, int channels, int height, int width, int x, int y,
                  int scale) {
  if (channels != 1 && channels != 3) {
    throw ValueError("Canvas::blit: channels " + std::to_string(channels) + " must be 1 or 3");
  }
  if (height < 0 || width < 0 || scale < 1) {
    throw ValueError("Canvas::blit: size " + std::to_string(height) + "x" + std::to_string(width) +
                     " and scale " + std::to_string(scale) + " must be non-negative and >= 1");
  }
  if (height == 0 || width == 0) return;
  if (!planes) throw ValueError("Canvas::blit: null pixel pointer");
  const int64_t plane = int64_t{height} * width;
  // Only destination pixels on the canvas are visited.
  const int64_t x0 = std::max<int64_t>(0, x);
  const int64_t y0 = std::max<int64_t>(0, y);
  const int64_t x1 = std::min<int64_t>(w, int64_t{x} + int64_t{width} * scale);
  const int64_t y1 = std::min<int64_t>(h, int64_t{y} + int64_t{height} * scale);
  for (int64_t dy = y0; dy < y1; ++dy) {
    const int64_t sy = (dy - y) / scale;
    for (int64_t dx = x0; dx < x1; ++dx) {
      const int64_t i = sy * width + (dx - x) / scale;
      const uint8_t r = planes[i];
      const uint8_t g = channels == 3 ? planes[plane + i] : r;
      const uint8_t b = channels == 3 ? planes[2 * plane + i] : r;
      set_pixel(static_cast<int>(dx), static_cast<int>(dy), {r, g, b});
    }
  }
}

void Canvas::blit(const Tensor& frame, int x, int y, int scale) {
  if (!frame.defined() || frame.dim() != 3 || (frame.size(0) != 1 && frame.size(0) != 3) ||
      frame.size(1) > kMaxImageSide || frame.size(2) > kMaxImageSide) {
    throw ShapeError("Canvas::blit: expected a frame [C,H,W] with C in {1,3}, got " +
                     (frame.defined() ? shape_str(frame.shape()) : std::string("undefined")));
  }
  std::vector<uint8_t> bytes(static_cast<size_t>(frame.numel()));
  const float* data = frame.data();
  for (size_t i = 0; i < bytes.size(); ++i)
    bytes[i] = to_byte(data[i]);
  blit(bytes.data(), static_cast<int>(frame.size(0)), static_cast<int>(frame.size(1)),
       static_cast<int>(frame.size(2)), x, y, scale);
}

namespace {

// stb_easy_font reads a glyph table indexed by (character - 32) without bounds checks.
std::vector<char> printable(const std::string& text) {
  std::vector<char> out(text.begin(), text.end());
  for (char& c : out) {
    if (c != '\n' && (c < 32 || c > 126)) c = '?';
  }
  out.push_back('\0');
  return out;
}

void check_text_scale(const char* what, int scale) {
  if (scale < 1 || scale > kMaxImageSide) {
    throw ValueError(std::string(what) + ": scale " + std::to_string(scale) + " must be in 1.." +
                     std::to_string(kMaxImageSide));
  }
}

}  // namespace

int text_width(const std::string& text, int scale) {
  check_text_scale("text_width", scale);
  std::vector<char> chars = printable(text);
  return static_cast<int>(std::min<int64_t>(int64_t{stb_easy_font_width(chars.data())} * scale,
                                            std::numeric_limits<int>::max()));
}

int text_height(const std::string& text, int scale) {
  check_text_scale("text_height", scale);
  std::vector<char> chars = printable(text);
  return static_cast<int>(std::min<int64_t>(int64_t{stb_easy_font_height(chars.data())} * scale,
                                            std::numeric_limits<int>::max()));
}

int Canvas::draw_text(int x, int y, const std::string& text, Color color, int scale) {
  check_text_scale("Canvas::draw_text", scale);
  std::vector<char> chars = printable(text);
  // Each glyph takes at most a few dozen quads of 4 vertices x 16 bytes.
  std::vector<float> vertices(chars.size() * 64 * 16);
  const int quads = stb_easy_font_print(0, 0, chars.data(), nullptr, vertices.data(),
                                        static_cast<int>(vertices.size() * sizeof(float)));
  for (int q = 0; q < quads; ++q) {
    const float* v = vertices.data() + q * 16;  // 4 vertices of 4 floats (x, y, z, colour)
    float min_x = v[0], max_x = v[0], min_y = v[1], max_y = v[1];
    for (int k = 1; k < 4; ++k) {
      min_x = std::min(min_x, v[4 * k]);
      max_x = std::max(max_x, v[4 * k]);
      min_y = std::min(min_y, v[4 * k + 1]);
      max_y = std::max(max_y, v[4 * k + 1]);
    }
    const int64_t qx = int64_t{x} + std::lround(min_x) * scale;
    const int64_t qy = int64_t{y} + std::lround(min_y) * scale;
    const int64_t qw = std::lround(max_x - min_x) * scale;
    const int64_t qh = std::lround(max_y - min_y) * scale;
    // Clip in 64 bits before narrowing to int.
    const int64_t x0 = std::max<int64_t>(qx, 0);
    const int64_t y0 = std::max<int64_t>(qy, 0);
    const int64_t x1 = std::min<int64_t>(qx + qw, w);
    const int64_t y1 = std::min<int64_t>(qy + qh, h);
    if (x0 >= x1 || y0 >= y1) continue;
    fill_rect(static_cast<int>(x0), static_cast<int>(y0), static_cast<int>(x1 - x0),
              static_cast<int>(y1 - y0), color);
  }
  return text_width(text, scale);
}

ImageU8 Canvas::image() const {
  ImageU8 out;
  out.width = w;
  out.height = h;
  out.channels = 3;
  out.pixels = rgb;
  return out;
}

void write_png(const std::string& path, const Canvas& canvas) {
  write_png(path, canvas.image());
}

}  // namespace stgnn
