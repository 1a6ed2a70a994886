// Score-driven pair merging shared by the llama2.c and SentencePiece-style (GGUF "llama") tokenizers:
// repeatedly merge the adjacent pair whose concatenation is the best-scoring vocabulary entry, leftmost
// pair on ties. run.c rescans all pairs per merge (quadratic); a heap with lazy invalidation gives the
// same merge order in O(n log n), which matters for encoding whole documents.
#pragma once

#include <cstdint>
#include <optional>
#include <queue>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace lowbit::io::detail {

struct MergeSymbol {
  std::string text;       // bytes this symbol stands for (the key used for pair lookups)
  std::int32_t id = -1;   // vocabulary id, -1 while unknown
};

// `lookup(left_text, right_text)` returns {merged id, score} when the pair may merge, std::nullopt
// otherwise (score-based vocabularies look up the concatenation; BPE looks up the pair's merge rank).
// Symbols are merged in place; the survivors are returned in order.
template <class Lookup>
std::vector<MergeSymbol> score_merge(std::vector<MergeSymbol> symbols, Lookup&& lookup) {
  const int n = static_cast<int>(symbols.size());
  if (n < 2) return symbols;
  std::vector<int> prev(n), next(n);
  std::vector<char> alive(n, 1);
  for (int i = 0; i < n; ++i) {
    prev[i] = i - 1;
    next[i] = i + 1 < n ? i + 1 : -1;
  }
  struct Candidate {
    float score;
    int left, right;
    std::size_t left_len, right_len;
    std::int32_t id;
  };
  auto worse = [](const Candidate& a, const Candidate& b) {
    if (a.score != b.score) return a.score < b.score;
    return a.left > b.left;  // leftmost wins ties
  };
  std::priority_queue<Candidate, std::vector<Candidate>, decltype(worse)> heap(worse);
  auto push_pair = [&](int left, int right) {
    if (left < 0 || right < 0) return;
    if (auto hit = lookup(std::string_view(symbols[left].text), std::string_view(symbols[right].text)))
      heap.push({hit->second, left, right, symbols[left].text.size(), symbols[right].text.size(), hit->first});
  };
  for (int i = 0; i + 1 < n; ++i) push_pair(i, i + 1);
  while (!heap.empty()) {
    const Candidate c = heap.top();
    heap.pop();
    // Stale when either side has merged since the candidate was pushed.
    if (!alive[c.left] || !alive[c.right] || next[c.left] != c.right ||
        symbols[c.left].text.size() != c.left_len || symbols[c.right].text.size() != c.right_len)
      continue;
    symbols[c.left].text += symbols[c.right].text;
    symbols[c.left].id = c.id;
    alive[c.right] = 0;
    next[c.left] = next[c.right];
    if (next[c.left] >= 0) prev[next[c.left]] = c.left;
    push_pair(prev[c.left], c.left);
    push_pair(c.left, next[c.left]);
  }
  std::vector<MergeSymbol> out;
  for (int i = 0; i >= 0; i = next[i]) out.push_back(std::move(symbols[i]));
  return out;
}

// Splits UTF-8 text the way llama2.c's encode does: a lead byte starts a new character, up to four
// bytes per character (longer continuation runs are cut at four), invalid bytes become their own unit.
inline std::vector<std::string_view> utf8_units(std::string_view text) {
  std::vector<std::string_view> units;
  std::size_t i = 0;
  while (i < text.size()) {
    std::size_t len = 1;
    while (i + len < text.size() && (static_cast<unsigned char>(text[i + len]) & 0xC0) == 0x80 && len < 4) ++len;
    units.push_back(text.substr(i, len));
    i += len;
  }
  return units;
}

}  // namespace lowbit::io::detail
