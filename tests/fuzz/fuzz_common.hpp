// Shared pieces of lowbit's libFuzzer harnesses (tests/fuzz/fuzz_*.cpp).
//
// The promise every harness checks: a malformed file makes a loader throw lowbit::Error, never crash,
// never make a huge allocation. Harnesses therefore catch lowbit::Error only (through `expect_error_only`);
// any other exception (std::bad_alloc, std::length_error, nlohmann::json::exception, ...) escapes
// LLVMFuzzerTestOneInput, libFuzzer reports it as a deadly signal and keeps the input. Huge allocations
// are caught by running with -malloc_limit_mb / -rss_limit_mb (tools/fuzz.sh).
//
// All targets are linked into one executable (fuzz_main.cpp; one translation unit, since each harness
// instantiates most of the header-only library and compiling them apart costs ~2 minutes each); the
// target runs according to the name it is invoked by (fuzz_gguf -> `gguf`, a symlink per target) or to
// $LOWBIT_FUZZ_TARGET. A harness is written as
//
//   LOWBIT_FUZZ_TARGET(gguf) { ... data, size ... return 0; }
//
// Most loaders take a path, so the bytes go to a per-process scratch folder (in $LOWBIT_FUZZ_TMPDIR,
// else /dev/shm when it exists, else $TMPDIR or /tmp), removed at exit.
#pragma once

#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <memory>
#include <fstream>
#include <string>
#include <string_view>
#include <vector>

#include <lowbit/core/error.hpp>
#include <lowbit/io/tokenizer.hpp>

