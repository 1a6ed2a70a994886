// Model throughput: prefill (one batched forward over 512 tokens) and decode (token by token with the
// KV cache) for stories260K and SmolLM2-135M, at 1 and 2 threads. Prefill FLOP/s is also reported as a
// fraction of the peak fp32 GEMM rate of this machine, measured first in the same run with an Eigen
// GEMM of the shape that dominates SmolLM2's prefill (512 x 576 times 576 x 1536).
//   build/<dir>/bench/bench_model --benchmark_counters_tabular=true
// Models that are not present (shared/data, ~/.cache/lowbit) are skipped with a message.
#include <benchmark/benchmark.h>

#include <chrono>
#include <cstdio>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <Eigen/Core>

#include "../tests/test_util.hpp"
#include "lowbit/core/parallel.hpp"
#include "lowbit/core/rng.hpp"
#include "lowbit/io/gguf.hpp"
#include "lowbit/io/llama2c.hpp"
#include "lowbit/nn/model.hpp"

using namespace lowbit;

namespace {

constexpr int kPrefillTokens = 512;
constexpr int kDecodeTokens = 64;

std::map<int, double> g_peak_flops;  // threads -> FLOP/s of the reference GEMM

double measure_peak_gemm(int threads) {
  set_num_threads(threads);
  Eigen::setNbThreads(threads);
  const index_t m = 512, k = 576, n = 1536;
  Rng rng(1);
  nn::RowMajor<float> A(m, k), B(n, k), C(m, n);
  for (index_t i = 0; i < A.size(); ++i) A.data()[i] = static_cast<float>(rng.normal());
  for (index_t i = 0; i < B.size(); ++i) B.data()[i] = static_cast<float>(rng.normal());
  double best = 0;
  for (int rep = 0; rep < 15; ++rep) {
    const auto t0 = std::chrono::steady_clock::now();
    C.noalias() = A * B.transpose();
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    best = std::max(best, 2.0 * m * k * n / s);
  }
  benchmark::DoNotOptimize(C.data());
  return best;
}

// FLOPs (2 per multiply-add) of a prefill over T tokens: projections, attention (scores and weighted sum
// over the full T x T product that the batched kernel computes), output head for the last token only.
double forward_flops(const nn::ModelConfig& c, int T) {
  const double dim = c.dim, q = static_cast<double>(c.n_heads) * c.head_dim(), kv = c.kv_dim(), hid = c.hidden_dim;
  const double per_token_layer = 2 * (dim * q + 2 * dim * kv + q * dim + 3 * dim * hid) + 2 * 2 * static_cast<double>(T) * q;
  return static_cast<double>(T) * c.n_layers * per_token_layer + 2 * dim * c.vocab_size;
}

nn::Llama* model(const std::string& name) {
  static std::map<std::string, std::unique_ptr<nn::Llama>> cache;
  auto it = cache.find(name);
  if (it != cache.end()) return it->second.get();
  std::unique_ptr<nn::Llama> m;
  if (name == "stories260K") {
    const auto p = test::shared_file("models/stories260K.bin");
    if (!p.empty()) m = std::make_unique<nn::Llama>(io::load_llama2c(p));
  } else {
    const auto p = test::smollm2_gguf();
    if (!p.empty()) m = std::make_unique<nn::Llama>(io::load_gguf(p));
  }
  return (cache[name] = std::move(m)).get();
}

std::vector<std::int32_t> tokens_for(const nn::Llama& m, int n) {
  std::vector<std::int32_t> t(static_cast<std::size_t>(n));
  Rng rng(7);
  for (auto& x : t) x = static_cast<std::int32_t>(rng.below(static_cast<std::uint64_t>(m.config().vocab_size)));
  return t;
}

void BM_Prefill(benchmark::State& state, const std::string& name) {
  const int threads = static_cast<int>(state.range(0));
  nn::Llama* m = model(name);
  if (!m) {
    state.SkipWithError((name + " not found (shared/data or tools/fetch_smollm2.sh)").c_str());
    return;
  }
  set_num_threads(threads);
  Eigen::setNbThreads(threads);
  const int T = std::min(kPrefillTokens, m->config().max_seq_len);
  auto tokens = tokens_for(*m, T);
  auto cache = m->make_cache(T);
  std::vector<float> logits(static_cast<std::size_t>(m->config().vocab_size));
  double seconds = 0;
  for (auto _ : state) {
    const auto t0 = std::chrono::steady_clock::now();
    m->forward_prefill(tokens.data(), T, 0, cache, logits.data(), true);
    benchmark::DoNotOptimize(logits.data());
    seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }
  const double flops = forward_flops(m->config(), T);
  state.counters["tok/s"] = benchmark::Counter(T, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["GFLOP/s"] = benchmark::Counter(flops * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["peak_GFLOP/s"] = g_peak_flops[threads] * 1e-9;
  state.counters["of_peak"] = flops * static_cast<double>(state.iterations()) / seconds / g_peak_flops[threads];
  state.SetLabel(name + ", " + std::to_string(T) + " tokens, " + std::to_string(threads) + " thread(s)");
}

void BM_Decode(benchmark::State& state, const std::string& name) {
  const int threads = static_cast<int>(state.range(0));
  nn::Llama* m = model(name);
  if (!m) {
    state.SkipWithError((name + " not found (shared/data or tools/fetch_smollm2.sh)").c_str());
    return;
  }
  set_num_threads(threads);
  Eigen::setNbThreads(threads);
  auto tokens = tokens_for(*m, kDecodeTokens);
  auto cache = m->make_cache(kDecodeTokens);
  std::vector<float> logits(static_cast<std::size_t>(m->config().vocab_size));
  for (auto _ : state) {
    for (int pos = 0; pos < kDecodeTokens; ++pos)
      m->forward_token(tokens[static_cast<std::size_t>(pos)], pos, cache, logits.data());
    benchmark::DoNotOptimize(logits.data());
  }
  state.counters["tok/s"] = benchmark::Counter(kDecodeTokens, benchmark::Counter::kIsIterationInvariantRate);
  state.SetLabel(name + ", positions 0.." + std::to_string(kDecodeTokens - 1) + ", " + std::to_string(threads) +
                 " thread(s)");
}

}  // namespace

int main(int argc, char** argv) {
  for (int t : {1, 2}) {
    g_peak_flops[t] = measure_peak_gemm(t);
    std::printf("peak fp32 GEMM (Eigen, 512x576 * 576x1536), %d thread(s): %.1f GFLOP/s\n", t, g_peak_flops[t] * 1e-9);
  }
  for (const char* name : {"stories260K", "SmolLM2-135M"}) {
    const std::string n = name;
    benchmark::RegisterBenchmark(("prefill/" + n).c_str(), BM_Prefill, n)->Arg(1)->Arg(2)->Unit(benchmark::kMillisecond)->UseRealTime();
    benchmark::RegisterBenchmark(("decode/" + n).c_str(), BM_Decode, n)->Arg(1)->Arg(2)->Unit(benchmark::kMillisecond)->UseRealTime();
  }
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
