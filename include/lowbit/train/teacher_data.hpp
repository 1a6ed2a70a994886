// BitDistiller's teacher data (ALGORITHMS.md §2.3): the full-precision model writes continuations of
// prompts drawn from calibration text (never from the evaluation text), and the quantized student is then
// distilled on those sequences, so it learns the teacher's own distribution rather than a corpus's.
//
// Prompts: the first `prompt_chars` characters (cut at a UTF-8 boundary) of paragraphs of at least
// `min_paragraph_chars` characters (the paper: 128 of WikiText paragraphs longer than 512). A plain text
// source is split into paragraphs at line breaks; a .jsonl source gives one paragraph per document. Several
// sources mix in stated proportions (the paper mixes WikiText and Alpaca): each source's count is its share
// of `samples` by the largest-remainder rule, its paragraphs are drawn without replacement in a seeded order,
// and the whole list is shuffled with the seed.
//
// Continuations: temperature 0.7, top-p 1 (the paper's vLLM settings), up to `max_new_tokens`, stopped at
// EOS; sample i draws from its own generator (seed, i), so a sample does not depend on the ones before it.
//
// The file is JSONL: a header line (the options, the model's fingerprint, the tokenizer) and one line per
// sample {index, source, prompt, prompt_ids, continuation, continuation_ids}. Lines are appended and flushed
// one by one; a rerun with the same options keeps every complete line (a line cut by a kill is dropped) and
// continues with the next index, so an interrupted run ends with the same file as an uninterrupted one.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "../core/atomic_file.hpp"
#include "../core/error.hpp"
#include "../core/progress.hpp"
#include "../core/rng.hpp"
#include "../eval/chat.hpp"
#include "../eval/decode.hpp"
#include "../eval/text_input.hpp"
#include "../io/tokenizer.hpp"
#include "../nn/model.hpp"
#include "../nn/sampler.hpp"
#include "token_data.hpp"

namespace lowbit::train {

inline constexpr int kTeacherDataVersion = 1;

struct TeacherSource {
  std::string path;
  double weight = 1.0;  // share of the samples, relative to the other sources
};

// "FILE" or "FILE:WEIGHT" (the weight a positive number).
inline TeacherSource parse_teacher_source(const std::string& text) {
  TeacherSource s{text, 1.0};
  const auto colon = text.rfind(':');
  if (colon != std::string::npos && colon + 1 < text.size()) {
    const std::string tail = text.substr(colon + 1);
    char* end = nullptr;
    const double w = std::strtod(tail.c_str(), &end);
    if (end && *end == '\0') {
      LOWBIT_CHECK(w > 0 && w < 1e9, "--prompts ", text, ": the weight after ':' must be a positive number");
      s.path = text.substr(0, colon);
      s.weight = w;
    }
  }
  LOWBIT_CHECK(!s.path.empty(), "--prompts: empty file name in '", text, "'");
  return s;
}

struct TeacherDataOptions {
  int samples = 256;
  int max_new_tokens = 256;
  float temperature = 0.7f;
  float top_p = 1.0f;
  std::uint64_t seed = 0;
  int prompt_chars = 128;
  int min_paragraph_chars = 512;
  // Chat mode: each prompt is the user turn of the model's ChatML template (eval/chat.hpp; this is the
  // template text, or "" for the default ChatML), the teacher answers as the assistant, and the
  // end-of-turn token stops it (and ends the continuation, so a student learns to stop). The sample's
  // prompt (text and ids) is the rendered template.
  bool chat = false;
  std::string chat_template;
  bool quiet = false;

