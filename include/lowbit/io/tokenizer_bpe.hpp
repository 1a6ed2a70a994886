// Byte-level BPE (GPT-2 family: SmolLM2, Llama 3, Qwen2) from a GGUF vocabulary (tokenizer.ggml.model
// = "gpt2") or a Hugging Face tokenizer.json. Encoding follows the Hugging Face `tokenizers` pipeline:
// special (added) tokens are cut out first, the rest is split by the model's pre-tokenizer regexes
// (PCRE2 with UTF + Unicode properties), each piece's bytes are mapped to printable code points
// (GPT-2's bytes_to_unicode), and merges are applied lowest rank first, leftmost on ties.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#if defined(LOWBIT_WITH_PCRE2)
#ifndef PCRE2_CODE_UNIT_WIDTH
#define PCRE2_CODE_UNIT_WIDTH 8
#endif
#include <pcre2.h>
#endif

#include "../core/error.hpp"
#include "tokenizer_base.hpp"
#include "tokenizer_score_merge.hpp"
#include "tokenizer_vocab.hpp"

namespace lowbit::io {

namespace detail {

inline void append_utf8(std::string& out, std::uint32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

// GPT-2's reversible byte -> code point map: printable Latin-1 bytes map to themselves, the other 68
// bytes to U+0100.. in byte order, so every byte string becomes printable text without spaces.
inline const std::vector<std::string>& byte_to_unicode() {
  static const std::vector<std::string> table = [] {
    std::vector<std::string> t(256);
    std::uint32_t next = 256;
    for (std::uint32_t b = 0; b < 256; ++b) {
      const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
      append_utf8(t[b], printable ? b : next++);
    }
    return t;
  }();
  return table;
}

// Decodes one UTF-8 code point at s[i] (valid input assumed; returns 0xFFFD and advances 1 otherwise).
inline std::uint32_t next_code_point(std::string_view s, std::size_t& i) {
  const auto c = static_cast<unsigned char>(s[i]);
  int len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
  if (len == 0 || i + static_cast<std::size_t>(len) > s.size()) {
    ++i;
    return 0xFFFD;
  }
  std::uint32_t cp = len == 1 ? c : len == 2 ? (c & 0x1F) : len == 3 ? (c & 0x0F) : (c & 0x07);
  for (int k = 1; k < len; ++k) cp = (cp << 6) | (static_cast<unsigned char>(s[i + k]) & 0x3F);
  i += static_cast<std::size_t>(len);
  return cp;
}

// The pre-tokenizer regexes llama.cpp associates with each tokenizer.ggml.pre value (only the ones
// lowbit has checked; an unknown name is an error rather than a silent mis-tokenization).
inline constexpr const char* kGpt2Regex =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

inline std::vector<std::string> pre_regexes_for(const std::string& pre, const std::string& source) {
  if (pre.empty() || pre == "default" || pre == "gpt2" || pre == "gpt-2") return {kGpt2Regex};
  if (pre == "smollm" || pre == "starcoder" || pre == "refact" || pre == "command-r" || pre == "codeshell" ||
      pre == "exaone" || pre == "minerva")
    return {"\\p{N}", kGpt2Regex};
  if (pre == "llama3" || pre == "llama-bpe" || pre == "llama-v3" || pre == "dbrx" || pre == "smaug-bpe")
    return {"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|"
            "\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"};
  if (pre == "qwen2")
    return {"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|"
            "\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"};
  fail(source, ": tokenizer.ggml.pre = '", pre,
       "' is not a pre-tokenizer lowbit knows (known: default/gpt2, smollm, starcoder, llama3, qwen2)");
}

#if defined(LOWBIT_WITH_PCRE2)
// A compiled PCRE2 pattern (UTF + UCP) that splits text into matches and the gaps between them.
class Pcre2Splitter {
 public:
  explicit Pcre2Splitter(const std::string& pattern) {
    int error = 0;
    PCRE2_SIZE offset = 0;
    code_ = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                          PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF, &error, &offset, nullptr);
    if (!code_) {
      PCRE2_UCHAR message[256];
      pcre2_get_error_message(error, message, sizeof message);
      fail("pre-tokenizer regex '", pattern, "': ", reinterpret_cast<const char*>(message), " at offset ", offset);
    }
    pcre2_jit_compile(code_, PCRE2_JIT_COMPLETE);  // best effort; the interpreter is the fallback
  }
  ~Pcre2Splitter() { pcre2_code_free(code_); }
  Pcre2Splitter(const Pcre2Splitter&) = delete;
  Pcre2Splitter& operator=(const Pcre2Splitter&) = delete;

  // Appends the pieces of `text` to `out`: every match and every non-empty gap, in order (the Hugging
  // Face "Isolated" split behaviour).
  void split(std::string_view text, std::vector<std::string_view>& out) const {
    pcre2_match_data* md = pcre2_match_data_create_from_pattern(code_, nullptr);
    std::size_t pos = 0, gap_start = 0;
    while (pos <= text.size()) {
      const int rc = pcre2_match(code_, reinterpret_cast<PCRE2_SPTR>(text.data()), text.size(), pos, 0, md, nullptr);
      if (rc < 0) break;
      const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
      const std::size_t b = ov[0], e = ov[1];
      if (e == b) {  // empty match: step one character forward
        if (b >= text.size()) break;
        pos = b + 1;
        while (pos < text.size() && (static_cast<unsigned char>(text[pos]) & 0xC0) == 0x80) ++pos;
        continue;
      }
      if (b > gap_start) out.push_back(text.substr(gap_start, b - gap_start));
      out.push_back(text.substr(b, e - b));
      pos = gap_start = e;
    }
    if (gap_start < text.size()) out.push_back(text.substr(gap_start));
    pcre2_match_data_free(md);
  }

 private:
  pcre2_code* code_ = nullptr;
};
#endif

}  // namespace detail

class BpeTokenizer final : public Tokenizer {
 public:
  explicit BpeTokenizer(const VocabSpec& spec) : source_(spec.source), pre_(spec.pre) {
    LOWBIT_CHECK(!spec.tokens.empty(), spec.source, ": BPE vocabulary is empty");
    bos_ = spec.bos_id;
    eos_ = spec.eos_id;
    unk_ = spec.unk_id;
    add_bos_ = spec.add_bos;
    tokens_ = spec.tokens;
    for (std::size_t i = 0; i < tokens_.size(); ++i) {
      index_.emplace(tokens_[i], static_cast<std::int32_t>(i));
      const auto type = spec.type(i);
      if (type == TokenType::Control || type == TokenType::UserDefined) {
        if (spec.parse_special) specials_.push_back(static_cast<std::int32_t>(i));
        special_flag_.resize(tokens_.size(), 0);
        special_flag_[i] = 1;
      }
    }
    for (std::size_t r = 0; r < spec.merges.size(); ++r) {
      const auto& m = spec.merges[r];
      const auto space = m.find(' ', 1);  // the left side is never empty; it may itself be "Ġ"-prefixed
      LOWBIT_CHECK(space != std::string::npos && space + 1 < m.size(), spec.source, ": merge ", r, " '", m,
                   "' is not of the form 'left right'");
      ranks_.emplace(m, static_cast<std::int32_t>(r));
    }
    for (int id : {bos_, eos_, unk_})
      LOWBIT_CHECK(id < static_cast<int>(tokens_.size()), spec.source, ": special token id ", id,
                   " outside the vocabulary of ", tokens_.size());
    const auto regexes = spec.pre_regexes.empty() ? detail::pre_regexes_for(spec.pre, spec.source) : spec.pre_regexes;
#if defined(LOWBIT_WITH_PCRE2)
    for (const auto& r : regexes) splitters_.push_back(std::make_unique<detail::Pcre2Splitter>(r));
#else
    (void)regexes;
    fail(spec.source, ": byte-level BPE needs PCRE2 for its pre-tokenizer; rebuild with libpcre2-dev installed");
#endif
    const auto& b2u = detail::byte_to_unicode();
    for (int b = 0; b < 256; ++b) {
      std::size_t i = 0;
      unicode_to_byte_.emplace(detail::next_code_point(b2u[static_cast<std::size_t>(b)], i), static_cast<unsigned char>(b));
    }
  }

