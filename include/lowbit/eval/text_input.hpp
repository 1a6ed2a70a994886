// Reading evaluation text: plain files and JSON-lines ({"text": ...}), validated as UTF-8 so a
// corrupt or mis-encoded file fails with its name and line instead of silently changing token counts.
// Also the small string helpers the protocols share (Python-style strip, splitting on a separator).
#pragma once

#include <cstdint>
#include <fstream>
#include <sstream>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "../core/error.hpp"

namespace lowbit::eval {

// Byte offset of the first invalid UTF-8 sequence in `s` (overlongs, surrogates and code points above
// U+10FFFF are invalid), or npos when `s` is valid.
inline std::size_t find_invalid_utf8(std::string_view s) {
  std::size_t i = 0;
  const std::size_t n = s.size();
  auto byte = [&](std::size_t k) { return static_cast<unsigned char>(s[k]); };
  while (i < n) {
    const unsigned char c = byte(i);
    if (c < 0x80) {
      ++i;
      continue;
    }
    int len = 0;
    std::uint32_t cp = 0;
    if ((c & 0xE0) == 0xC0) len = 2, cp = c & 0x1F;
    else if ((c & 0xF0) == 0xE0) len = 3, cp = c & 0x0F;
    else if ((c & 0xF8) == 0xF0) len = 4, cp = c & 0x07;
    else return i;
    if (i + static_cast<std::size_t>(len) > n) return i;
    for (int k = 1; k < len; ++k) {
      if ((byte(i + static_cast<std::size_t>(k)) & 0xC0) != 0x80) return i;
      cp = (cp << 6) | (byte(i + static_cast<std::size_t>(k)) & 0x3F);
    }
    const std::uint32_t min_cp = len == 2 ? 0x80 : len == 3 ? 0x800 : 0x10000;
    if (cp < min_cp || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return i;
    i += static_cast<std::size_t>(len);
  }
  return std::string_view::npos;
}

// Throws naming `file`, the 1-based line and column of the first invalid byte. `first_line` is the
// line number of s[0] in the file.
inline void require_utf8(std::string_view s, const std::string& file, std::size_t first_line = 1) {
  const auto bad = find_invalid_utf8(s);
  if (bad == std::string_view::npos) return;
  std::size_t line = first_line, col = 1;
  for (std::size_t k = 0; k < bad; ++k) {
    if (s[k] == '\n') {
      ++line;
      col = 1;
    } else {
      ++col;
    }
  }
  char hex[8];
  std::snprintf(hex, sizeof hex, "0x%02X", static_cast<unsigned>(static_cast<unsigned char>(s[bad])));
  fail(file, ":", line, ":", col, ": text is not valid UTF-8 (byte ", hex, " at offset ", bad, ")");
}

inline std::string read_file_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  LOWBIT_CHECK(in.good(), "text file ", path, ": cannot open");
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Python's str.strip() for ASCII whitespace.
inline std::string_view strip(std::string_view s) {
  const char* ws = " \t\n\r\v\f";
  const auto b = s.find_first_not_of(ws);
  if (b == std::string_view::npos) return {};
  return s.substr(b, s.find_last_not_of(ws) - b + 1);
}

inline std::vector<std::string> split_on(std::string_view text, std::string_view sep) {
  std::vector<std::string> parts;
  if (sep.empty()) {
    parts.emplace_back(text);
    return parts;
  }
  for (std::size_t start = 0;;) {
    const auto at = text.find(sep, start);
    parts.emplace_back(text.substr(start, at == std::string_view::npos ? std::string_view::npos : at - start));
    if (at == std::string_view::npos) break;
    start = at + sep.size();
  }
  return parts;
}

namespace detail {

// Calls fn(json, line_number) for every non-blank line of a jsonl file, with UTF-8 and JSON errors
// reported as file:line.
template <class Fn>
void for_each_jsonl(const std::string& path, Fn&& fn) {
  const std::string bytes = read_file_bytes(path);
  std::size_t line_no = 0, start = 0;
  while (start < bytes.size()) {
    auto end = bytes.find('\n', start);
    if (end == std::string::npos) end = bytes.size();
    const std::string_view line(bytes.data() + start, end - start);
    ++line_no;
    start = end + 1;
    if (strip(line).empty()) continue;
    require_utf8(line, path, line_no);
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(line);
    } catch (const nlohmann::json::exception& e) {
      fail(path, ":", line_no, ": not valid JSON (", e.what(), ")");
    }
    try {
      fn(j, line_no);
    } catch (const nlohmann::json::exception& e) {
      fail(path, ":", line_no, ": missing or mistyped field (", e.what(), ")");
    }
  }
}

}  // namespace detail

inline bool is_jsonl_path(const std::string& path) {
  return path.size() >= 6 && (path.substr(path.size() - 6) == ".jsonl" || path.substr(path.size() - 5) == ".json");
}

// The documents of an evaluation file: a plain text file is one document; a .jsonl file gives one
// document per line from its "text" field (blank lines skipped). Everything is UTF-8 checked.
inline std::vector<std::string> read_documents(const std::string& path) {
  if (!is_jsonl_path(path)) {
    std::string bytes = read_file_bytes(path);
    require_utf8(bytes, path);
    return {std::move(bytes)};
  }
  std::vector<std::string> docs;
  detail::for_each_jsonl(path, [&](const nlohmann::json& j, std::size_t line_no) {
    LOWBIT_CHECK(j.is_object() && j.contains("text") && j["text"].is_string(), path, ":", line_no,
                 ": expected an object with a string field \"text\"");
    docs.push_back(j["text"].get<std::string>());
  });
  return docs;
}

}  // namespace lowbit::eval
