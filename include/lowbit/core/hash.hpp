// The one fingerprint lowbit uses everywhere: 64-bit FNV-1a over bytes (checksums of stored tensors,
// fingerprints of configurations, token streams and files for resumable runs). Fast and stable across
// platforms and versions; not cryptographic, so it detects accidents (truncation, edits, a changed
// option), not attacks.
#pragma once

#include <cstdint>
#include <cstdio>
#include <fstream>
#include <string>
#include <string_view>
#include <vector>

#include "error.hpp"

namespace lowbit {

inline constexpr std::uint64_t kFnv1aOffset = 0xcbf29ce484222325ULL;

// FNV-1a of `bytes` bytes, continuing from `h` (pass a previous result to hash several pieces).
inline std::uint64_t fnv1a64(const void* data, std::size_t bytes, std::uint64_t h = kFnv1aOffset) {
  const auto* p = static_cast<const unsigned char*>(data);
  for (std::size_t i = 0; i < bytes; ++i) h = (h ^ p[i]) * 0x100000001b3ULL;
  return h;
}
inline std::uint64_t fnv1a64(std::string_view text, std::uint64_t h = kFnv1aOffset) {
  return fnv1a64(text.data(), text.size(), h);
}

// 16 lowercase hex digits.
inline std::string hex64(std::uint64_t v) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(v));
  return buf;
}
inline std::string fnv1a64_hex(const void* data, std::size_t bytes) { return hex64(fnv1a64(data, bytes)); }

// "<hash>:<size>" of a whole file, read in 1 MiB pieces.
inline std::string file_fingerprint(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  LOWBIT_CHECK(in, "cannot open ", path, " to fingerprint it");
  std::vector<char> buf(1 << 20);
  std::uint64_t h = kFnv1aOffset, size = 0;
  while (in) {
    in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
    const auto got = static_cast<std::size_t>(in.gcount());
    h = fnv1a64(buf.data(), got, h);
    size += got;
  }
  return hex64(h) + ":" + std::to_string(size);
}

}  // namespace lowbit