  std::vector<std::int32_t> encode(std::string_view text, bool add_bos) const override {
    std::vector<std::int32_t> ids;
    if (add_bos && bos_ >= 0) ids.push_back(bos_);
    // Cut out special tokens (earliest occurrence, longest on ties), BPE-encode the text between them.
    std::size_t pos = 0;
    while (pos < text.size()) {
      std::size_t best_at = std::string_view::npos, best_len = 0;
      std::int32_t best_id = -1;
      for (auto id : specials_) {
        const auto& s = tokens_[static_cast<std::size_t>(id)];
        if (s.empty()) continue;
        const auto at = text.find(s, pos);
        if (at == std::string_view::npos) continue;
        if (at < best_at || (at == best_at && s.size() > best_len)) {
          best_at = at;
          best_len = s.size();
          best_id = id;
        }
      }
      const std::size_t end = best_at == std::string_view::npos ? text.size() : best_at;
      encode_ordinary(text.substr(pos, end - pos), ids);
      if (best_id < 0) break;
      ids.push_back(best_id);
      pos = best_at + best_len;
    }
    return ids;
  }

  std::string decode_token(std::int32_t /*prev*/, std::int32_t id) const override {
    LOWBIT_CHECK(id >= 0 && id < vocab_size(), source_, ": token id ", id, " outside [0, ", vocab_size(), ")");
    const auto& piece = tokens_[static_cast<std::size_t>(id)];
    if (is_special(id)) return piece;
    std::string out;
    for (std::size_t i = 0; i < piece.size();) {
      const std::size_t start = i;
      const auto cp = detail::next_code_point(piece, i);
      auto it = unicode_to_byte_.find(cp);
      if (it != unicode_to_byte_.end())
        out += static_cast<char>(it->second);
      else
        out.append(piece, start, i - start);  // not a byte-level symbol: keep as is
    }
    return out;
  }

