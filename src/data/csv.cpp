#include "data/csv.h"

#include "autograd/error.h"

namespace stgnn {

std::vector<CsvRecord> parse_csv(const std::string& text, const std::string& name_for_errors) {
  std::vector<CsvRecord> records;
  size_t i = 0;
  const size_t n = text.size();
  if (text.compare(0, 3, "\xEF\xBB\xBF") == 0) i = 3;
  int64_t line = 1;
  auto error = [&](int64_t at, const std::string& what) {
    throw FormatError(name_for_errors + ":" + std::to_string(at) + ": " + what);
  };
  // True at a record end ("\n", "\r\n" or a lone "\r"), which it consumes.
  auto take_newline = [&]() {
    if (i < n && text[i] == '\r') {
      ++i;
      if (i < n && text[i] == '\n') ++i;
      ++line;
      return true;
    }
    if (i < n && text[i] == '\n') {
      ++i;
      ++line;
      return true;
    }
    return false;
  };
  while (i < n) {
    if (take_newline()) continue;  // blank line
    CsvRecord record;
    record.line = line;
    while (true) {
      std::string field;
      if (i < n && text[i] == '"') {
        const int64_t opened = line;
        ++i;
        while (true) {
          if (i >= n) error(opened, "unterminated quoted field");
          const char c = text[i];
          if (c == '"') {
            if (i + 1 < n && text[i + 1] == '"') {
              field.push_back('"');
              i += 2;
              continue;
            }
            ++i;
            break;
          }
          if (c == '\n') ++line;
          if (c == '\r' && !(i + 1 < n && text[i + 1] == '\n')) ++line;
          field.push_back(c);
          ++i;
        }
        if (i < n && text[i] != ',' && text[i] != '\n' && text[i] != '\r') {
          error(line, "unexpected character after a closing quote");
        }
      } else {
        while (i < n && text[i] != ',' && text[i] != '\n' && text[i] != '\r') {
          if (text[i] == '"') error(line, "quote inside an unquoted field");
          field.push_back(text[i++]);
        }
      }
      record.fields.push_back(std::move(field));
      if (i < n && text[i] == ',') {
        ++i;
        continue;
      }
      take_newline();
      break;
    }
    records.push_back(std::move(record));
  }
  return records;
}

}  // namespace stgnn
