// Training throughput of the LLaMA training core: one step = forward_train + backward (cross-entropy) +
// global-norm clipping + AdamW, for the ~0.8M-parameter built-in default and a ~15M-parameter model, on
// 1 and 2 threads. Each result reports tokens/s, the achieved GEMM-equivalent FLOP/s (6 · matmul
// parameters · tokens + 12 · layers · T · dim · tokens for attention scores and values, forward and
// backward) and that as a fraction of the peak fp32 GEMM rate measured in the same run (Eigen 1024³ sgemm
// at the same thread count).
#include <benchmark/benchmark.h>

#include <Eigen/Dense>
#include <chrono>
#include <cstdio>
#include <map>
#include <vector>

#include <lowbit/core/parallel.hpp>
#include <lowbit/train/adamw.hpp>
#include <lowbit/train/clip.hpp>
#include <lowbit/train/pretrain.hpp>

namespace {

using namespace lowbit;

nn::ModelConfig config_15m() {
  nn::ModelConfig c = train::default_model_config();
  c.dim = 384;
  c.hidden_dim = 1280;
  c.n_layers = 8;
  c.n_heads = 6;
  c.n_kv_heads = 2;
  c.max_seq_len = 256;
  return c;
}

// Peak fp32 GEMM FLOP/s with `threads` threads: best of several 1024³ Eigen products.
double peak_gemm_flops(int threads) {
  static std::map<int, double> cache;
  if (auto it = cache.find(threads); it != cache.end()) return it->second;
  set_num_threads(threads);
  Eigen::setNbThreads(threads);
  const int n = 1024;
  Eigen::MatrixXf a = Eigen::MatrixXf::Random(n, n), b = Eigen::MatrixXf::Random(n, n), c(n, n);
  double best = 0;
  for (int rep = 0; rep < 5; ++rep) {
    const auto t0 = std::chrono::steady_clock::now();
    c.noalias() = a * b;
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    best = std::max(best, 2.0 * n * n * n / s);
  }
  benchmark::DoNotOptimize(c.data());
  return cache[threads] = best;
}

double matmul_parameters(const nn::ModelConfig& c) {
  const double dim = c.dim, kv = c.kv_dim(), hid = c.hidden_dim;
  const double per_layer = 2 * dim * dim + 2 * dim * kv + 3 * dim * hid;
  return c.n_layers * per_layer + static_cast<double>(c.vocab_size) * dim;  // + output head
}

void train_step(benchmark::State& state, const nn::ModelConfig& config, int B, int T) {
  const int threads = static_cast<int>(state.range(0));
  const double peak = peak_gemm_flops(threads);
  set_num_threads(threads);
  Eigen::setNbThreads(threads);
  auto model = train::initial_model(config, 1);
  const auto data = train::synthetic_token_data(1, 1u << 18, 1u << 12);
  auto params = model.parameters();
  train::AdamWOptions o;
  o.weight_decay = 0.1f;
  train::AdamW optimizer(params, o);
  train::BatchSampler sampler(data.train, B, T, Rng(2));
  std::vector<std::int32_t> inputs, targets;
  for (auto _ : state) {
    sampler.next(inputs, targets);
    model.zero_grad();
    benchmark::DoNotOptimize(model.forward_backward_ce(inputs.data(), targets.data(), B, T));
    train::clip_grad_norm(params, 1.0);
    optimizer.step(1e-3f);
  }
  double n_params = 0;
  for (auto& p : params) n_params += static_cast<double>(p.size);
  const double tokens = static_cast<double>(B) * T;
  const double flops_per_step =
      6.0 * matmul_parameters(config) * tokens + 12.0 * config.n_layers * T * static_cast<double>(config.dim) * tokens;
  state.counters["params_M"] = n_params / 1e6;
  state.counters["tokens/s"] = benchmark::Counter(tokens, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["GFLOP/s"] = benchmark::Counter(flops_per_step / 1e9, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["peak_GEMM_GFLOP/s"] = peak / 1e9;
  // fraction of peak: (flops_per_step / seconds per step) / peak, filled from the measured time
  state.counters["frac_of_peak"] =
      benchmark::Counter(flops_per_step / peak, benchmark::Counter::kIsIterationInvariantRate);
}

void BM_TrainStep_Default08M(benchmark::State& state) { train_step(state, train::default_model_config(), 16, 128); }
void BM_TrainStep_15M(benchmark::State& state) { train_step(state, config_15m(), 4, 256); }

BENCHMARK(BM_TrainStep_Default08M)->Arg(1)->Arg(2)->ArgName("threads")->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(3.0);
BENCHMARK(BM_TrainStep_15M)->Arg(1)->Arg(2)->ArgName("threads")->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(5.0);

}  // namespace

BENCHMARK_MAIN();
