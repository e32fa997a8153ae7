// Pictures: upscaled frames, contact sheets, SyncMNIST samples (PNG + mp4 + GIF + text, named
// with truth and prediction), RSTG attention drawings, and the training-curve SVG. Every file
// is decoded back (read_image for PNG, VideoReader for mp4 / GIF) and its size checked.
#include <doctest/doctest.h>
#include <unistd.h>

#include <filesystem>
#include <string>

#include "autograd/atomic_file.h"
#include "autograd/error.h"
#include "autograd/ops.h"
#include "common/pictures.h"
#include "common/run_dir.h"
#include "support/synthetic_digits.h"
#include "video/image_io.h"
#include "video/video_io.h"

using namespace stgnn;
using namespace stgnn::experiments;
namespace fs = std::filesystem;

namespace {

struct TempDir {
  fs::path path;
  explicit TempDir(const std::string& tag) {
    static int counter = 0;
    path = fs::temp_directory_path() /
           ("stgnn_" + tag + "_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() {
    std::error_code ignored;
    fs::remove_all(path, ignored);
  }
  std::string operator/(const std::string& name) const { return (path / name).string(); }
};

// Frames [T, C, H, W] whose pixel value encodes (t, c, y, x).
FramesU8 pattern_frames(int64_t t, int64_t c, int64_t h, int64_t w) {
  FramesU8 f;
  f.count = t;
  f.channels = c;
  f.height = h;
  f.width = w;
  for (int64_t i = 0; i < t * c * h * w; ++i)
    f.pixels.push_back(static_cast<uint8_t>((i * 37) % 251));
  return f;
}

struct Decoded {
  int64_t frames, width, height;
};

Decoded decode_video(const std::string& path) {
  VideoReader reader(path);
  const FramesU8 all = reader.read_all_u8();
  return {all.count, all.width, all.height};
}

bool has_color_near(const ImageU8& image, Color c, int tolerance = 8) {
  for (size_t i = 0; i + 2 < image.pixels.size(); i += 3) {
    if (std::abs(image.pixels[i] - c.r) <= tolerance &&
        std::abs(image.pixels[i + 1] - c.g) <= tolerance &&
        std::abs(image.pixels[i + 2] - c.b) <= tolerance)
      return true;
  }
  return false;
}

// A model small enough to run in a test: 22x22 frames, 2 conv blocks -> a 4x4 map, 14 nodes.
RstgConfig small_config(RstgVariant variant) {
  RstgConfig c;
  c.variant = variant;
  c.image_size = 22;
  c.backbone_channels = {3, 4};
  c.node_dim = 5;
  c.stages = 2;
  c.classes = 6;
  return c;
}

}  // namespace

TEST_CASE("upscale_frames repeats every pixel in a block; frames_from_canvases interleaves") {
  const FramesU8 f = pattern_frames(2, 3, 4, 5);
  const FramesU8 big = upscale_frames(f, 3);
  CHECK(big.shape() == Shape{2, 3, 12, 15});
  for (int64_t p = 0; p < 6; ++p) {
    for (int64_t y = 0; y < 12; ++y) {
      for (int64_t x = 0; x < 15; ++x)
        REQUIRE(big.pixels[static_cast<size_t>((p * 12 + y) * 15 + x)] ==
                f.pixels[static_cast<size_t>((p * 4 + y / 3) * 5 + x / 3)]);
    }
  }
  CHECK_THROWS_AS(upscale_frames(f, 0), ValueError);
  FramesU8 torn = f;
  torn.pixels.pop_back();
  CHECK_THROWS_AS(upscale_frames(torn, 2), ShapeError);

  Canvas a(2, 3, {10, 20, 30}), b(2, 3, {40, 50, 60});
  const FramesU8 planes = frames_from_canvases({a, b});
  CHECK(planes.shape() == Shape{2, 3, 2, 3});
  CHECK(planes.pixels[0] == 10);
  CHECK(planes.pixels[6] == 20);
  CHECK(planes.pixels[12] == 30);
  CHECK(planes.pixels[18] == 40);
  CHECK_THROWS_AS(frames_from_canvases({a, Canvas(3, 3)}), ValueError);
  CHECK_THROWS_AS(frames_from_canvases({}), ValueError);
}

TEST_CASE("contact_sheet: the documented size, frames in place, boxes clipped to their frame") {
  const FramesU8 f = pattern_frames(5, 1, 6, 7);
  FrameBox box;
  box.x = 5;  // reaches past the frame's right edge: clipped there
  box.y = 1;
  box.width = box.height = 4;
  box.color = {0, 255, 0};
  box.label = "7";
  std::vector<std::vector<FrameBox>> boxes(5);
  boxes[1].push_back(box);
  const Canvas sheet = contact_sheet(f, 2, 3, boxes, "one\ntwo");
  CHECK(sheet.w == 3 * (7 * 2 + 8) + 8);
  CHECK(sheet.h == 8 + (text_height("one\ntwo") + 8) + 2 * (6 * 2 + 22));
  // Frame 0's pixel (x=1, y=2) at scale 2, below the caption.
  const int top = 8 + text_height("one\ntwo") + 8;
  const uint8_t v = f.pixels[2 * 7 + 1];
  CHECK(sheet.pixel(8 + 2, top + 4).r == v);
  // The box of frame 1 is drawn within frame 1 only.
  const int frame1_x = 8 + (7 * 2 + 8);
  CHECK(sheet.pixel(frame1_x + 13, top + 2).g == 255);   // its top border, clipped at x = 13
  CHECK(sheet.pixel(frame1_x + 14, top + 2).g != 255);   // the gap between frames
  CHECK(sheet.pixel(frame1_x + 13, top + 10).g != 255);  // below the box
  CHECK_THROWS_AS(contact_sheet(f, 2, 3, std::vector<std::vector<FrameBox>>(2), ""), ValueError);
  CHECK_THROWS_AS(contact_sheet(f, 0, 3, {}, ""), ValueError);
}

TEST_CASE("SyncMNIST samples: PNG sheet, mp4 and GIF upscaled, a sidecar; names carry labels") {
  TempDir dir("samples");
  const DigitSet pool = testing::synthetic_pool(3);
  SyncMnistOptions options;
  const SyncBatch batch = generate_batch(pool, 5, 0, 2, options);
  for (int64_t i = 0; i < 2; ++i) {
    const int label = batch.labels[static_cast<size_t>(i)];
    const SampleFiles none = save_syncmnist_sample(dir / "samples", batch, i, 7 + i, options, {});
    const std::string stem =
        "sample_00" + std::to_string(7 + i) + "_true-" + sync_label_slug(label) + "_pred-none";
    CHECK(fs::path(none.png).filename() == stem + ".png");
    CHECK(fs::path(none.mp4).filename() == stem + ".mp4");
    CHECK(fs::path(none.gif).filename() == stem + ".gif");
    CHECK(fs::path(none.txt).filename() == stem + ".txt");
    const ImageU8 png = read_image_u8(none.png);
    CHECK(png.width == 5 * (64 * 4 + 8) + 8);
    CHECK(png.height == 8 + text_height("a\nb\nc", 2) + 8 + 2 * (64 * 4 + 22));
    CHECK(has_color_near(png, {60, 230, 60}));   // the synchronised pair's boxes
    CHECK(has_color_near(png, {255, 150, 30}));  // the third digit's
    const Decoded mp4 = decode_video(none.mp4);
    CHECK(mp4.frames == 10);
    CHECK(mp4.width == 256);
    CHECK(mp4.height == 256);
    const Decoded gif = decode_video(none.gif);
    CHECK(gif.frames == 10);
    CHECK(gif.width == 256);
    CHECK(gif.height == 256);
    const std::string txt = read_file(none.txt);
    CHECK(txt.find("label: " + std::to_string(label) + " " + sync_label_text(label)) !=
          std::string::npos);
    CHECK(txt.find("prediction: none") != std::string::npos);
    CHECK(txt.find("frame 9:") != std::string::npos);
  }
  // With a prediction: its pair in the name, its probability in the sidecar.
  const SampleFiles predicted =
      save_syncmnist_sample(dir / "samples", batch, 0, 3, options, {pair_class(2, 7), 0.875f});
  CHECK(fs::path(predicted.png).filename().string().find("_pred-2-7.png") != std::string::npos);
  CHECK(read_file(predicted.txt).find("(2,7) probability 0.875") != std::string::npos);
  CHECK(sync_label_text(kNoSyncClass) == "none");
  CHECK(sync_label_text(pair_class(3, 1)) == "(1,3)");
  CHECK_THROWS_AS(save_syncmnist_sample(dir / "samples", batch, 2, 0, options, {}), ValueError);
}

TEST_CASE("attention pictures: a PNG per frame and a GIF, region graph and edges drawn") {
  TempDir dir("attention");
  Rng rng(4);
  Rstg model(small_config(RstgVariant::kAllTempStages), rng);
  model.eval();
  model.record_attention = true;
  const Tensor video = rand_uniform({1, 3, 1, 22, 22}, rng, 0.0f, 1.0f);
  {
    NoGradGuard no_grad;
    model.forward(video);
  }
  const FramesU8 frames = frames_from_tensor(video.reshape({3, 1, 22, 22}));
  AttentionPictureOptions options;
  options.scale = 8;
  options.top_edges = 10;
  const std::vector<std::string> files = save_attention_pictures(
      dir / "attention", "video_0001_true-1-2_pred-3-4", frames, model, options, {"caption"});
  REQUIRE(files.size() == 4);
  for (int t = 0; t < 3; ++t) {
    CHECK(fs::path(files[static_cast<size_t>(t)]).filename() ==
          "video_0001_true-1-2_pred-3-4_frame_0" + std::to_string(t) + ".png");
    const ImageU8 png = read_image_u8(files[static_cast<size_t>(t)]);
    CHECK(png.width >= 22 * 8 + 16);
    CHECK(png.height > 22 * 8);
    CHECK(has_color_near(png, {255, 60, 60}, 2));   // edges
    CHECK(has_color_near(png, {0, 200, 255}, 2));   // 3x3 grid
    CHECK(has_color_near(png, {255, 70, 220}, 2));  // 2x2 grid
    CHECK(has_color_near(png, {255, 225, 0}, 2));   // 1x1 grid
  }
  const ImageU8 first = read_image_u8(files[0]);
  const Decoded gif = decode_video(files[3]);
  CHECK(gif.frames == 3);
  CHECK(gif.width == first.width);
  CHECK(gif.height == first.height);

  // Means over stages, or one stage; every node's incoming weights sum to one.
  const auto mean = attention_per_frame(model, -1);
  const auto stage1 = attention_per_frame(model, 1);
  REQUIRE(mean.size() == 3);
  CHECK(stage1[2] == model.last_attention[2][1]);
  std::vector<double> per_node(static_cast<size_t>(model.frame_graph().num_nodes()), 0.0);
  for (int64_t e = 0; e < model.frame_graph().num_edges(); ++e)
    per_node[static_cast<size_t>(model.frame_graph().dst()[static_cast<size_t>(e)])] +=
        mean[1][static_cast<size_t>(e)];
  for (double total : per_node)
    CHECK(total == doctest::Approx(1.0));
  CHECK_THROWS_AS(attention_per_frame(model, 2), ValueError);
  FramesU8 two = frames;
  two.count = 2;
  two.pixels.resize(2 * 22 * 22);
  CHECK_THROWS_AS(save_attention_pictures(dir / "attention", "x", two, model, options, {}),
                  ValueError);
}

TEST_CASE("attention is recorded for every frame by the variants that batch frames together") {
  for (RstgVariant v :
       {RstgVariant::kSpaceOnly, RstgVariant::kOneTempStage, RstgVariant::kHomogeneous}) {
    Rng rng(6);
    Rstg model(small_config(v), rng);
    model.record_attention = true;
    const Tensor video = rand_uniform({2, 4, 1, 22, 22}, rng, 0.0f, 1.0f);
    model.forward(video);
    INFO(rstg_variant_name(v));
    REQUIRE(model.last_attention.size() == 4);
    // Frame t of video 0 is what the model sees when given that frame alone, for the
    // space-only variant (frames do not interact there).
    if (v == RstgVariant::kSpaceOnly) {
      model.eval();
      const auto batched = model.last_attention;
      model.forward(video);
      const auto eval_all = model.last_attention;
      Tensor frame2 = slice(slice(video, 0, 0, 1), 1, 2, 3);
      model.forward(frame2);
      REQUIRE(model.last_attention.size() == 1);
      for (size_t e = 0; e < eval_all[2][1].size(); ++e)
        CHECK(model.last_attention[0][1][e] == doctest::Approx(eval_all[2][1][e]).epsilon(1e-4));
      CHECK(batched[3][0].size() == static_cast<size_t>(model.frame_graph().num_edges()));
    }
  }
  Rstg time_only(small_config(RstgVariant::kTimeOnly));
  time_only.record_attention = true;
  time_only.forward(Tensor::zeros({1, 2, 1, 22, 22}));
  CHECK_THROWS_WITH_AS(attention_per_frame(time_only, -1),
                       doctest::Contains("'time-only' recorded no attention"), ValueError);
}

TEST_CASE("curves.svg: escaped title, markers, round ticks") {
  std::vector<EpochMetrics> rows;
  for (int e = 1; e <= 3; ++e) {
    EpochMetrics r;
    r.epoch = e;
    r.train_loss = 2.0 / e;
    r.val_loss = 2.2 / e;
    r.train_acc = 0.3 * e;
    r.val_acc = 0.25 * e;
    rows.push_back(r);
  }
  const std::string svg = render_curves_svg(rows, "runs/a&b <c>");
  CHECK(svg.find("runs/a&amp;b &lt;c&gt;") != std::string::npos);
  CHECK(svg.find("a&b") == std::string::npos);
  CHECK(svg.find("<circle") != std::string::npos);
  // Accuracy 25..90% gets ticks every 20 from 20 to 100; loss 0.67..2.2 every 0.5.
  for (const char* tick : {">20</text>", ">40</text>", ">100</text>", ">0.5</text>", ">2.5</text>"})
    CHECK(svg.find(tick) != std::string::npos);
  CHECK(svg.find(">0.667") == std::string::npos);
  // One epoch still draws its points.
  const std::string one = render_curves_svg({rows[0]}, "x");
  CHECK(one.find("<circle") != std::string::npos);
}

TEST_CASE("keystep timeline: documented size, truth and predicted strips by label, legend") {
  KeystepTimeline t;
  t.title = "take demo";
  t.label_names = {"Stir the mixture", "Add the tube, then check it", "Cut the wheel"};
  // Out of temporal order on purpose; a gap between 4 s and 5 s; one unannotated segment.
  t.segments = {{5.0, 9.0, 2, 1, 0.6f}, {0.0, 4.0, 0, 0, 0.9f}, {9.0, 10.0, -1, 2, 0.4f}};
  const TimelineLayout l = keystep_timeline_layout(t, 1200);
  CHECK(l.width == 1200);
  CHECK(l.legend_columns == 3);
  CHECK(l.legend == std::vector<int64_t>{0, 1, 2});
  CHECK(l.height == 166 + 16 * 1);
  CHECK(l.t0 == 0.0);
  CHECK(l.t1 == 10.0);
  CHECK(l.predicted_y >= l.truth_y + l.strip_height);

  TempDir dir("timeline");
  write_png(dir / "t.png", keystep_timeline(t, 1200));
  const ImageU8 image = read_image_u8(dir / "t.png", 3);
  REQUIRE(image.width == l.width);
  REQUIRE(image.height == l.height);
  const auto at = [&](int x, int y) {
    const size_t i =
        (static_cast<size_t>(y) * static_cast<size_t>(image.width) + static_cast<size_t>(x)) * 3;
    return Color{image.pixels[i], image.pixels[i + 1], image.pixels[i + 2]};
  };
  const auto same = [](Color a, Color b) { return a.r == b.r && a.g == b.g && a.b == b.b; };
  const auto column = [&](double time) {
    return l.x0 + static_cast<int>((time - l.t0) / (l.t1 - l.t0) * (l.x1 - l.x0));
  };
  const int lower = l.strip_height * 3 / 4;  // the lower half holds only the label's colour
  for (const TimelineSegment& s : t.segments) {
    const int x = column((s.start + s.end) / 2);
    CAPTURE(s.start);
    CHECK(same(at(x, l.truth_y + lower), keystep_label_color(s.truth)));
    CHECK(same(at(x, l.predicted_y + lower), keystep_label_color(s.predicted)));
  }
  // Right (green) on the first segment, wrong (red) on the second.
  CHECK(at(column(2.0), l.correct_y + 2).g > 150);
  CHECK(at(column(7.0), l.correct_y + 2).r > 200);
  // The gap and the label colours differ; so do the three labels.
  CHECK(!same(at(column(4.5), l.truth_y + lower), keystep_label_color(0)));
  CHECK(!same(keystep_label_color(0), keystep_label_color(1)));
  CHECK(!same(keystep_label_color(1), keystep_label_color(2)));
  // Legend swatches in the label colours.
  for (int64_t label : l.legend)
    CHECK(has_color_near(image, keystep_label_color(label), 0));

  // Many labels wrap the legend onto more rows; bad input is refused.
  KeystepTimeline many;
  for (int64_t k = 0; k < 10; ++k)
    many.segments.push_back({static_cast<double>(k), k + 1.0, k, 9 - k, 0.5f});
  CHECK(keystep_timeline_layout(many, 1200).height == 166 + 16 * 4);
  CHECK(keystep_timeline(many, 500).h == 166 + 16 * 10);  // one column
  CHECK_THROWS_AS(keystep_timeline(KeystepTimeline{}), ValueError);
  CHECK_THROWS_AS(keystep_timeline(t, 100), ValueError);
}
