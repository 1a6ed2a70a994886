// `lowbit generate`: text generation, llama2.c run.c style, with an fp32 model (GGUF, llama2.c) or a
// lowbit quantized file (its linears decode through their quantized kernels). With no prompt it starts
// from BOS; --temperature 0 is greedy, otherwise temperature sampling with optional top-p, seeded. The
// decoded text streams to stdout; prefill and decode speeds go to stderr, so stdout is exactly the text.
#include <cctype>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include <lowbit/core/error.hpp>
#include <lowbit/core/parallel.hpp>
#include <lowbit/eval/model_source.hpp>
#include <lowbit/io/gguf.hpp>
#include <lowbit/io/llama2c.hpp>
#include <lowbit/io/quantized_model.hpp>
#include <lowbit/io/tokenizer.hpp>
#include <lowbit/nn/model.hpp>
#include <lowbit/nn/sampler.hpp>

#include "cli.hpp"

namespace {

using namespace lowbit;

bool has_gguf_magic(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  char magic[4] = {};
  in.read(magic, 4);
  return in.gcount() == 4 && std::memcmp(magic, "GGUF", 4) == 0;
}

// run.c's safe_printf: a piece that is a single non-printable ASCII byte (other than whitespace) is
// not written; bytes >= 0x80 pass through, they are parts of UTF-8 characters.
void print_piece(const std::string& piece) {
  if (piece.empty()) return;
  if (piece.size() == 1) {
    const auto b = static_cast<unsigned char>(piece[0]);
    if (b < 0x80 && !(std::isprint(b) || std::isspace(b))) return;
  }
  std::fwrite(piece.data(), 1, piece.size(), stdout);
  std::fflush(stdout);
}

std::vector<std::int32_t> parse_ids(const std::string& list) {
  std::vector<std::int32_t> ids;
  std::stringstream in(list);
  std::string item;
  while (std::getline(in, item, ',')) {
    if (item.find_first_not_of(" \t") == std::string::npos) continue;
    std::size_t used = 0;
    long v = 0;
    try {
      v = std::stol(item, &used);
    } catch (const std::exception&) {
      fail("--prompt-ids: '", item, "' is not an integer token id");
    }
    LOWBIT_CHECK(item.find_first_not_of(" \t", used) == std::string::npos && v >= 0 && v <= INT32_MAX,
                 "--prompt-ids: '", item, "' is not a non-negative token id");
    ids.push_back(static_cast<std::int32_t>(v));
  }
  return ids;
}

struct Options : cli::CommonOptions {
  std::string prompt, prompt_ids;
  int steps = 256;
  float temperature = 1.0f;
  float top_p = 0.9f;
  std::uint64_t seed = 0;
};

// The model at `path`: a lowbit quantized file (its quantized linears decode through their kernels),
// a GGUF file, or a llama2.c checkpoint.
nn::Llama load_model(const std::string& path, bool gguf) {
  if (io::is_quantized_model_file(path)) return io::load_quantized_model(path);
  return nn::Llama(gguf ? io::load_gguf(path) : io::load_llama2c(path));
}

int run(const Options& o) {
  o.apply();
  const bool gguf = has_gguf_magic(o.model);
  const bool quantized = io::is_quantized_model_file(o.model);
  const auto load_start = std::chrono::steady_clock::now();
  nn::Llama model = load_model(o.model, gguf);
  const auto& cfg = model.config();

  // A quantized file finds its tokenizer through the model it was quantized from.
  std::unique_ptr<io::Tokenizer> tokenizer;
  if (!o.tokenizer.empty() || gguf || quantized) tokenizer = eval::load_any_tokenizer(o.model, o.tokenizer);
  std::int32_t bos = 1;  // llama2.c
  if (tokenizer)
    bos = tokenizer->bos_id();
  else if (gguf)
    bos = static_cast<std::int32_t>(io::GgufFile(o.model).get_int("tokenizer.ggml.bos_token_id"));
  const std::int32_t eos = tokenizer ? tokenizer->eos_id() : -1;

  std::vector<std::int32_t> prompt;
  if (!o.prompt_ids.empty()) {
    prompt = parse_ids(o.prompt_ids);
  } else if (!o.prompt.empty()) {
    LOWBIT_CHECK(tokenizer != nullptr, "--prompt needs a tokenizer (--tokenizer FILE), or pass --prompt-ids");
    prompt = tokenizer->encode(o.prompt, tokenizer->adds_bos_by_default());
  }
  if (prompt.empty()) {
    LOWBIT_CHECK(bos >= 0, o.model, ": the vocabulary has no BOS token; give a prompt");
    prompt.push_back(bos);
  }
  for (auto id : prompt)
    LOWBIT_CHECK(id >= 0 && id < cfg.vocab_size, "prompt token id ", id, " is outside the vocabulary [0, ",
                 cfg.vocab_size, ")");
  const int max_len = cfg.max_seq_len;
  LOWBIT_CHECK(static_cast<int>(prompt.size()) < max_len, "prompt has ", prompt.size(),
               " tokens; the model's context is ", max_len);
  const int total = std::min<int>(max_len, static_cast<int>(prompt.size()) + std::max(0, o.steps));
  const double load_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - load_start).count();