  std::int32_t bos_id() const override { return bos_; }
  std::int32_t eos_id() const override { return eos_; }
  int vocab_size() const override { return static_cast<int>(tokens_.size()); }
  bool adds_bos_by_default() const override { return add_bos_ && bos_ >= 0; }
  std::string describe() const override {
    return "byte-level BPE (" + (pre_.empty() ? std::string("custom") : pre_) + ", " + std::to_string(vocab_size()) +
           " tokens, " + std::to_string(ranks_.size()) + " merges) from " + source_;
  }
  bool is_special(std::int32_t id) const {
    return static_cast<std::size_t>(id) < special_flag_.size() && special_flag_[static_cast<std::size_t>(id)];
  }

 private:
  void encode_ordinary(std::string_view text, std::vector<std::int32_t>& ids) const {
    if (text.empty()) return;
    std::vector<std::string_view> pieces{text}, next;
#if defined(LOWBIT_WITH_PCRE2)
    for (const auto& splitter : splitters_) {
      next.clear();
      for (auto p : pieces) splitter->split(p, next);
      pieces.swap(next);
    }
#endif
    for (auto piece : pieces) encode_piece(piece, ids);
  }

  void encode_piece(std::string_view piece, std::vector<std::int32_t>& ids) const {
    {
      std::lock_guard<std::mutex> lock(cache_mutex_);
      auto it = cache_.find(std::string(piece));
      if (it != cache_.end()) {
        ids.insert(ids.end(), it->second.begin(), it->second.end());
        return;
      }
    }
    const auto& b2u = detail::byte_to_unicode();
    std::vector<detail::MergeSymbol> symbols;
    symbols.reserve(piece.size());
    for (unsigned char b : piece) symbols.push_back({b2u[b], -1});
    std::string key;
    auto merged = detail::score_merge(std::move(symbols), [&](std::string_view a, std::string_view b) {
      std::optional<std::pair<std::int32_t, float>> hit;
      key.assign(a);
      key += ' ';
      key.append(b);
      auto r = ranks_.find(key);
      if (r == ranks_.end()) return hit;
      key.erase(a.size(), 1);
      auto t = index_.find(key);
      if (t != index_.end()) hit.emplace(t->second, -static_cast<float>(r->second));
      return hit;
    });
    std::vector<std::int32_t> out;
    for (auto& s : merged) {
      auto t = index_.find(s.text);
      if (t != index_.end()) {
        out.push_back(t->second);
      } else {
        LOWBIT_CHECK(unk_ >= 0, source_, ": BPE symbol '", s.text, "' is not in the vocabulary and there is no unknown token");
        out.push_back(unk_);
      }
    }
    ids.insert(ids.end(), out.begin(), out.end());
    std::lock_guard<std::mutex> lock(cache_mutex_);
    if (cache_.size() > 200000) cache_.clear();
    cache_.emplace(std::string(piece), std::move(out));
  }

  std::string source_, pre_;
  std::vector<std::string> tokens_;
  std::unordered_map<std::string, std::int32_t> index_;
  std::unordered_map<std::string, std::int32_t> ranks_;  // "left right" -> rank
  std::vector<std::int32_t> specials_;
  std::vector<char> special_flag_;
  std::unordered_map<std::uint32_t, unsigned char> unicode_to_byte_;
  std::int32_t bos_ = -1, eos_ = -1, unk_ = -1;
  bool add_bos_ = false;
#if defined(LOWBIT_WITH_PCRE2)
  std::vector<std::unique_ptr<detail::Pcre2Splitter>> splitters_;
#endif
  mutable std::mutex cache_mutex_;
  mutable std::unordered_map<std::string, std::vector<std::int32_t>> cache_;
};

}  // namespace lowbit::io
