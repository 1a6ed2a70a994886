// Calibration data: the seeded token windows a calibration run learns its statistics from, drawn the way
// GPTQ's loaders draw them. Calibration text is never evaluation text (docs/evaluation.md).
#pragma once

#include <algorithm>
#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

#include "../core/error.hpp"
#include "../core/rng.hpp"
#include "../io/tokenizer_base.hpp"

namespace lowbit::calib {

// Draws `n` windows of `length` tokens (row-major [n, length]) the way GPTQ's loaders do: pick a random
// document whose encoding is longer than the window, then a random start inside it. When no document is
// long enough (e.g. one short text file), windows are cut from all documents joined with "\n\n".
inline std::vector<std::int32_t> draw_calibration_tokens(const std::vector<std::string>& documents,
                                                         const io::Tokenizer& tokenizer, int n, int length,
                                                         std::uint64_t seed, const std::string& source = "calibration") {
  LOWBIT_CHECK(n > 0 && length > 1, source, ": need a positive number of samples and a length > 1 (got ", n, " x ",
               length, ")");
  LOWBIT_CHECK(!documents.empty(), source, ": no documents");
  Rng rng(seed);
  std::vector<std::int32_t> out;
  out.reserve(std::min<std::size_t>(static_cast<std::size_t>(n) * static_cast<std::size_t>(length), std::size_t{1} << 24));
  std::unordered_map<std::size_t, std::vector<std::int32_t>> cache;
  auto encoded = [&](std::size_t d) -> const std::vector<std::int32_t>& {
    auto it = cache.find(d);
    if (it == cache.end()) it = cache.emplace(d, tokenizer.encode(documents[d], false)).first;
    return it->second;
  };
  int drawn = 0;
  const std::int64_t max_attempts = 64 * static_cast<std::int64_t>(n) + 1024;
  for (std::int64_t attempt = 0; attempt < max_attempts && drawn < n; ++attempt) {
    const auto d = static_cast<std::size_t>(rng.below(documents.size()));
    const auto& ids = encoded(d);
    if (static_cast<int>(ids.size()) <= length) continue;
    const auto start = rng.below(ids.size() - static_cast<std::size_t>(length));
    out.insert(out.end(), ids.begin() + static_cast<std::ptrdiff_t>(start),
               ids.begin() + static_cast<std::ptrdiff_t>(start) + length);
    ++drawn;
  }
  if (drawn < n) {  // too few long documents: sample from the joined stream instead
    std::string joined;
    for (std::size_t d = 0; d < documents.size(); ++d) joined += (d ? "\n\n" : "") + documents[d];
    const auto ids = tokenizer.encode(joined, false);
    LOWBIT_CHECK(static_cast<int>(ids.size()) > length, source, ": only ", ids.size(),
                 " tokens in total, fewer than one calibration window of ", length);
    for (; drawn < n; ++drawn) {
      const auto start = rng.below(ids.size() - static_cast<std::size_t>(length));
      out.insert(out.end(), ids.begin() + static_cast<std::ptrdiff_t>(start),
                 ids.begin() + static_cast<std::ptrdiff_t>(start) + length);
    }
  }
  return out;
}

}  // namespace lowbit::calib
