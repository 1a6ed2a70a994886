// The byte-level vocabulary of lowbit's own models: token ids 0..255 are the bytes of UTF-8 text and 256
// is BOS, so any text file can be trained on without a tokenizer file and decoding is exact.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "../core/error.hpp"

namespace lowbit::train {

struct ByteVocabulary {
  static constexpr std::int32_t bos = 256;
  static constexpr int size = 257;

  static std::vector<std::int32_t> encode(std::string_view text, bool add_bos) {
    std::vector<std::int32_t> ids;
    ids.reserve(text.size() + 1);
    if (add_bos) ids.push_back(bos);
    for (unsigned char c : text) ids.push_back(static_cast<std::int32_t>(c));
    return ids;
  }

  // Bytes back to text; BOS becomes nothing. Ids outside the vocabulary raise lowbit::Error.
  static std::string decode(const std::vector<std::int32_t>& ids) {
    std::string text;
    text.reserve(ids.size());
    for (std::size_t i = 0; i < ids.size(); ++i) {
      LOWBIT_CHECK(ids[i] >= 0 && ids[i] < size, "byte vocabulary: token id ", ids[i], " at position ", i,
                   " is outside [0, ", size, ")");
      if (ids[i] != bos) text.push_back(static_cast<char>(ids[i]));
    }
    return text;
  }
};

}  // namespace lowbit::train
