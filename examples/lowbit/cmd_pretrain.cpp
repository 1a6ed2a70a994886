// `lowbit pretrain`: trains a LLaMA from scratch on a text file (byte tokens) or, with no arguments, the
// built-in default model on lowbit's synthetic corpus (cached as ${LOWBIT_CACHE:-~/.cache/lowbit}/
// default-model.bin). With --init it fine-tunes an existing model instead (llama2.c .bin or a lowbit
// checkpoint), with --tokenizer encoding the text with the model's own vocabulary; --eval-text reports
// the perplexity of a separate file before and after, to check that fine-tuning did not hurt it.
#include <cstdio>
#include <cstring>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include <lowbit/core/parallel.hpp>
#include <lowbit/io/llama2c.hpp>
#include <lowbit/io/tokenizer_llama2c.hpp>
#include <lowbit/train/pretrain.hpp>

#include "cli.hpp"

namespace lowbit_cmd_pretrain {

using namespace lowbit;

bool is_lowbit_checkpoint(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  char magic[8] = {};
  in.read(magic, 8);
  return in.good() && std::memcmp(magic, train::kCheckpointMagic, 8) == 0;
}

nn::ModelWeights load_any_model(const std::string& path) {
  return is_lowbit_checkpoint(path) ? train::load_pretrained(path) : io::load_llama2c(path);
}

std::string strip(const std::string& s) {
  const auto b = s.find_first_not_of(" \t\r\n");
  if (b == std::string::npos) return {};
  const auto e = s.find_last_not_of(" \t\r\n");
  return s.substr(b, e - b + 1);
}

// Splits `text` on `separator`, strips each piece, drops empty ones.
std::vector<std::string> split_documents(const std::string& text, const std::string& separator) {
  std::vector<std::string> docs;
  std::size_t pos = 0;
  while (pos <= text.size()) {
    const auto next = text.find(separator, pos);
    const auto piece = strip(text.substr(pos, next == std::string::npos ? std::string::npos : next - pos));
    if (!piece.empty()) docs.push_back(piece);
    if (next == std::string::npos) break;
    pos = next + separator.size();
  }
  return docs;
}

// Documents encoded one by one (BOS first each) and concatenated. With chunk_chars > 0, consecutive
// pieces are first re-joined with `joiner` into chunks of at least chunk_chars characters (for texts
// whose separator marks paragraphs, not documents; chunks keep the encoder's input short).
std::vector<std::int32_t> encode_documents(const std::string& text, const std::string& separator,
                                           const io::Tokenizer* tokenizer, std::size_t chunk_chars = 0,
                                           const std::string& joiner = "\n") {
  std::vector<std::string> docs = split_documents(text, separator);
  if (chunk_chars > 0) {
    std::vector<std::string> chunks;
    for (auto& d : docs) {
      if (chunks.empty() || chunks.back().size() >= chunk_chars) chunks.emplace_back();
      else chunks.back() += joiner;
      chunks.back() += d;
    }
    docs = std::move(chunks);
  }
  std::vector<std::int32_t> ids;
  for (const auto& doc : docs) {
    auto part = tokenizer ? tokenizer->encode(doc, true) : train::ByteVocabulary::encode(doc, true);
    ids.insert(ids.end(), part.begin(), part.end());
  }
  return ids;
}

struct PretrainArgs : cli::CommonOptions {
  std::string text, init, out, eval_text, doc_sep = "\n\n", eval_doc_sep = "<|endoftext|>", schedule = "cosine";
  int dim = 0, layers = 0, heads = 0, kv_heads = 0, hidden = 0, ctx = 0;
  int batch = 16, seq_len = 0;
  std::int64_t steps = 200, warmup = -1, checkpoint_every = 100, eval_every = 100, eval_tokens = 16384;
  float lr = 3e-3f, min_lr_ratio = 0.1f, weight_decay = 0.1f, beta2 = 0.95f;
  double clip = 1.0, heldout_fraction = 0.05;
  std::uint64_t seed = 1234;
  std::size_t synthetic_bytes = 4u << 20;
  std::size_t chunk_chars = 0;
  std::string chunk_joiner = "\n";
  bool resume = false, amsgrad = false, bos_targets = false;
};

int run_pretrain(const PretrainArgs& a) {
  a.apply();
  std::unique_ptr<io::Tokenizer> tokenizer;
  if (!a.tokenizer.empty()) tokenizer = std::make_unique<io::Llama2cTokenizer>(a.tokenizer);

  // Model: from --init, or a fresh default-shaped model with any overridden hyper-parameters.
  std::unique_ptr<nn::Llama> model;
  nn::ModelConfig config;
  if (!a.init.empty()) {
    auto weights = load_any_model(a.init);
    config = weights.config;
    model = std::make_unique<nn::Llama>(weights);
  } else {
    config = train::default_model_config();
    if (a.dim) config.dim = a.dim;
    if (a.layers) config.n_layers = a.layers;
    if (a.heads) config.n_heads = a.heads;
    if (a.kv_heads) config.n_kv_heads = a.kv_heads;
    if (a.hidden) config.hidden_dim = a.hidden;
    if (a.ctx) config.max_seq_len = a.ctx;
    if (tokenizer) config.vocab_size = tokenizer->vocab_size();
    config.validate("pretrain options");
  }
  LOWBIT_CHECK(!tokenizer || tokenizer->vocab_size() <= config.vocab_size, a.tokenizer, ": vocabulary of ",
               tokenizer->vocab_size(), " tokens exceeds the model's ", config.vocab_size);
  LOWBIT_CHECK(tokenizer || config.vocab_size >= train::ByteVocabulary::size, "pretrain: the model's vocabulary (",
               config.vocab_size, ") is smaller than the byte vocabulary; pass --tokenizer");

  // Data.
  train::TokenData data;
  if (a.text.empty()) {
    data = train::synthetic_token_data(a.seed, a.synthetic_bytes, 1u << 17);
  } else if (tokenizer) {
    auto ids = encode_documents(train::read_text_file(a.text), a.doc_sep, tokenizer.get(), a.chunk_chars, a.chunk_joiner);
    data = train::split_tokens(std::move(ids), a.heldout_fraction, tokenizer->vocab_size(),
                               a.text + " (" + tokenizer->describe() + ")");
  } else {
    data = train::byte_text_data(a.text, a.heldout_fraction);
  }

  train::PretrainOptions o;
  o.batch_size = a.batch;
  o.seq_len = a.seq_len > 0 ? a.seq_len : std::min(config.max_seq_len, 128);
  o.steps = a.steps;
  o.schedule.kind = train::parse_schedule_kind(a.schedule);
  o.schedule.peak_lr = a.lr;
  o.schedule.warmup_steps = a.warmup >= 0 ? a.warmup : std::min<std::int64_t>(20, a.steps / 10);
  o.schedule.min_ratio = a.min_lr_ratio;
  o.adam.weight_decay = a.weight_decay;
  o.adam.beta2 = a.beta2;
  o.adam.amsgrad = a.amsgrad;
  o.grad_clip = a.clip;
  o.seed = a.seed;
  // With a tokenizer the text is cut into pieces at --doc-sep, each starting with BOS; those cuts are not
  // real document ends, so BOS is never a target (unless --bos-targets).
  if (tokenizer && !a.text.empty() && !a.bos_targets) o.masked_target = tokenizer->bos_id();
  o.checkpoint = !a.out.empty() ? std::filesystem::path(a.out)
                                : (a.text.empty() && a.init.empty() ? train::default_model_path()
                                                                    : std::filesystem::path("pretrained.bin"));
  o.checkpoint_every = a.checkpoint_every;
  o.resume = a.resume;
  o.eval_every = a.eval_every;
  o.eval_tokens = a.eval_tokens;
  o.quiet = a.quiet;
  if (!a.init.empty() && a.init == o.checkpoint.string())
    fail("pretrain: --out must differ from --init (", a.init, ")");

  if (!model) model = std::make_unique<nn::Llama>(train::initial_model(config, a.seed));
  std::size_t n_params = 0;
  for (auto& p : model->parameters()) n_params += static_cast<std::size_t>(p.size);
  std::fprintf(stderr, "pretrain: model dim %d, %d layers, %d heads (%d kv), hidden %d, vocab %d: %zu parameters\n",
               config.dim, config.n_layers, config.n_heads, config.n_kv_heads, config.hidden_dim, config.vocab_size,
               n_params);
  std::fprintf(stderr, "pretrain: data %s; %d threads; checkpoint %s\n", data.description.c_str(), max_threads(),
               o.checkpoint.c_str());

  // Optional separate evaluation text, in the llama2.c protocol: documents split on eval_doc_sep, each
  // BOS + encode(doc), concatenated, non-overlapping windows of seq_len predictions.
  std::vector<std::int32_t> eval_ids;
  double eval_before = 0;
  if (!a.eval_text.empty()) {
    eval_ids = encode_documents(train::read_text_file(a.eval_text), a.eval_doc_sep, tokenizer.get());
    eval_before = train::heldout_loss(*model, eval_ids, o.seq_len, 0);
  }

  const auto r = train::pretrain(*model, data, o);

  nlohmann::json j;
  j["parameters"] = n_params;
  j["steps"] = r.steps_done;
  j["steps_this_run"] = r.steps_this_run;
  j["resumed"] = r.resumed;
  j["train_loss_first"] = r.first_loss;
  j["train_loss_last"] = r.last_loss;
  j["heldout_loss_before"] = r.heldout_loss_before;
  j["heldout_loss"] = r.heldout_loss;
  j["heldout_unigram_entropy"] = r.unigram_entropy;
  j["seconds"] = r.seconds;
  j["tokens_per_second"] = r.tokens_per_second;
  j["threads"] = max_threads();
  j["checkpoint"] = o.checkpoint.string();
  j["data"] = data.description;
  std::printf("held-out loss %.4f nats/token (before %.4f; unigram entropy of held-out data %.4f)\n", r.heldout_loss,
              r.heldout_loss_before, r.unigram_entropy);
  std::printf("trained %lld steps in %.1f s (%.0f tokens/s), checkpoint %s\n", static_cast<long long>(r.steps_this_run),
              r.seconds, r.tokens_per_second, o.checkpoint.c_str());
  if (!eval_ids.empty()) {
    const double eval_after = train::heldout_loss(*model, eval_ids, o.seq_len, 0);
    const std::int64_t predictions = (static_cast<std::int64_t>(eval_ids.size()) - 1) / o.seq_len * o.seq_len;
    std::printf("eval %s: %zu tokens, %lld predictions, NLL %.5f -> %.5f, perplexity %.4f -> %.4f (%+.2f%%)\n",
                a.eval_text.c_str(), eval_ids.size(), static_cast<long long>(predictions), eval_before, eval_after,
                std::exp(eval_before), std::exp(eval_after), 100.0 * (std::exp(eval_after - eval_before) - 1.0));
    j["eval_text"] = a.eval_text;
    j["eval_tokens"] = eval_ids.size();
    j["eval_predictions"] = predictions;
    j["eval_nll_before"] = eval_before;
    j["eval_nll_after"] = eval_after;
    j["eval_ppl_before"] = std::exp(eval_before);
    j["eval_ppl_after"] = std::exp(eval_after);
  }
  if (a.json) std::printf("%s\n", j.dump().c_str());
  return 0;
}

const lowbit::cli::Registration registration{
    "pretrain",
    "Train a LLaMA from scratch (no arguments: the built-in default model on the synthetic corpus) or fine-tune one",
    [](CLI::App& app) -> lowbit::cli::Action {
      auto a = std::make_shared<PretrainArgs>();
      app.add_option("--text", a->text, "Training text file (default: lowbit's synthetic corpus)");
      cli::add_common_options(app, *a, cli::kTokenizer | cli::kThreads | cli::kQuiet | cli::kJson, "",
                              "llama2.c tokenizer.bin (default: byte-level tokens)");
      app.add_option("--doc-sep", a->doc_sep, "Document separator of --text when --tokenizer is given (BOS per document)");
      app.add_option("--chunk-chars", a->chunk_chars,
                     "With --tokenizer: re-join --doc-sep pieces with --chunk-joiner into chunks of this many characters");
      app.add_option("--chunk-joiner", a->chunk_joiner, "String joining pieces inside a chunk")->capture_default_str();
      app.add_flag("--bos-targets", a->bos_targets, "With --tokenizer: also train to predict BOS at piece boundaries");
      app.add_option("--init", a->init, "Start from this model (llama2.c .bin or lowbit checkpoint) instead of random");
      app.add_option("--out", a->out, "Checkpoint path (default: the cached default model for the synthetic run)");
      app.add_option("--resume", a->resume, "Continue from --out if it exists")->default_val(false)->expected(0, 1);
      app.add_option("--steps", a->steps, "Optimizer steps")->capture_default_str();
      app.add_option("--batch", a->batch, "Sequences per step")->capture_default_str();
      app.add_option("--seq-len", a->seq_len, "Tokens per sequence (default min(context, 128))");
      app.add_option("--lr", a->lr, "Peak learning rate")->capture_default_str();
      app.add_option("--schedule", a->schedule, "constant | linear | cosine")->capture_default_str();
      app.add_option("--warmup", a->warmup, "Warm-up steps (default min(20, steps/10))");
      app.add_option("--min-lr-ratio", a->min_lr_ratio, "Final lr / peak lr")->capture_default_str();
      app.add_option("--weight-decay", a->weight_decay, "Decoupled weight decay of matrices")->capture_default_str();
      app.add_option("--beta2", a->beta2, "AdamW beta2")->capture_default_str();
      app.add_flag("--amsgrad", a->amsgrad, "AMSGrad variant of AdamW");
      app.add_option("--clip", a->clip, "Global gradient-norm clip (0: off)")->capture_default_str();
      app.add_option("--seed", a->seed, "Seed (initialization, data, sampling)")->capture_default_str();
      app.add_option("--checkpoint-every", a->checkpoint_every, "Steps between checkpoints")->capture_default_str();
      app.add_option("--eval-every", a->eval_every, "Steps between held-out evaluations")->capture_default_str();
      app.add_option("--eval-tokens", a->eval_tokens, "Held-out tokens per evaluation")->capture_default_str();
      app.add_option("--heldout-fraction", a->heldout_fraction, "Part of --text held out")->capture_default_str();
      app.add_option("--eval-text", a->eval_text, "Separate text whose perplexity is reported before and after");
      app.add_option("--eval-doc-sep", a->eval_doc_sep, "Document separator of --eval-text")->capture_default_str();
      app.add_option("--synthetic-bytes", a->synthetic_bytes, "Size of the synthetic training corpus")->capture_default_str();
      app.add_option("--dim", a->dim, "Model width (new models)");
      app.add_option("--layers", a->layers, "Layers (new models)");
      app.add_option("--heads", a->heads, "Attention heads (new models)");
      app.add_option("--kv-heads", a->kv_heads, "Key/value heads (new models)");
      app.add_option("--hidden", a->hidden, "SwiGLU width (new models)");
      app.add_option("--ctx", a->ctx, "Context length (new models)");
      return [a] { return run_pretrain(*a); };
    }};

}  // namespace lowbit_cmd_pretrain
