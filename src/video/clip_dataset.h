// Labelled video clips for training: a clip list (a CSV file or a directory of videos),
// uniform frame sampling through VideoReader, and a cache file that holds every clip's frames
// as bytes so that later epochs and later runs never decode again.
//
// The CSV has a header naming its columns, in any order:
//   path   (required) the clip, relative to the clips directory (or absolute)
//   label  class name or number; may be empty when unknown (evaluation)
//   start, end   optional seconds: frames are sampled from [start, end) instead of the clip
//   split  optional: train or val
// Errors are FormatError "<csv>:<line>: ..." naming the line, IoError naming a missing clip.
//
// The cache file (little-endian, as written on x86-64):
//   "STGNNCLP"  u32 version (1)  u32 0  u64 key  i64 count, frames, channels, size
//   per clip: u32 length + that many bytes of error text ("" = decoded)
//   pixels [count, frames, channels, size, size] u8 (zeros for a clip that failed)
// The key hashes the clip list (resolved paths, file sizes and modification times, time
// ranges) and the sampling settings, so a cache is reused only for the same clips decoded
// the same way; a file rewritten with the same size and modification time is not noticed.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "video/video_io.h"

namespace stgnn {

struct ClipEntry {
  std::string path;   // as listed: relative to the clips directory, or absolute
  std::string file;   // the file that is read
  std::string label;  // class name; "" when unknown
  double start = -1;  // seconds; < 0: from the first frame
  double end = -1;    // seconds; < 0: to the end of the clip
  std::string split;  // "train", "val", or "" when the list has no split column
  int64_t line = 0;   // line of the CSV file (0 when found by listing a directory)
};

struct ClipList {
  std::string source;  // the CSV file, or the directory that was listed
  bool has_split = false;
  std::vector<ClipEntry> clips;

  // "labels.csv:4" for a listed clip, else its path: where to look when clip i is at fault.
  std::string where(size_t i) const;
};

// Reads a clip list; relative paths are resolved against clips_dir (the CSV's own directory
// when clips_dir is empty). FormatError naming the line for a malformed file: missing or
// unknown columns, a wrong number of fields, an empty path, a bad time (negative, not a
// number, end <= start), a split other than train / val, no rows. IoError when the CSV cannot
// be read. Clip files are not touched here.
ClipList read_clip_list(const std::string& csv_path, const std::string& clips_dir);

// Every video file under `dir`, recursively, by relative path in byte order, without labels.
// IoError when dir is not a readable directory; FormatError when it holds no video file.
ClipList list_clip_files(const std::string& dir);
// True for the extensions list_clip_files takes (mp4, m4v, mov, avi, mkv, webm, gif, mpg,
// mpeg, wmv, flv, ts, ogv; any case).
bool is_video_file_name(const std::string& name);

// The distinct non-empty labels of a list in class-id order: numerically when every label is
// an integer, else in byte order.
std::vector<std::string> label_names(const ClipList& list);

// Which clips validate ([N], true = validation). With a split column, that column decides.
// Otherwise a seeded stratified draw: for each label, round(fraction * n) of its clips (at
// least one when n >= 2 and fraction > 0, never all), chosen by a shuffle keyed by seed.
std::vector<bool> validation_mask(const ClipList& list, double fraction, uint64_t seed);

struct ClipSampling {
  int64_t frames = 10;                 // T, sampled uniformly over the clip or [start, end)
  ColorMode color = ColorMode::kGray;  // C = 1 or 3
  int size = 64;                       // frames are resized (area filter) to size x size
};

struct DecodedClips {
  int64_t count = 0, frames = 0, channels = 0, size = 0;
  std::vector<uint8_t> pixels;      // [count, T, C, S, S]
  std::vector<std::string> errors;  // [count]: "" or why the clip could not be decoded
  uint64_t key = 0;                 // clip_cache_key of the list and sampling

  int64_t clip_bytes() const { return frames * channels * size * size; }
  // Clip i's frames [T, C, S, S].
  const uint8_t* clip(int64_t i) const { return pixels.data() + i * clip_bytes(); }
  int64_t failed() const;
};

// The cache key of a list and sampling (see above). IoError naming the clip and its CSV line
// when a clip file does not exist.
uint64_t clip_cache_key(const ClipList& list, const ClipSampling& sampling);

// Decodes every clip, in parallel over clips (one VideoReader per clip). A clip that cannot be
// decoded (not a video, corrupt, a time range outside it) is recorded in errors[i], never
// thrown. progress(done) is called (serialised) after each clip.
DecodedClips decode_clips(const ClipList& list, const ClipSampling& sampling,
                          const std::function<void(int64_t done)>& progress = {});

// Writes `clips` to a cache file atomically. IoError naming the path on failure.
void write_clip_cache(const std::string& path, const DecodedClips& clips);
// Reads a cache file into *out when it exists, is well formed and has this key. Otherwise
// returns false and says why in *why ("no cache file", "built for other clips or settings",
// "truncated ..."), leaving *out untouched.
bool read_clip_cache(const std::string& path, uint64_t key, DecodedClips* out, std::string* why);

}  // namespace stgnn
