// RFC 4180 CSV parsing: comma-separated fields, optional double quotes around a field (which
// may then hold commas, line breaks and doubled quotes ""), LF or CRLF record ends.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace stgnn {

struct CsvRecord {
  int64_t line;  // 1-based line on which the record starts
  std::vector<std::string> fields;
};

// Splits `text` into records. A leading UTF-8 byte-order mark is skipped and blank lines are
// ignored. Throws FormatError "<name>:<line>: ..." for a quote inside an unquoted field, text
// after a closing quote, or an unterminated quoted field.
std::vector<CsvRecord> parse_csv(const std::string& text, const std::string& name_for_errors);

}  // namespace stgnn
