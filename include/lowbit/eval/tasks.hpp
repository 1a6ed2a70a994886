// Zero-shot task files turned into multiple-choice items with lm-evaluation-harness's prompts: each
// item is a list of (context, continuation) requests, one per choice, plus the gold index. PIQA and
// ARC-Easy use "Question: ...\nAnswer:" with " {choice}"; WinoGrande scores the shared continuation
// after each filled-in context (partial scoring); HellaSwag reads llama.cpp's 6-lines-per-item text
// (bzip2) with " {ending}"; LAMBADA is one request whose continuation is " {last word}".
#pragma once

#include <cstdio>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#if defined(LOWBIT_WITH_BZIP2)
#include <bzlib.h>
#endif

#include "../core/error.hpp"
#include "text_input.hpp"

namespace lowbit::eval {

struct ChoiceRequest {
  std::string context, continuation;
  std::size_t norm_bytes = 0;  // acc_norm's length: UTF-8 bytes of the choice text (without the " " delimiter)
};

inline ChoiceRequest make_request(std::string context, const std::string& choice, const std::string& delimiter = " ") {
  return {std::move(context), delimiter + choice, choice.size()};
}

struct TaskItem {
  std::vector<ChoiceRequest> choices;  // one request per choice (LAMBADA: exactly one)
  int gold = 0;
  std::size_t line = 0;  // where it came from, for messages
};

struct Task {
  std::string name, file;
  std::vector<TaskItem> items;
};

// Reads a whole .bz2 file through libbz2.
inline std::string read_bzip2_file(const std::string& path) {
#if defined(LOWBIT_WITH_BZIP2)
  FILE* f = std::fopen(path.c_str(), "rb");
  LOWBIT_CHECK(f, "task file ", path, ": cannot open");
  int err = BZ_OK;
  BZFILE* bz = BZ2_bzReadOpen(&err, f, 0, 0, nullptr, 0);
  if (err != BZ_OK) {
    std::fclose(f);
    fail("task file ", path, ": not a bzip2 stream (libbz2 error ", err, ")");
  }
  std::string out;
  char buf[1 << 16];
  while (err == BZ_OK) {
    const int n = BZ2_bzRead(&err, bz, buf, sizeof buf);
    if (err == BZ_OK || err == BZ_STREAM_END) out.append(buf, static_cast<std::size_t>(n));
  }
  BZ2_bzReadClose(nullptr, bz);
  std::fclose(f);
  LOWBIT_CHECK(err == BZ_STREAM_END, "task file ", path, ": corrupt or truncated bzip2 data (libbz2 error ", err,
               ") after ", out.size(), " bytes");
  return out;
#else
  fail("task file ", path, ": reading .bz2 needs libbz2 (rebuild with libbz2-dev installed)");
#endif
}

namespace detail {

inline int checked_gold(const nlohmann::json& j, std::size_t n_choices, const std::string& path, std::size_t line) {
  const int gold = j.at("gold").get<int>();
  LOWBIT_CHECK(gold >= 0 && static_cast<std::size_t>(gold) < n_choices, path, ":", line, ": gold ", gold,
               " is not a valid index into ", n_choices, " choices");
  return gold;
}

}  // namespace detail

// PIQA (llm-foundry jsonl: query "Question: {goal}\n", choices, gold).
inline Task read_piqa(const std::string& path) {
  Task t{"piqa", path, {}};
  detail::for_each_jsonl(path, [&](const nlohmann::json& j, std::size_t line) {
    TaskItem item;
    item.line = line;
    const auto query = j.at("query").get<std::string>();
    for (const auto& c : j.at("choices")) item.choices.push_back(make_request(query + "Answer:", c.get<std::string>()));
    LOWBIT_CHECK(item.choices.size() >= 2, path, ":", line, ": expected at least 2 choices");
    item.gold = detail::checked_gold(j, item.choices.size(), path, line);
    t.items.push_back(std::move(item));
  });
  return t;
}

// ARC (question, choices, gold).
inline Task read_arc(const std::string& path, const std::string& name = "arc_easy") {
  Task t{name, path, {}};
  detail::for_each_jsonl(path, [&](const nlohmann::json& j, std::size_t line) {
    TaskItem item;
    item.line = line;
    const auto context = "Question: " + j.at("question").get<std::string>() + "\nAnswer:";
    for (const auto& c : j.at("choices")) item.choices.push_back(make_request(context, c.get<std::string>()));
    LOWBIT_CHECK(item.choices.size() >= 2, path, ":", line, ": expected at least 2 choices");
    item.gold = detail::checked_gold(j, item.choices.size(), path, line);
    t.items.push_back(std::move(item));
  });
  return t;
}

// WinoGrande, partial scoring: the continuation after the blank, scored after each filled-in context.
inline Task read_winogrande(const std::string& path) {
  Task t{"winogrande", path, {}};
  detail::for_each_jsonl(path, [&](const nlohmann::json& j, std::size_t line) {
    TaskItem item;
    item.line = line;
    const auto continuation = j.at("continuation").get<std::string>();
    for (const auto& c : j.at("context_options")) item.choices.push_back(make_request(c.get<std::string>(), continuation));
    LOWBIT_CHECK(item.choices.size() == 2, path, ":", line, ": expected 2 context options, found ", item.choices.size());
    item.gold = detail::checked_gold(j, item.choices.size(), path, line);
    t.items.push_back(std::move(item));
  });
  return t;
}

// LAMBADA (OpenAI): context and the last word; one request per item, gold 0.
inline Task read_lambada(const std::string& path) {
  Task t{"lambada", path, {}};
  detail::for_each_jsonl(path, [&](const nlohmann::json& j, std::size_t line) {
    TaskItem item;
    item.line = line;
    item.choices.push_back(make_request(j.at("context").get<std::string>(), j.at("continuation").get<std::string>()));
    t.items.push_back(std::move(item));
  });
  return t;
}

// HellaSwag in llama.cpp's format: per item 6 lines (context, gold label 0-3, four endings); the
// text may come from a .bz2 file.
inline Task read_hellaswag(const std::string& path) {
  const std::string bytes = path.size() > 4 && path.substr(path.size() - 4) == ".bz2" ? read_bzip2_file(path) : read_file_bytes(path);
  require_utf8(bytes, path);
  std::vector<std::string_view> lines;
  for (std::size_t start = 0; start < bytes.size();) {
    auto end = bytes.find('\n', start);
    if (end == std::string::npos) end = bytes.size();
    lines.emplace_back(bytes.data() + start, end - start);
    start = end + 1;
  }
  while (!lines.empty() && lines.back().empty()) lines.pop_back();
  LOWBIT_CHECK(lines.size() % 6 == 0, path, ": ", lines.size(), " lines is not a multiple of 6 (context, label, 4 endings per item)");
  Task t{"hellaswag", path, {}};
  for (std::size_t i = 0; i < lines.size(); i += 6) {
    TaskItem item;
    item.line = i + 1;
    const auto label = lines[i + 1];
    LOWBIT_CHECK(label.size() == 1 && label[0] >= '0' && label[0] <= '3', path, ":", i + 2, ": gold label '", std::string(label),
                 "' is not one of 0, 1, 2, 3");
    item.gold = label[0] - '0';
    for (int k = 0; k < 4; ++k)
      item.choices.push_back(make_request(std::string(lines[i]), std::string(lines[i + 2 + static_cast<std::size_t>(k)])));
    t.items.push_back(std::move(item));
  }
  return t;
}

// The standard file of each task under `data_dir` (../shared/data/tasks layout).
inline Task read_task(const std::string& name, const std::string& data_dir) {
  const std::string d = data_dir.empty() || data_dir.back() == '/' ? data_dir : data_dir + "/";
  if (name == "piqa") return read_piqa(d + "piqa_validation.jsonl");
  if (name == "arc_easy") return read_arc(d + "arc_easy_test.jsonl", "arc_easy");
  if (name == "arc_challenge") return read_arc(d + "arc_challenge_test.jsonl", "arc_challenge");
  if (name == "winogrande") return read_winogrande(d + "winogrande_xl_dev.jsonl");
  if (name == "hellaswag") return read_hellaswag(d + "hellaswag_validation.txt.bz2");
  if (name == "lambada" || name == "lambada_openai") return read_lambada(d + "lambada_openai_test.jsonl");
  fail("unknown task '", name, "' (known: piqa, arc_easy, arc_challenge, winogrande, hellaswag, lambada)");
}

}  // namespace lowbit::eval
