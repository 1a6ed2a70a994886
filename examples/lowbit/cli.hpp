// The subcommand registry of the `lowbit` tool. Each cmd_*.cpp registers itself with a static
// `Registration`, so adding a subcommand never edits a shared file. A setup function declares its
// options on the CLI11 subcommand and returns the action to run once parsing succeeded. The options
// most commands share (--model, --tokenizer, --threads, --quiet, --json) are one group, declared by
// add_common_options, and `invocation()` is the command line exactly as given, for reports.
#pragma once

#include <CLI/CLI.hpp>
#include <filesystem>
#include <functional>
#include <system_error>
#include <unistd.h>
#include <memory>
#include <string>
#include <vector>

#include <lowbit/core/error.hpp>
#include <lowbit/core/parallel.hpp>

namespace lowbit::cli {

using Action = std::function<int()>;
using Setup = std::function<Action(CLI::App&)>;

struct CommandSpec {
  std::string name;
  std::string description;
  Setup setup;
};

inline std::vector<CommandSpec>& registry() {
  static std::vector<CommandSpec> commands;
  return commands;
}

struct Registration {
  Registration(std::string name, std::string description, Setup setup) {
    registry().push_back({std::move(name), std::move(description), std::move(setup)});
  }
};

// ---- the shared option group ----------------------------------------------------------------------

struct CommonOptions {
  std::string model, tokenizer;
  int threads = 0;
  bool quiet = false, json = false;

  // Applies --threads (0: OpenMP's default).
  void apply() const {
    if (threads > 0) set_num_threads(threads);
  }
};

enum CommonOption : unsigned {
  kModel = 1u << 0,
  kModelRequired = 1u << 1,
  kTokenizer = 1u << 2,
  kThreads = 1u << 3,
  kQuiet = 1u << 4,
  kJson = 1u << 5,
  kAllCommon = kModel | kModelRequired | kTokenizer | kThreads | kQuiet | kJson,
};

// Declares the shared options a command takes (a CommonOption mask) in one "Common" group, with the
// same names and wording in every command; `model_help` and `tokenizer_help` say what --model and
// --tokenizer mean where a command differs from the usual.
inline void add_common_options(CLI::App& app, CommonOptions& o, unsigned which,
                               const std::string& model_help = "model file: GGUF, llama2.c .bin, HF safetensors "
                                                               "(file or folder), or a lowbit quantized file",
                               const std::string& tokenizer_help = "tokenizer file (default: inside or beside the model)") {
  auto* group = app.add_option_group("Common", "options shared by lowbit's commands");
  if (which & (kModel | kModelRequired)) {
    auto* opt = group->add_option("--model", o.model, model_help);
    if (which & kModelRequired) opt->required();
  }
  if (which & kTokenizer)
    group->add_option("--tokenizer", o.tokenizer, tokenizer_help);
  if (which & kThreads)
    group->add_option("--threads", o.threads, "threads (default: all cores)")->check(CLI::Range(1, 4096));
  if (which & kQuiet) group->add_flag("--quiet", o.quiet, "no progress output");
  if (which & kJson) group->add_flag("--json", o.json, "print the result as one JSON object on the last line of stdout");
}

// ---- checks that fail fast, before any long work -------------------------------------------------

// An output file `path` can be written: it is not a directory and its folder exists and is writable.
inline void check_output_file(const std::string& path, const char* option) {
  namespace fs = std::filesystem;
  std::error_code ec;
  LOWBIT_CHECK(!path.empty(), option, ": no output path given");
  LOWBIT_CHECK(!fs::is_directory(path, ec), option, " '", path, "' is a directory; give a file path");
  const fs::path dir = fs::path(path).parent_path().empty() ? fs::path(".") : fs::path(path).parent_path();
  LOWBIT_CHECK(fs::is_directory(dir, ec), option, " '", path, "': the folder '", dir.string(), "' does not exist");
  LOWBIT_CHECK(access(dir.c_str(), W_OK) == 0, option, " '", path, "': the folder '", dir.string(), "' is not writable");
}

// A folder option: absent (it will be created) or an existing folder, never a file.
inline void check_folder(const std::string& path, const char* option) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (path.empty() || !fs::exists(path, ec)) return;
  LOWBIT_CHECK(fs::is_directory(path, ec), option, " '", path, "' exists and is not a folder");
}

// An input file: exists and is a regular file (a folder or a missing path fails here, not mid-run).
inline void check_input_file(const std::string& path, const char* option) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (path.empty()) return;
  LOWBIT_CHECK(fs::exists(path, ec), option, " '", path, "' does not exist");
  LOWBIT_CHECK(fs::is_regular_file(path, ec), option, " '", path, "' is not a regular file");
}

// ---- the command line as given ------------------------------------------------------------------

inline std::string& invocation_storage() {
  static std::string text;
  return text;
}

// Records argv (main does this before parsing), each argument shell-quoted when it needs it, so a
// report's "command" reproduces the run with every option that was given.
inline void record_invocation(int argc, char** argv) {
  std::string out;
  for (int i = 0; i < argc; ++i) {
    std::string a = argv[i];
    if (i == 0) a = "lowbit";
    const bool plain = !a.empty() && a.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
                                                         "-_./:=+,@%") == std::string::npos;
    if (!plain) {
      std::string q = "'";
      for (char c : a) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
      a = q + "'";
    }
    out += (i ? " " : "") + a;
  }
  invocation_storage() = out;
}
inline const std::string& invocation() { return invocation_storage(); }

}  // namespace lowbit::cli
