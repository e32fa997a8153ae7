#include "video/clip_dataset.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>

#include "autograd/atomic_file.h"
#include "autograd/error.h"
#include "autograd/parallel.h"
#include "autograd/rng.h"
#include "data/csv.h"

namespace stgnn {

namespace fs = std::filesystem;

namespace {

std::string trim(const std::string& s) {
  size_t b = 0, e = s.size();
  while (b < e && std::isspace(static_cast<unsigned char>(s[b])))
    ++b;
  while (e > b && std::isspace(static_cast<unsigned char>(s[e - 1])))
    --e;
  return s.substr(b, e - b);
}

std::string lower(std::string s) {
  for (char& c : s)
    c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

// A non-negative finite number of seconds, or -1 for an empty field.
double parse_seconds(const std::string& text, const std::string& where, const char* column) {
  if (text.empty()) return -1;
  size_t used = 0;
  double v = NAN;
  try {
    v = std::stod(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used != text.size() || !std::isfinite(v) || v < 0) {
    throw FormatError(where + ": " + column + " '" + text +
                      "' is not a non-negative number of seconds");
  }
  return v;
}

bool is_integer(const std::string& s) {
  if (s.empty() || s.size() > 18) return false;
  size_t i = s[0] == '-' ? 1 : 0;
  if (i == s.size()) return false;
  for (; i < s.size(); ++i) {
    if (!std::isdigit(static_cast<unsigned char>(s[i]))) return false;
  }
  return true;
}

// 64-bit FNV-1a.
uint64_t fnv1a(const std::string& bytes) {
  uint64_t h = 0xcbf29ce484222325ULL;
  for (unsigned char c : bytes) {
    h ^= c;
    h *= 0x100000001b3ULL;
  }
  return h;
}

constexpr char kCacheMagic[8] = {'S', 'T', 'G', 'N', 'N', 'C', 'L', 'P'};
constexpr uint32_t kCacheVersion = 1;
constexpr size_t kCacheHeaderBytes = 8 + 4 + 4 + 8 + 4 * 8;
constexpr uint32_t kMaxErrorText = 1 << 16;

template <typename T>
void put(std::string& out, T v) {
  out.append(reinterpret_cast<const char*>(&v), sizeof(T));
}

}  // namespace

std::string ClipList::where(size_t i) const {
  const ClipEntry& c = clips.at(i);
  if (c.line > 0) return source + ":" + std::to_string(c.line);
  return c.file;
}

ClipList read_clip_list(const std::string& csv_path, const std::string& clips_dir) {
  const std::vector<CsvRecord> records = parse_csv(read_file(csv_path), csv_path);
  if (records.empty()) throw FormatError(csv_path + ": empty file (expected a header path,label)");
  const std::string at_header = csv_path + ":" + std::to_string(records[0].line);
  std::map<std::string, size_t> column;
  for (size_t k = 0; k < records[0].fields.size(); ++k) {
    const std::string name = lower(trim(records[0].fields[k]));
    if (name != "path" && name != "label" && name != "start" && name != "end" && name != "split") {
      throw FormatError(at_header + ": unknown column '" + records[0].fields[k] +
                        "' (the header names columns path, label, start, end, split)");
    }
    if (!column.emplace(name, k).second)
      throw FormatError(at_header + ": column '" + name + "' appears twice");
  }
  if (!column.count("path")) {
    throw FormatError(at_header + ": the header has no 'path' column (expected e.g. path,label; " +
                      "the first line must name the columns)");
  }
  const fs::path base = clips_dir.empty() ? fs::path(csv_path).parent_path() : fs::path(clips_dir);
  ClipList list;
  list.source = csv_path;
  list.has_split = column.count("split") > 0;
  const auto field = [&](const CsvRecord& r, const char* name) -> std::string {
    const auto it = column.find(name);
    return it == column.end() ? std::string() : trim(r.fields[it->second]);
  };
  for (size_t i = 1; i < records.size(); ++i) {
    const CsvRecord& r = records[i];
    const std::string where = csv_path + ":" + std::to_string(r.line);
    if (r.fields.size() != records[0].fields.size()) {
      throw FormatError(where + ": " + std::to_string(r.fields.size()) +
                        " fields, the header has " + std::to_string(records[0].fields.size()));
    }
    ClipEntry c;
    c.line = r.line;
    c.path = field(r, "path");
    if (c.path.empty()) throw FormatError(where + ": empty path");
    c.file = fs::path(c.path).is_absolute() ? c.path : (base / c.path).string();
    c.label = field(r, "label");
    c.start = parse_seconds(field(r, "start"), where, "start");
    c.end = parse_seconds(field(r, "end"), where, "end");
    if (c.end >= 0 && c.end <= std::max(0.0, c.start)) {
      throw FormatError(where + ": end " + field(r, "end") + " s is not after start " +
                        (c.start >= 0 ? field(r, "start") : "0") + " s");
    }
    if (list.has_split) {
      c.split = lower(field(r, "split"));
      if (c.split != "train" && c.split != "val") {
        throw FormatError(where + ": split '" + field(r, "split") + "' (train or val)");
      }
    }
    list.clips.push_back(std::move(c));
  }
  if (list.clips.empty()) throw FormatError(csv_path + ": no clips listed below the header");
  return list;
}

bool is_video_file_name(const std::string& name) {
  static const char* kExtensions[] = {".mp4", ".m4v",  ".mov", ".avi", ".mkv", ".webm", ".gif",
                                      ".mpg", ".mpeg", ".wmv", ".flv", ".ts",  ".ogv"};
  const std::string ext = lower(fs::path(name).extension().string());
  return std::any_of(std::begin(kExtensions), std::end(kExtensions),
                     [&](const char* e) { return ext == e; });
}

ClipList list_clip_files(const std::string& dir) {
  std::error_code error;
  if (!fs::is_directory(dir, error))
    throw IoError("clips directory '" + dir + "' does not exist or is not a directory");
  std::vector<std::string> relative;
  fs::recursive_directory_iterator it(dir, fs::directory_options::follow_directory_symlink, error);
  if (error) throw IoError("cannot list clips directory '" + dir + "': " + error.message());
  for (const fs::recursive_directory_iterator end; it != end; it.increment(error)) {
    if (error) throw IoError("cannot list clips directory '" + dir + "': " + error.message());
    if (it->is_regular_file(error) && is_video_file_name(it->path().filename().string()))
      relative.push_back(fs::relative(it->path(), dir).generic_string());
  }
  if (relative.empty()) throw FormatError("clips directory '" + dir + "' holds no video file");
  std::sort(relative.begin(), relative.end());
  ClipList list;
  list.source = dir;
  for (const std::string& r : relative) {
    ClipEntry c;
    c.path = r;
    c.file = (fs::path(dir) / r).string();
    list.clips.push_back(std::move(c));
  }
  return list;
}

std::vector<std::string> label_names(const ClipList& list) {
  std::vector<std::string> names;
  for (const ClipEntry& c : list.clips) {
    if (!c.label.empty()) names.push_back(c.label);
  }
  std::sort(names.begin(), names.end());
  names.erase(std::unique(names.begin(), names.end()), names.end());
  if (std::all_of(names.begin(), names.end(), is_integer)) {
    std::sort(names.begin(), names.end(), [](const std::string& a, const std::string& b) {
      return std::stoll(a) < std::stoll(b);
    });
  }
  return names;
}

std::vector<bool> validation_mask(const ClipList& list, double fraction, uint64_t seed) {
  const size_t n = list.clips.size();
  std::vector<bool> val(n, false);
  if (list.has_split) {
    for (size_t i = 0; i < n; ++i)
      val[i] = list.clips[i].split == "val";
    return val;
  }
  if (!(fraction >= 0 && fraction < 1))
    throw ValueError("validation fraction " + std::to_string(fraction) + " is not in [0, 1)");
  std::map<std::string, std::vector<size_t>> by_label;
  for (size_t i = 0; i < n; ++i)
    by_label[list.clips[i].label].push_back(i);
  uint64_t stream = 0;
  for (auto& [label, members] : by_label) {
    Rng rng = Rng(mix64(seed ^ 0x5b117a1dULL)).fork(stream++);
    rng.shuffle(members.begin(), members.end());
    const int64_t count = static_cast<int64_t>(members.size());
    int64_t take = std::llround(fraction * static_cast<double>(count));
    if (fraction > 0 && count >= 2) take = std::max<int64_t>(take, 1);
    take = std::min(take, count - 1);
    for (int64_t k = 0; k < take; ++k)
      val[members[static_cast<size_t>(k)]] = true;
  }
  return val;
}

int64_t DecodedClips::failed() const {
  return std::count_if(errors.begin(), errors.end(),
                       [](const std::string& e) { return !e.empty(); });
}

uint64_t clip_cache_key(const ClipList& list, const ClipSampling& sampling) {
  std::string text = "stgnn clip cache v1\nframes " + std::to_string(sampling.frames) + " color " +
                     (sampling.color == ColorMode::kGray ? "gray" : "rgb") + " size " +
                     std::to_string(sampling.size) + " filter area\n";
  for (size_t i = 0; i < list.clips.size(); ++i) {
    const ClipEntry& c = list.clips[i];
    std::error_code error;
    const auto size = fs::file_size(c.file, error);
    if (error) {
      throw IoError(list.where(i) + ": clip '" + c.file + "' not found (" + error.message() + ")");
    }
    const auto mtime = fs::last_write_time(c.file, error);
    char range[96];
    std::snprintf(range, sizeof(range), "%.17g %.17g", c.start, c.end);
    text += c.file + '\t' + std::to_string(size) + '\t' +
            std::to_string(mtime.time_since_epoch().count()) + '\t' + range + '\n';
  }
  return fnv1a(text);
}

DecodedClips decode_clips(const ClipList& list, const ClipSampling& sampling,
                          const std::function<void(int64_t)>& progress) {
  if (sampling.frames < 1 || sampling.frames > 10000)
    throw ValueError("clip sampling: frames " + std::to_string(sampling.frames) + " (1..10000)");
  if (sampling.size < 1 || sampling.size > 4096)
    throw ValueError("clip sampling: size " + std::to_string(sampling.size) + " (1..4096)");
  DecodedClips out;
  out.count = static_cast<int64_t>(list.clips.size());
  out.frames = sampling.frames;
  out.channels = sampling.color == ColorMode::kGray ? 1 : 3;
  out.size = sampling.size;
  out.key = clip_cache_key(list, sampling);
  out.pixels.assign(static_cast<size_t>(out.count * out.clip_bytes()), 0);
  out.errors.assign(static_cast<size_t>(out.count), "");
  std::mutex progress_mutex;
  int64_t done = 0;
  // Each clip has its own reader and writes only its own slice of pixels and errors.
  parallel_for(out.count, 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const ClipEntry& c = list.clips[static_cast<size_t>(i)];
      std::string& error = out.errors[static_cast<size_t>(i)];
      try {
        ReaderOptions options;
        options.format.color = sampling.color;
        options.format.width = options.format.height = sampling.size;
        options.format.filter = ResizeFilter::kArea;
        options.threads = 1;
        VideoReader reader(c.file, options);
        const double start = c.start >= 0 ? c.start : 0.0;
        const double stop = c.end >= 0 ? c.end : reader.info().duration;
        if (!(stop > start)) {
          throw FormatError("video '" + c.file + "': no time range to sample (duration " +
                            std::to_string(reader.info().duration) + " s)");
        }
        const FramesU8 frames = reader.sample_frames_u8(sampling.frames, start, stop);
        if (static_cast<int64_t>(frames.pixels.size()) != out.clip_bytes()) {
          throw FormatError("video '" + c.file + "': decoded " + shape_str(frames.shape()) +
                            " instead of " + std::to_string(out.frames) + " frames of " +
                            std::to_string(out.size) + "x" + std::to_string(out.size));
        }
        std::memcpy(out.pixels.data() + i * out.clip_bytes(), frames.pixels.data(),
                    frames.pixels.size());
      } catch (const std::exception& e) {
        error = e.what();
        if (error.empty()) error = "unknown decoding error";
      }
      if (progress) {
        std::lock_guard<std::mutex> lock(progress_mutex);
        progress(++done);
      }
    }
  });
  return out;
}

void write_clip_cache(const std::string& path, const DecodedClips& clips) {
  std::string header(kCacheMagic, sizeof(kCacheMagic));
  put<uint32_t>(header, kCacheVersion);
  put<uint32_t>(header, 0);
  put<uint64_t>(header, clips.key);
  put<int64_t>(header, clips.count);
  put<int64_t>(header, clips.frames);
  put<int64_t>(header, clips.channels);
  put<int64_t>(header, clips.size);
  for (const std::string& e : clips.errors) {
    const std::string text = e.substr(0, kMaxErrorText);
    put<uint32_t>(header, static_cast<uint32_t>(text.size()));
    header += text;
  }
  write_file_atomic(path,
                    {{header.data(), header.size()}, {clips.pixels.data(), clips.pixels.size()}});
}

bool read_clip_cache(const std::string& path, uint64_t key, DecodedClips* out, std::string* why) {
  std::error_code error;
  if (!fs::exists(path, error)) {
    *why = "no cache file";
    return false;
  }
  const uint64_t file_size = fs::file_size(path, error);
  std::ifstream in(path, std::ios::binary);
  if (error || !in) {
    *why = "cannot read the cache file";
    return false;
  }
  char fixed[kCacheHeaderBytes];
  if (file_size < kCacheHeaderBytes || !in.read(fixed, sizeof(fixed))) {
    *why = "truncated header";
    return false;
  }
  if (std::memcmp(fixed, kCacheMagic, sizeof(kCacheMagic)) != 0) {
    *why = "not a clip cache (bad magic)";
    return false;
  }
  uint32_t version;
  uint64_t stored_key;
  int64_t dims[4];
  std::memcpy(&version, fixed + 8, 4);
  std::memcpy(&stored_key, fixed + 16, 8);
  std::memcpy(dims, fixed + 24, sizeof(dims));
  if (version != kCacheVersion) {
    *why = "cache format version " + std::to_string(version);
    return false;
  }
  if (stored_key != key) {
    *why = "built for other clips or settings";
    return false;
  }
  DecodedClips c;
  c.count = dims[0];
  c.frames = dims[1];
  c.channels = dims[2];
  c.size = dims[3];
  c.key = key;
  if (c.count < 0 || c.count > (int64_t{1} << 32) || c.frames < 1 || c.frames > 10000 ||
      (c.channels != 1 && c.channels != 3) || c.size < 1 || c.size > 4096) {
    *why = "malformed header";
    return false;
  }
  uint64_t position = kCacheHeaderBytes;
  c.errors.resize(static_cast<size_t>(c.count));
  for (std::string& e : c.errors) {
    uint32_t length;
    if (position + 4 > file_size || !in.read(reinterpret_cast<char*>(&length), 4) ||
        length > kMaxErrorText || position + 4 + length > file_size) {
      *why = "truncated clip table";
      return false;
    }
    e.resize(length);
    if (length > 0 && !in.read(e.data(), length)) {
      *why = "truncated clip table";
      return false;
    }
    position += 4 + length;
  }
  // clip_bytes <= 10^4 * 3 * 4096^2 and count <= 2^32: the product can overflow, so check it
  // against the bytes that are left before allocating.
  const uint64_t per_clip = static_cast<uint64_t>(c.clip_bytes());
  const uint64_t left = file_size - position;
  if (c.count > 0 && (left % per_clip != 0 || left / per_clip != static_cast<uint64_t>(c.count))) {
    *why = "pixel data of " + std::to_string(left) + " bytes, expected " + std::to_string(c.count) +
           " clips of " + std::to_string(per_clip) + " bytes";
    return false;
  }
  if (c.count == 0 && left != 0) {
    *why = "trailing bytes";
    return false;
  }
  c.pixels.resize(static_cast<size_t>(left));
  if (left > 0 &&
      !in.read(reinterpret_cast<char*>(c.pixels.data()), static_cast<std::streamsize>(left))) {
    *why = "truncated pixel data";
    return false;
  }
  *out = std::move(c);
  return true;
}

}  // namespace stgnn