namespace lowbit_fuzz {

namespace fs = std::filesystem;

using TargetFn = int (*)(const std::uint8_t* data, std::size_t size);

inline std::map<std::string, TargetFn>& targets() {
  static std::map<std::string, TargetFn> all;
  return all;
}
inline bool register_target(const char* name, TargetFn fn) {
  targets()[name] = fn;
  return true;
}

#define LOWBIT_FUZZ_TARGET(name)                                                                  \
  static int lowbit_fuzz_target_##name(const std::uint8_t* data, std::size_t size);              \
  [[maybe_unused]] static const bool lowbit_fuzz_registered_##name =                             \
      ::lowbit_fuzz::register_target(#name, lowbit_fuzz_target_##name);                           \
  static int lowbit_fuzz_target_##name(const std::uint8_t* data, std::size_t size)

// The per-process scratch folder (created on first use, deleted at exit).
inline const fs::path& scratch_dir() {
  static const fs::path dir = [] {
    fs::path base;
    if (const char* env = std::getenv("LOWBIT_FUZZ_TMPDIR"); env && *env) base = env;
    else if (fs::is_directory("/dev/shm")) base = "/dev/shm";
    else if (const char* tmp = std::getenv("TMPDIR"); tmp && *tmp) base = tmp;
    else base = "/tmp";
    fs::path d = base / ("lowbit-fuzz-" + std::to_string(::getpid()));
    fs::create_directories(d);
    std::atexit([] {
      std::error_code ec;
      fs::remove_all(scratch_dir(), ec);
    });
    return d;
  }();
  return dir;
}

// Writes `bytes` to scratch_dir()/name and returns the path.
inline fs::path write_file(const std::string& name, std::string_view bytes) {
  const fs::path p = scratch_dir() / name;
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  out.close();
  if (!out) std::abort();  // the scratch folder is full: a harness problem, not a finding
  return p;
}

inline void remove_file(const std::string& name) {
  std::error_code ec;
  fs::remove(scratch_dir() / name, ec);
}

// With LOWBIT_FUZZ_VERBOSE=1 in the environment the swallowed errors are printed (to see how deep a
// seed gets: `LOWBIT_FUZZ_VERBOSE=1 build/fuzz/tests/fuzz/fuzz_gguf some_file`).
inline bool verbose() {
  static const bool on = [] {
    const char* v = std::getenv("LOWBIT_FUZZ_VERBOSE");
    return v && *v && *v != '0';
  }();
  return on;
}

// Runs `f`; a lowbit::Error is the expected outcome for a bad file and is swallowed, anything else
// propagates (and is a finding). Returns whether `f` completed without throwing.
template <class F>
bool expect_error_only(F&& f) {
  try {
    f();
    return true;
  } catch (const lowbit::Error& e) {
    if (verbose()) std::fprintf(stderr, "lowbit::Error: %s\n", e.what());
    return false;
  }
}

// Structure-aware harnesses take several pieces in one input, separated by this line. Missing pieces
// are empty strings.
inline constexpr std::string_view kSeparator = "\n=====\n";

inline std::vector<std::string> split_parts(const std::uint8_t* data, std::size_t size, std::size_t n) {
  std::string_view in(reinterpret_cast<const char*>(data), size);
  std::vector<std::string> parts;
  while (parts.size() + 1 < n) {
    const auto at = in.find(kSeparator);
    if (at == std::string_view::npos) break;
    parts.emplace_back(in.substr(0, at));
    in.remove_prefix(at + kSeparator.size());
  }
  parts.emplace_back(in);
  parts.resize(n);
  return parts;
}

// Drives a loaded tokenizer over awkward text (ASCII, multi-byte and invalid UTF-8, NUL, special-token
// lookalikes, digits, whitespace runs) and decodes what it produced and every small id: a tokenizer
// that loaded must not crash on use either.
inline void exercise_tokenizer(const lowbit::io::Tokenizer& tok) {
  static const std::string texts[] = {
      "",
      "Once upon a time, there was a little girl named Lily.",
      std::string("a\0b", 3),
      "<s>Hello</s> <|endoftext|> <unk> <0x41>",
      "caf\xc3\xa9 \xe4\xb8\xad\xe6\x96\x87 \xf0\x9f\x98\x80 \xe2\x96\x81x",
      "\xff\xfe\xc3 \x80\x80 \xed\xa0\x80 \xf4\x90\x80\x80",
      "12345 67\n\n\t  \r\n  x  ",
      "'s 't 're 've 'm 'll 'd ''''",
  };
  (void)tok.describe();
  const int vocab = tok.vocab_size();
  (void)tok.bos_id();
  (void)tok.eos_id();
  (void)tok.adds_bos_by_default();
  for (const auto& text : texts)
    for (bool bos : {false, true}) {
      std::vector<std::int32_t> ids;
      lowbit_fuzz::expect_error_only([&] { ids = tok.encode(text, bos); });
      for (auto id : ids)
        if (id < 0 || id >= vocab) std::abort();  // encode produced an id outside the vocabulary
      lowbit_fuzz::expect_error_only([&] { (void)tok.decode(ids); });
    }
  const int n = vocab < 300 ? vocab : 300;
  for (int id = -1; id <= n; ++id) {
    lowbit_fuzz::expect_error_only([&] { (void)tok.decode_token(-1, id); });
    lowbit_fuzz::expect_error_only([&] { (void)tok.decode_token(tok.bos_id(), id); });
  }
  lowbit_fuzz::expect_error_only([&] { (void)tok.decode_token(-1, vocab - 1); });
}

// The input written as scratch file `name` and opened through io::load_tokenizer (which picks the
// format by content); a tokenizer that loads is exercised. Returns it, or null when the file was refused.
inline std::unique_ptr<lowbit::io::Tokenizer> load_and_exercise_tokenizer(const std::string& name,
                                                                         const std::uint8_t* data,
                                                                         std::size_t size) {
  const auto path = write_file(name, {reinterpret_cast<const char*>(data), size});
  std::unique_ptr<lowbit::io::Tokenizer> tok;
  expect_error_only([&] { tok = lowbit::io::load_tokenizer("", path.string()); });
  if (tok) exercise_tokenizer(*tok);
  return tok;
}

}  // namespace lowbit_fuzz
