// Still images (PNG, JPEG and whatever else stb_image reads) and a small RGB canvas for
// figures: contact sheets, boxes, graphs drawn over frames, text labels.
//
// Tensors hold images as [C, H, W] float in [0, 1]; ImageU8 and Canvas hold interleaved
// bytes, rows top to bottom: pixels[(y * width + x) * channels + c]. Errors: IoError when a
// file cannot be read or written, FormatError when its content is not a readable image,
// ShapeError/ValueError for bad arguments; messages name the file.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "autograd/tensor.h"

namespace stgnn {

struct ImageU8 {
  int width = 0;
  int height = 0;
  int channels = 0;             // 1 gray, 2 gray+alpha, 3 RGB, 4 RGBA
  std::vector<uint8_t> pixels;  // [H, W, C] interleaved

  // [C, H, W] float, pixel / 255.
  Tensor to_tensor() const;
};

// image: [C, H, W] (C in 1..4) or [H, W] (gray) float; values are clamped to [0, 1] and
// rounded to bytes.
ImageU8 image_from_tensor(const Tensor& image);

// Reads an image file and converts it to `channels` (1..4) channels the way stb_image does
// (RGB to gray by luma, gray to RGB by repetition, alpha added as opaque or dropped).
ImageU8 read_image_u8(const std::string& path, int channels = 3);
// The same from an encoded image in memory; `name` stands for the file in messages.
ImageU8 decode_image_u8(const uint8_t* data, size_t size, const std::string& name,
                        int channels = 3);
// [C, H, W] float in [0, 1].
Tensor read_image(const std::string& path, int channels = 3);

// image: [C, H, W] float (C in 1..4) or ImageU8 (C in 1..4).
void write_png(const std::string& path, const Tensor& image);
void write_png(const std::string& path, const ImageU8& image);
// quality 1..100; JPEG has no alpha, so 2 and 4 channels lose theirs.
void write_jpeg(const std::string& path, const Tensor& image, int quality = 90);
void write_jpeg(const std::string& path, const ImageU8& image, int quality = 90);

struct Color {
  uint8_t r = 0;
  uint8_t g = 0;
  uint8_t b = 0;
};

// An RGB picture to draw on. Coordinates are pixel indices: x is the column, y the row, and
// pixel (x, y) covers the unit square centred on (x, y). Everything is clipped to the canvas,
// so any coordinates are safe.
struct Canvas {
  int h = 0;
  int w = 0;
  std::vector<uint8_t> rgb;  // [h, w, 3] interleaved

  Canvas() = default;
  // Throws ValueError unless 0 <= height, width <= 32768.
  Canvas(int height, int width, Color background = {});

  // The colour at (x, y); ValueError outside the canvas.
  Color pixel(int x, int y) const;
  // Writes (x, y) when it lies on the canvas.
  void set_pixel(int x, int y, Color color);
  // Mixes `color` into (x, y) with weight alpha in [0, 1].
  void blend_pixel(int x, int y, Color color, float alpha);

  // The rectangle of `width` x `height` pixels whose top-left pixel is (x, y).
  void fill_rect(int x, int y, int width, int height, Color color);
  // Its outline, `thickness` pixels wide, drawn inside the rectangle.
  void draw_rect(int x, int y, int width, int height, Color color, int thickness = 1);
  // A segment with round ends, `thickness` pixels wide; antialias blends the edge pixels by
  // their coverage, otherwise a pixel is set when its centre lies within thickness / 2.
  void draw_line(float x0, float y0, float x1, float y1, Color color, float thickness = 1,
                 bool antialias = false);
  // Draws frame [C, H, W] (C = 1 gray or 3 RGB; float in [0, 1], clamped) with its top-left
  // pixel at (x, y), each pixel as a scale x scale block.
  void blit(const Tensor& frame, int x, int y, int scale = 1);
  // The same for bytes [C, H, W], e.g. frame t of a FramesU8:
  // frames.pixels.data() + t * C * H * W.
  void blit(const uint8_t* planes, int channels, int height, int width, int x, int y,
            int scale = 1);
  // Writes ASCII `text` (stb_easy_font glyphs, about 6 x 12 pixels per character at scale 1;
  // '\n' starts a new line; other characters outside 32..126 show as '?') with its top-left
  // corner at (x, y). Returns text_width(text, scale).
  int draw_text(int x, int y, const std::string& text, Color color, int scale = 1);

  ImageU8 image() const;
};

// Size in pixels of `text` as draw_text draws it (12 pixels a line at scale 1).
// scale must be in 1..32768 (ValueError), here and in draw_text.
int text_width(const std::string& text, int scale = 1);
int text_height(const std::string& text, int scale = 1);

void write_png(const std::string& path, const Canvas& canvas);

}  // namespace stgnn
