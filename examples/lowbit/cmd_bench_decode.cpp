// `lowbit bench-decode`: batch-1 generation speed of a model, prefill and decode, in wall time and in
// process CPU time, against a baseline model measured in the same run (by default the fp32 model a
// quantized file was made from). Runs alternate between the two models, so a machine whose load
// changes during the measurement affects both alike; on a shared machine read the CPU-time rates.
// Decoding is greedy over a fixed pseudo-random prompt and never stops early, so every run decodes
// exactly --tokens tokens.
#include <algorithm>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include <lowbit/core/error.hpp>
#include <lowbit/core/parallel.hpp>
#include <lowbit/core/rng.hpp>
#include <lowbit/eval/decode.hpp>
#include <lowbit/eval/model_source.hpp>
#include <lowbit/io/open_model.hpp>
#include <lowbit/nn/sampler.hpp>

#include "cli.hpp"

namespace lowbit_cmd_bench_decode {

using namespace lowbit;

struct Options : cli::CommonOptions {
  std::string baseline;
  int prompt_tokens = 128, tokens = 128, repeats = 3;
  bool exact = false;
};

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const auto n = v.size();
  return n == 0 ? 0.0 : n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

struct Measured {
  std::string path, label;
  eval::LoadedModel loaded;
  std::vector<double> prefill, prefill_cpu, decode, decode_cpu;  // tokens/s per run

  nlohmann::json to_json() const {
    return {{"model", path},
            {"linear_bits_per_weight", loaded.bits_per_weight},
            {"model_bits_per_weight", loaded.storage.model_bits_per_weight},
            {"file_mb", loaded.file_mb},
            {"prefill_tok_s", median(prefill)},
            {"prefill_tok_cpu_s", median(prefill_cpu)},
            {"decode_tok_s", median(decode)},
            {"decode_tok_cpu_s", median(decode_cpu)},
            {"runs", decode.size()}};
  }
};

void run_once(Measured& m, const std::vector<std::int32_t>& prompt, int tokens) {
  auto& model = *m.loaded.model;
  auto cache = model.make_cache(static_cast<int>(prompt.size()) + tokens);
  nn::Sampler greedy(model.config().vocab_size, 0.0f, 1.0f, 0);
  eval::DecodeOptions opt;
  opt.max_new_tokens = tokens;
  const auto st = eval::decode(model, cache, prompt, greedy, opt);
  m.prefill.push_back(st.prefill_tok_s());
  m.prefill_cpu.push_back(st.prefill_tok_cpu_s());
  m.decode.push_back(st.decode_tok_s());
  m.decode_cpu.push_back(st.decode_tok_cpu_s());
}

int run(const Options& o) {
  o.apply();
  std::vector<std::unique_ptr<Measured>> models;
  auto add = [&](const std::string& path, const std::string& label) {
    auto m = std::make_unique<Measured>();
    m->path = path;
    m->label = label;
    m->loaded = eval::load_any_model(path);
    if (!o.exact) m->loaded.model->set_activations("int8");
    models.push_back(std::move(m));
  };
  add(o.model, "model");
  std::string baseline = o.baseline;
  if (baseline.empty() && models[0]->loaded.format == io::ModelFormat::LowbitQuantized)
    baseline = io::quantized_model_info(o.model).value("source_model", std::string{});
  if (!baseline.empty() && baseline != "none") add(baseline, "baseline");

  const auto& cfg = models[0]->loaded.model->config();
  LOWBIT_CHECK(o.prompt_tokens + o.tokens <= cfg.max_seq_len, "--prompt-tokens ", o.prompt_tokens, " + --tokens ",
               o.tokens, " exceed the model's context of ", cfg.max_seq_len);
  for (const auto& m : models)
    LOWBIT_CHECK(m->loaded.model->config().vocab_size == cfg.vocab_size, m->path, " has a vocabulary of ",
                 m->loaded.model->config().vocab_size, ", ", o.model, " of ", cfg.vocab_size,
                 ": the baseline must be the same model");
  Rng rng(1234);
  std::vector<std::int32_t> prompt(static_cast<std::size_t>(o.prompt_tokens));
  for (auto& t : prompt) t = static_cast<std::int32_t>(rng.below(static_cast<std::uint64_t>(cfg.vocab_size)));

  // one untimed warm-up each (page faults, caches), then alternate
  for (auto& m : models) {
    run_once(*m, prompt, std::min(o.tokens, 8));
    m->prefill.clear(), m->prefill_cpu.clear(), m->decode.clear(), m->decode_cpu.clear();
  }
  for (int r = 0; r < o.repeats; ++r)
    for (auto& m : models) {
      run_once(*m, prompt, o.tokens);
      if (!o.quiet)
        std::fprintf(stderr, "[bench-decode] run %d/%d %s: decode %.1f tok/s (%.1f tok/CPU-s)\n", r + 1, o.repeats,
                     m->label.c_str(), m->decode.back(), m->decode_cpu.back());
    }

  std::printf("batch 1, %d prompt tokens, %d decoded tokens, %d threads, %s activations, median of %d runs\n",
              o.prompt_tokens, o.tokens, max_threads(), o.exact ? "fp32" : "int8", o.repeats);
  std::printf("| model | bits/weight (linears) | bits/weight (all) | file MB | prefill tok/s | prefill tok/CPU-s | "
              "decode tok/s | decode tok/CPU-s | decode vs baseline (CPU) |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|\n");
  const double base_cpu = models.size() > 1 ? median(models[1]->decode_cpu) : 0.0;
  for (const auto& m : models) {
    const double cpu = median(m->decode_cpu);
    std::printf("| %s | %.4f | %.4f | %.1f | %.1f | %.1f | %.1f | %.1f | %s |\n", m->path.c_str(), m->loaded.bits_per_weight,
                m->loaded.storage.model_bits_per_weight, m->loaded.file_mb, median(m->prefill), median(m->prefill_cpu),
                median(m->decode), cpu, base_cpu > 0 ? (std::to_string(cpu / base_cpu).substr(0, 5) + "x").c_str() : "-");
  }
  if (o.json) {
    nlohmann::json j = {{"command", cli::invocation()}, {"threads", max_threads()}, {"prompt_tokens", o.prompt_tokens},
                        {"tokens", o.tokens}, {"activations", o.exact ? "f32" : "int8"}};
    for (const auto& m : models) j[m->label] = m->to_json();
    std::printf("%s\n", j.dump().c_str());
  }
  return 0;
}

const cli::Registration registration{
    "bench-decode",
    "Batch-1 prefill and decode speed (wall and CPU time) of a model against a baseline in the same run",
    [](CLI::App& app) {
      auto o = std::make_shared<Options>();
      cli::add_common_options(app, *o, cli::kModelRequired | cli::kThreads | cli::kQuiet | cli::kJson);
      app.add_option("--baseline", o->baseline,
                     "model measured alongside (default: a quantized file's source model; 'none' for no baseline)");
      app.add_option("--prompt-tokens", o->prompt_tokens, "prompt length (prefill)")
          ->capture_default_str()
          ->check(CLI::Range(1, 1 << 20));
      app.add_option("--tokens", o->tokens, "tokens decoded per run")->capture_default_str()->check(CLI::Range(1, 1 << 20));
      app.add_option("--repeats", o->repeats, "timed runs per model (alternating)")
          ->capture_default_str()
          ->check(CLI::Range(1, 1000));
      app.add_flag("--exact", o->exact, "fp32 activations (default: int8 where a format has an int8 kernel)");
      return [o] { return run(*o); };
    }};

}  // namespace lowbit_cmd_bench_decode