  auto decode = [&](std::int32_t prev, std::int32_t id) {
    if (tokenizer)
      print_piece(tokenizer->decode_token(prev, id));
    else
      std::printf("%s%d", prev < 0 ? "" : " ", id), std::fflush(stdout);
  };
  for (std::size_t i = 0; i < prompt.size(); ++i)
    if (i > 0 || prompt[0] != bos) decode(i > 0 ? prompt[i - 1] : -1, prompt[i]);

  auto cache = model.make_cache(total);
  nn::Sampler sampler(cfg.vocab_size, o.temperature, o.top_p, o.seed);
  std::vector<float> logits(static_cast<std::size_t>(cfg.vocab_size));
  const auto t0 = std::chrono::steady_clock::now();
  model.forward_prefill(prompt.data(), static_cast<int>(prompt.size()), 0, cache, logits.data(), true);
  const auto t1 = std::chrono::steady_clock::now();
  std::int32_t token = prompt.back();
  int pos = static_cast<int>(prompt.size());
  const int wanted = total - pos;
  int generated = 0;
  while (generated < wanted) {
    const std::int32_t next = sampler.sample(logits.data());
    if (next == bos || (eos >= 0 && next == eos)) break;  // run.c: BOS delimits sequences
    decode(token, next);
    ++generated;
    token = next;
    if (generated == wanted) break;
    model.forward_token(token, pos, cache, logits.data());
    ++pos;
  }
  const auto t2 = std::chrono::steady_clock::now();
  std::printf("\n");
  std::fflush(stdout);
  const double prefill_s = std::chrono::duration<double>(t1 - t0).count();
  const double decode_s = std::chrono::duration<double>(t2 - t1).count();
  std::fprintf(stderr,
               "model %s: %d layers, dim %d, vocab %d (loaded in %.2f s), %d threads\n"
               "prefill: %zu tokens in %.3f s (%.1f tok/s); decode: %d tokens in %.3f s (%.1f tok/s)\n",
               o.model.c_str(), cfg.n_layers, cfg.dim, cfg.vocab_size, load_s, max_threads(), prompt.size(), prefill_s,
               prefill_s > 0 ? prompt.size() / prefill_s : 0.0, generated, decode_s,
               decode_s > 0 ? generated / decode_s : 0.0);
  return 0;
}

const cli::Registration registration{
    "generate", "Generate text with a model (greedy, temperature or top-p sampling)", [](CLI::App& app) {
      auto o = std::make_shared<Options>();
      cli::add_common_options(app, *o, cli::kModelRequired | cli::kTokenizer | cli::kThreads,
                              "model file: llama2.c .bin, GGUF, or a lowbit quantized file");
      auto* text = app.add_option("--prompt,-i", o->prompt, "prompt text");
      app.add_option("--prompt-ids", o->prompt_ids, "prompt as comma-separated token ids")->excludes(text);
      app.add_option("-n,--steps", o->steps, "number of tokens to generate after the prompt")->capture_default_str();
      app.add_option("--temperature,-t", o->temperature, "0 = greedy")->capture_default_str();
      app.add_option("--top-p,-p", o->top_p, "nucleus sampling mass (1 = off)")->capture_default_str();
      app.add_option("--seed,-s", o->seed, "random seed")->capture_default_str();
      return [o] { return run(*o); };
    }};

}  // namespace
