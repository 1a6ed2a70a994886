// `lowbit generate`: text generation, llama2.c run.c style, with any model file lowbit opens (GGUF,
// llama2.c, safetensors, or a lowbit quantized file, whose linears, token table and head decode through
// their formats' kernels). With no prompt it starts from BOS; --chat wraps the prompt in the model's chat
// template and stops at the end of the assistant's turn; --temperature 0 is greedy, otherwise
// temperature sampling with optional top-p, seeded. Decoding uses int8 activations where a format has
// an int8 kernel (--exact: fp32 activations, the reference numerics). The text streams to stdout;
// prefill and decode speeds (wall and CPU time) go to stderr, so stdout is exactly the text.
#include <cctype>
#include <climits>
#include <cstdio>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include <lowbit/core/error.hpp>
#include <lowbit/core/parallel.hpp>
#include <lowbit/eval/chat.hpp>
#include <lowbit/eval/decode.hpp>
#include <lowbit/eval/model_source.hpp>
#include <lowbit/io/open_model.hpp>
#include <lowbit/io/tokenizer.hpp>
#include <lowbit/nn/model.hpp>
#include <lowbit/nn/sampler.hpp>

#include "cli.hpp"

namespace lowbit_cmd_generate {

using namespace lowbit;

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
  std::string prompt, prompt_ids, system;
  int steps = 256;
  float temperature = 1.0f;
  float top_p = 0.9f;
  std::uint64_t seed = 0;
  bool chat = false, exact = false, print_ids = false, has_system = false;
};

int run(const Options& o) {
  o.apply();
  eval::Stopwatch load_clock;
  io::ModelFormat format = io::ModelFormat::Unknown;
  nn::Llama model = io::open_model(o.model, &format);
  const auto& cfg = model.config();
  if (!o.exact) model.set_activations("int8");

  // llama2.c checkpoints (and files quantized from one) carry no vocabulary: without a tokenizer found
  // beside them, generation takes and prints token ids.
  std::unique_ptr<io::Tokenizer> tokenizer;
  if (!o.tokenizer.empty() || o.chat || !o.prompt.empty()) {
    tokenizer = eval::load_any_tokenizer(o.model, o.tokenizer);
  } else if (format != io::ModelFormat::Llama2c) {
    try {
      tokenizer = eval::load_any_tokenizer(o.model, o.tokenizer);
    } catch (const Error& e) {
      if (!o.print_ids)
        std::fprintf(stderr, "lowbit: note: %s; printing token ids (pass --tokenizer for text)\n", e.what());
    }
  }
  if (tokenizer)
    LOWBIT_CHECK(tokenizer->vocab_size() <= cfg.vocab_size, "tokenizer ", tokenizer->describe(), " has ",
                 tokenizer->vocab_size(), " tokens but model ", o.model, " has ", cfg.vocab_size,
                 "; pass the model's own --tokenizer");
  const std::int32_t bos = tokenizer ? tokenizer->bos_id() : 1;  // llama2.c: 1
  std::vector<std::int32_t> stops;
  if (bos >= 0) stops.push_back(bos);  // run.c: BOS delimits sequences
  if (tokenizer && tokenizer->eos_id() >= 0) stops.push_back(tokenizer->eos_id());

  std::vector<std::int32_t> prompt;
  if (o.chat) {
    LOWBIT_CHECK(o.prompt_ids.empty(), "--chat takes a text --prompt, not --prompt-ids");
    const auto chat = eval::chat_prompt(*tokenizer, eval::chat_template_of(o.model), o.prompt,
                                        o.has_system ? &o.system : nullptr);
    prompt = chat.tokens;
    stops.push_back(chat.end_of_turn);
  } else if (!o.prompt_ids.empty()) {
    prompt = parse_ids(o.prompt_ids);
  } else if (!o.prompt.empty()) {
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
  const int steps = std::min(o.steps, max_len - static_cast<int>(prompt.size()));
  const double load_s = load_clock.wall();

  std::int32_t prev = -1;
  auto emit = [&](std::int32_t id) {
    if (tokenizer && !o.print_ids)
      print_piece(tokenizer->decode_token(prev, id));
    else
      std::printf("%s%d", prev < 0 ? "" : " ", id), std::fflush(stdout);
    prev = id;
  };
  for (std::size_t i = 0; i < prompt.size(); ++i)
    if (i > 0 || prompt[0] != bos) emit(prompt[i]);
    else prev = prompt[0];

  auto cache = model.make_cache(static_cast<int>(prompt.size()) + steps);
  nn::Sampler sampler(cfg.vocab_size, o.temperature, o.top_p, o.seed);
  eval::DecodeOptions dopt;
  dopt.max_new_tokens = steps;
  dopt.stop_tokens = stops;
  dopt.on_token = [&](std::int32_t id) {
    emit(id);
    return true;
  };
  const auto st = eval::decode(model, cache, prompt, sampler, dopt);
  std::printf("\n");
  std::fflush(stdout);
  std::fprintf(stderr,
               "model %s: %d layers, dim %d, vocab %d (loaded in %.2f s), %d threads, %s activations\n"
               "prefill: %d tokens in %.3f s (%.1f tok/s, %.1f tok/CPU-s); decode: %d tokens in %.3f s (%.1f tok/s, "
               "%.1f tok/CPU-s)%s\n",
               o.model.c_str(), cfg.n_layers, cfg.dim, cfg.vocab_size, load_s, max_threads(),
               o.exact ? "fp32" : "int8", st.prompt_tokens, st.prefill_wall, st.prefill_tok_s(), st.prefill_tok_cpu_s(),
               st.generated, st.decode_wall, st.decode_tok_s(), st.decode_tok_cpu_s(),
               st.stopped ? " (stop token)" : "");
  return 0;
}

const cli::Registration registration{
    "generate", "Generate text with any model file (greedy, temperature or top-p sampling; --chat)", [](CLI::App& app) {
      auto o = std::make_shared<Options>();
      cli::add_common_options(app, *o, cli::kModelRequired | cli::kTokenizer | cli::kThreads);
      auto* text = app.add_option("--prompt,-i", o->prompt, "prompt text");
      app.add_option("--prompt-ids", o->prompt_ids, "prompt as comma-separated token ids")->excludes(text);
      app.add_flag("--chat", o->chat,
                   "wrap --prompt in the model's chat template (ChatML: GGUF tokenizer.chat_template, or the "
                   "source model's for a quantized file) and stop at the end of the assistant's turn");
      app.add_option("--system", o->system, "--chat: system message (default: the template's own, if any)")
          ->each([o](const std::string&) { o->has_system = true; });
      app.add_option("-n,--steps", o->steps, "number of tokens to generate after the prompt")
          ->capture_default_str()
          ->check(CLI::Range(0, 1 << 24));
      app.add_option("--temperature,-t", o->temperature, "0 = greedy")->capture_default_str()->check(CLI::Range(0.0, 100.0));
      app.add_option("--top-p,-p", o->top_p, "nucleus sampling mass (1 = off)")->capture_default_str()->check(CLI::Range(0.0, 1.0));
      app.add_option("--seed,-s", o->seed, "random seed")->capture_default_str();
      app.add_flag("--exact", o->exact,
                   "fp32 activations in every product (default: int8 activations where the weight format has an "
                   "int8 kernel, as llama.cpp's Q8 activations)");
      app.add_flag("--print-ids", o->print_ids, "print token ids instead of text");
      return [o] { return run(*o); };
    }};

}  // namespace lowbit_cmd_generate