  nlohmann::json to_json() const {
    nlohmann::json j = {{"samples", samples},       {"max_new_tokens", max_new_tokens},
                        {"temperature", temperature}, {"top_p", top_p},
                        {"seed", seed},             {"prompt_chars", prompt_chars},
                        {"min_paragraph_chars", min_paragraph_chars}};
    if (chat) j["chat"] = true;  // absent for plain runs, so their files stay valid
    return j;
  }
};

inline void check(const TeacherDataOptions& o) {
  LOWBIT_CHECK(o.samples >= 1 && o.samples <= (1 << 24), "teacher data: samples must be in [1, 2^24], got ", o.samples);
  LOWBIT_CHECK(o.max_new_tokens >= 1 && o.max_new_tokens <= (1 << 20), "teacher data: max new tokens must be in [1, 2^20], got ",
               o.max_new_tokens);
  LOWBIT_CHECK(o.temperature >= 0 && o.temperature <= 100, "teacher data: temperature must be in [0, 100], got ", o.temperature);
  LOWBIT_CHECK(o.top_p >= 0 && o.top_p <= 1, "teacher data: top-p must be in [0, 1], got ", o.top_p);
  LOWBIT_CHECK(o.prompt_chars >= 1 && o.prompt_chars <= (1 << 20), "teacher data: prompt characters must be in [1, 2^20], got ",
               o.prompt_chars);
  LOWBIT_CHECK(o.min_paragraph_chars >= o.prompt_chars, "teacher data: the minimum paragraph length (",
               o.min_paragraph_chars, ") is below the prompt length (", o.prompt_chars, ")");
}

struct TeacherPrompt {
  std::string source;
  std::string text;
};

// The first `chars` bytes of `s`, shortened so no UTF-8 character is cut.
inline std::string utf8_prefix(const std::string& s, std::size_t chars) {
  if (s.size() <= chars) return s;
  std::size_t n = chars;
  while (n > 0 && (static_cast<unsigned char>(s[n]) & 0xC0u) == 0x80u) --n;
  return s.substr(0, n);
}

// The paragraphs of a prompt source: lines of a text file, documents of a .jsonl file (trimmed).
inline std::vector<std::string> source_paragraphs(const std::string& path) {
  std::vector<std::string> out;
  for (auto& doc : eval::read_documents(path)) {
    if (eval::is_jsonl_path(path)) {
      out.emplace_back(eval::strip(doc));
      continue;
    }
    std::size_t start = 0;
    while (start <= doc.size()) {
      auto end = doc.find('\n', start);
      if (end == std::string::npos) end = doc.size();
      out.emplace_back(eval::strip(std::string_view(doc).substr(start, end - start)));
      start = end + 1;
    }
  }
  return out;
}

// Counts per source proportional to the weights, summing to `total` (largest remainders, ties by order).
inline std::vector<int> proportional_counts(const std::vector<double>& weights, int total) {
  double sum = 0;
  for (double w : weights) sum += w;
  std::vector<int> counts(weights.size());
  std::vector<std::pair<double, std::size_t>> rest;
  int given = 0;
  for (std::size_t i = 0; i < weights.size(); ++i) {
    const double exact = total * weights[i] / sum;
    counts[i] = static_cast<int>(exact);
    given += counts[i];
    rest.emplace_back(exact - counts[i], i);
  }
  std::stable_sort(rest.begin(), rest.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
  for (std::size_t k = 0; given < total; ++k, ++given) ++counts[rest[k % rest.size()].second];
  return counts;
}

inline std::vector<TeacherPrompt> draw_teacher_prompts(const std::vector<TeacherSource>& sources,
                                                       const TeacherDataOptions& o) {
  LOWBIT_CHECK(!sources.empty(), "teacher data: no prompt source was given");
  std::vector<double> weights;
  for (const auto& s : sources) weights.push_back(s.weight);
  const auto counts = proportional_counts(weights, o.samples);
  std::vector<TeacherPrompt> prompts;
  for (std::size_t i = 0; i < sources.size(); ++i) {
    if (counts[i] == 0) continue;
    std::vector<std::string> eligible;
    for (auto& p : source_paragraphs(sources[i].path))
      if (static_cast<int>(p.size()) >= o.min_paragraph_chars) eligible.push_back(std::move(p));
    LOWBIT_CHECK(static_cast<int>(eligible.size()) >= counts[i], sources[i].path, ": ", counts[i],
                 " prompts are wanted from it but it has only ", eligible.size(), " paragraphs of at least ",
                 o.min_paragraph_chars, " characters (lower --min-paragraph-chars or --samples, or change the weights)");
    Rng rng = Rng(o.seed).fork(100 + i);
    for (std::size_t k = eligible.size(); k > 1; --k) std::swap(eligible[k - 1], eligible[rng.below(k)]);
    for (int k = 0; k < counts[i]; ++k)
      prompts.push_back({sources[i].path, utf8_prefix(eligible[static_cast<std::size_t>(k)], static_cast<std::size_t>(o.prompt_chars))});
  }
  Rng rng = Rng(o.seed).fork(99);
  for (std::size_t k = prompts.size(); k > 1; --k) std::swap(prompts[k - 1], prompts[rng.below(k)]);
  return prompts;
}

// How many prompts occur verbatim in `text` (an evaluation text they must not come from).
inline int prompts_found_in(const std::vector<TeacherPrompt>& prompts, const std::string& text) {
  int n = 0;
  for (const auto& p : prompts) n += text.find(p.text) != std::string::npos;
  return n;
}

struct TeacherSample {
  std::int64_t index = 0;
  std::string source, prompt, continuation;
  std::vector<std::int32_t> prompt_ids, continuation_ids;

  nlohmann::json to_json() const {
    return {{"index", index},        {"source", source},           {"prompt", prompt},
            {"prompt_ids", prompt_ids}, {"continuation", continuation}, {"continuation_ids", continuation_ids}};
  }
};

struct TeacherHeader {
  nlohmann::json options;  // TeacherDataOptions::to_json + the sources
  std::string model, model_fingerprint, tokenizer;
  int vocab_size = 0;

  nlohmann::json to_json() const {
    return {{"lowbit_teacher_data", kTeacherDataVersion}, {"options", options},      {"model", model},
            {"model_fingerprint", model_fingerprint},     {"tokenizer", tokenizer}, {"vocab_size", vocab_size}};
  }
};

struct TeacherData {
  TeacherHeader header;
  std::vector<TeacherSample> samples;
  std::uint64_t complete_bytes = 0;  // bytes of the file up to the last complete line
};

namespace detail {

inline std::vector<std::int32_t> read_ids(const nlohmann::json& j, const char* field, int vocab, const std::string& where) {
  LOWBIT_CHECK(j.contains(field) && j[field].is_array(), where, ": '", field, "' is missing or not a list");
  std::vector<std::int32_t> ids;
  ids.reserve(j[field].size());
  for (const auto& v : j[field]) {
    LOWBIT_CHECK(v.is_number_integer(), where, ": '", field, "' holds a non-integer");
    const auto id = v.get<std::int64_t>();
    LOWBIT_CHECK(id >= 0 && id < vocab, where, ": token id ", id, " in '", field, "' is outside the vocabulary [0, ",
                 vocab, ")");
    ids.push_back(static_cast<std::int32_t>(id));
  }
  return ids;
}

inline std::string read_string(const nlohmann::json& j, const char* field, const std::string& where) {
  LOWBIT_CHECK(j.contains(field) && j[field].is_string(), where, ": '", field, "' is missing or not a string");
  return j[field].get<std::string>();
}

}  // namespace detail

// Reads a teacher-data file: the header, then every complete sample line in index order. A last line
// without its newline (a write cut by a kill) is ignored; anything else malformed is an error naming the line.
inline TeacherData read_teacher_data(const std::string& path) {
  const std::string bytes = eval::read_file_bytes(path);
  TeacherData d;
  std::size_t start = 0;
  int line_no = 0;
  while (start < bytes.size()) {
    const auto end = bytes.find('\n', start);
    if (end == std::string::npos) break;  // cut line
    ++line_no;
    const std::string where = path + ":" + std::to_string(line_no);
    const std::string_view line(bytes.data() + start, end - start);
    eval::require_utf8(line, path, static_cast<std::size_t>(line_no));
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(line);
    } catch (const nlohmann::json::exception& e) {
      fail(where, ": not valid JSON (", e.what(), ")");
    }
    LOWBIT_CHECK(j.is_object(), where, ": a line must be a JSON object");
    if (line_no == 1) {
      LOWBIT_CHECK(j.contains("lowbit_teacher_data") && j["lowbit_teacher_data"] == kTeacherDataVersion, where,
                   ": not a lowbit teacher-data file (its first line must be the header written by `lowbit teacher-data`, "
                   "version ", kTeacherDataVersion, ")");
      d.header.options = j.value("options", nlohmann::json::object());
      d.header.model = detail::read_string(j, "model", where);
      d.header.model_fingerprint = detail::read_string(j, "model_fingerprint", where);
      d.header.tokenizer = detail::read_string(j, "tokenizer", where);
      LOWBIT_CHECK(j.contains("vocab_size") && j["vocab_size"].is_number_integer(), where, ": 'vocab_size' is missing");
      const auto v = j["vocab_size"].get<std::int64_t>();
      LOWBIT_CHECK(v > 0 && v < (1 << 24), where, ": vocab_size ", v, " is out of range");
      d.header.vocab_size = static_cast<int>(v);
    } else {
      TeacherSample s;
      LOWBIT_CHECK(j.contains("index") && j["index"].is_number_integer(), where, ": 'index' is missing");
      s.index = j["index"].get<std::int64_t>();
      LOWBIT_CHECK(s.index == static_cast<std::int64_t>(d.samples.size()), where, ": sample index ", s.index,
                   " where ", d.samples.size(), " was expected");
      s.source = detail::read_string(j, "source", where);
      s.prompt = detail::read_string(j, "prompt", where);
      s.continuation = detail::read_string(j, "continuation", where);
      s.prompt_ids = detail::read_ids(j, "prompt_ids", d.header.vocab_size, where);
      s.continuation_ids = detail::read_ids(j, "continuation_ids", d.header.vocab_size, where);
      LOWBIT_CHECK(!s.prompt_ids.empty(), where, ": empty prompt");
      d.samples.push_back(std::move(s));
    }
    start = end + 1;
    d.complete_bytes = start;
  }
  LOWBIT_CHECK(line_no >= 1, path, ": empty teacher-data file (no header line)");
  return d;
}

// The continuation of `prompt` (token ids) that sample `index` of a run seeded by `seed` gets: sampled
// with its own generator, stopped at any of `stops` or after `max_new_tokens` (fewer where the model's
// context ends).
inline std::vector<std::int32_t> teacher_continuation(nn::Llama& model, const std::vector<std::int32_t>& prompt,
                                                      const TeacherDataOptions& o, std::uint64_t index,
                                                      const std::vector<std::int32_t>& stops) {
  const auto& cfg = model.config();
  LOWBIT_CHECK(!prompt.empty(), "teacher data: prompt ", index, " has no tokens");
  const int room = cfg.max_seq_len - static_cast<int>(prompt.size());
  LOWBIT_CHECK(room > 0, "teacher data: prompt ", index, " has ", prompt.size(), " tokens, the model's context is ",
               cfg.max_seq_len);
  const int budget = std::min(o.max_new_tokens, room);
  nn::KVCache cache(cfg, static_cast<int>(prompt.size()) + budget);
  nn::Sampler sampler(cfg.vocab_size, o.temperature, o.top_p, Rng(o.seed).fork(index).next_u64());
  eval::DecodeOptions dopt;
  dopt.max_new_tokens = budget;
  dopt.stop_tokens = stops;
  auto r = eval::decode(model, cache, prompt, sampler, dopt);
  // A chat answer keeps its end-of-turn token, so a student distilled on it learns to stop.
  if (o.chat && r.stopped) r.tokens.push_back(r.stop_token);
  return std::move(r.tokens);
}

// One sample as its JSONL line. A continuation cut inside a multi-byte character (at the token limit, or
// a model that emits a character's bytes across tokens and then stops) decodes to invalid UTF-8, which JSON
// cannot hold: such bytes become U+FFFD in the text fields. The token ids are exact either way, and they
// are what training reads.
inline std::string sample_line(const TeacherSample& s) {
  return s.to_json().dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

struct TeacherDataResult {
  std::int64_t written = 0, kept = 0;  // samples generated now, and found complete in the file
  std::int64_t new_tokens = 0;         // continuation tokens generated now
  double seconds = 0;
};

// Generates the teacher data into `out` (appending to a file of the same run; see the top of the file).
inline TeacherDataResult generate_teacher_data(nn::Llama& model, const io::Tokenizer& tok,
                                               const std::vector<TeacherPrompt>& prompts, const TeacherHeader& header,
                                               const TeacherDataOptions& o, const std::filesystem::path& out) {
  check(o);
  const auto& cfg = model.config();
  LOWBIT_CHECK(tok.vocab_size() <= cfg.vocab_size, "teacher data: tokenizer ", tok.describe(), " has ", tok.vocab_size(),
               " tokens, the model ", cfg.vocab_size);
  TeacherDataResult result;
  std::int64_t done = 0;
  if (std::filesystem::exists(out)) {
    const auto existing = read_teacher_data(out.string());
    LOWBIT_CHECK(existing.header.to_json() == header.to_json(), out.string(),
                 ": this teacher-data file was written by another run (other model, tokenizer or options); remove it "
                 "or pass the same options to continue it");
    done = static_cast<std::int64_t>(existing.samples.size());
    LOWBIT_CHECK(done <= static_cast<std::int64_t>(prompts.size()), out.string(), ": holds ", done,
                 " samples, more than the ", prompts.size(), " asked for");
    if (existing.complete_bytes != std::filesystem::file_size(out))  // drop a line cut by a kill
      write_file_atomically(out, eval::read_file_bytes(out.string()).substr(0, existing.complete_bytes));
    result.kept = done;
  } else {
    write_file_atomically(out, header.to_json().dump() + "\n");
  }
  std::ofstream file(out, std::ios::binary | std::ios::app);
  LOWBIT_CHECK(file, "cannot open ", out.string(), " to append teacher samples");
  std::vector<std::int32_t> stops;
  if (tok.eos_id() >= 0) stops.push_back(tok.eos_id());
  if (tok.bos_id() >= 0 && tok.bos_id() != tok.eos_id()) stops.push_back(tok.bos_id());
  eval::Stopwatch clock;
  Progress progress("teacher data", static_cast<std::int64_t>(prompts.size()) - done, "sample", o.quiet);
  for (std::int64_t i = done; i < static_cast<std::int64_t>(prompts.size()); ++i) {
    const auto& p = prompts[static_cast<std::size_t>(i)];
    TeacherSample s;
    s.index = i;
    s.source = p.source;
    auto sample_stops = stops;
    if (o.chat) {
      const auto rendered = eval::chat_prompt(tok, o.chat_template, p.text);
      s.prompt = rendered.text;
      s.prompt_ids = rendered.tokens;
      sample_stops.push_back(rendered.end_of_turn);
    } else {
      s.prompt = p.text;
      s.prompt_ids = tok.encode(p.text, tok.adds_bos_by_default());
    }
    s.continuation_ids = teacher_continuation(model, s.prompt_ids, o, static_cast<std::uint64_t>(i), sample_stops);
    s.continuation = tok.decode(s.continuation_ids);
    file << sample_line(s) << '\n';
    file.flush();
    LOWBIT_CHECK(file, "teacher data: writing ", out.string(), " failed");
    ++result.written;
    result.new_tokens += static_cast<std::int64_t>(s.continuation_ids.size());
    char status[64];
    std::snprintf(status, sizeof status, "%lld tokens", static_cast<long long>(result.new_tokens));
    progress.update(1, status);
  }
  progress.finish();
  result.seconds = clock.wall();
  return result;
}

// Training data from a teacher-data file: each sample is prompt + continuation; the last `heldout_fraction`
// of the samples (at least one) are held out. Refuses a file made with another tokenizer or vocabulary.
inline TokenData teacher_token_data(const TeacherData& t, const std::string& source, int vocab_size,
                                           const std::string& tokenizer, double heldout_fraction) {
  LOWBIT_CHECK(t.header.vocab_size == vocab_size, source, ": teacher data has a vocabulary of ", t.header.vocab_size,
               " tokens, the model ", vocab_size, " (made for another model)");
  LOWBIT_CHECK(tokenizer.empty() || t.header.tokenizer == tokenizer, source, ": teacher data was tokenized by ",
               t.header.tokenizer, ", the model's tokenizer is ", tokenizer);
  LOWBIT_CHECK(t.samples.size() >= 2, source, ": ", t.samples.size(), " teacher samples; at least 2 are needed "
               "(training and held out)");
  const std::size_t held = std::clamp<std::size_t>(static_cast<std::size_t>(heldout_fraction * t.samples.size() + 0.5), 1,
                                                   t.samples.size() - 1);
  TokenData d;
  for (std::size_t i = 0; i < t.samples.size(); ++i) {
    auto& out = i + held < t.samples.size() ? d.train : d.heldout;
    out.insert(out.end(), t.samples[i].prompt_ids.begin(), t.samples[i].prompt_ids.end());
    out.insert(out.end(), t.samples[i].continuation_ids.begin(), t.samples[i].continuation_ids.end());
  }
  d.vocab_size = vocab_size;
  d.description = source;
  d.finalize();
  return d;
}

// Training data from calibration windows (no teacher data given): the last fraction of windows held out.
inline TokenData window_token_data(const std::vector<std::int32_t>& windows, int seqlen, int vocab_size,
                                          double heldout_fraction) {
  LOWBIT_CHECK(seqlen > 1 && windows.size() % static_cast<std::size_t>(seqlen) == 0 && windows.size() >= 2u * seqlen,
               "training on calibration windows needs at least 2 windows of ", seqlen, " tokens");
  const std::size_t n = windows.size() / static_cast<std::size_t>(seqlen);
  const std::size_t held = std::clamp<std::size_t>(static_cast<std::size_t>(heldout_fraction * n + 0.5), 1, n - 1);
  TokenData d;
  d.train.assign(windows.begin(), windows.end() - static_cast<std::ptrdiff_t>(held * seqlen));
  d.heldout.assign(windows.end() - static_cast<std::ptrdiff_t>(held * seqlen), windows.end());
  d.vocab_size = vocab_size;
  d.description = "calibration windows";
  d.finalize();
  return d;
}

}  // namespace lowbit::train
