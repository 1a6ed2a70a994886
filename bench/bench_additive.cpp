// AQLM matvec (1x16, 2x8, 4x8 at G = 8) against the Eigen fp32 GEMV and Uniform<2,128> on LLaMA-sized
// matrices, 1 and 2 threads, with DRAM-resident weights: every benchmark rotates over enough copies of
// its matrix (≥ 256 MiB and ≥ 4x L3) that each call streams its codes from DRAM. The fp32 baseline of
// each (shape, threads) runs first; the others report `speedup` = fp32 time / their time in the same
// process (wall) and `speedup_cpu` (CPU time per thread, robust to other jobs on the machine). Also:
// AQLM calibration time of one 576x1536 linear (SmolLM2's down_proj shape transposed) for 2x8 g8.
#include <benchmark/benchmark.h>

#include <Eigen/Core>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <lowbit/calib/additive.hpp>
#include <lowbit/core/parallel.hpp>
#include <lowbit/core/rng.hpp>
#include <lowbit/eval/matvec_bench.hpp>
#include <lowbit/format/additive.hpp>
#include <lowbit/quantizer.hpp>
#include <map>
#include <string>
#include <utility>
#include <vector>

namespace {

using lowbit::index_t;

struct Shape {
  index_t rows, cols;
};
constexpr Shape kShapes[] = {{4096, 4096}, {5632, 2048}};

std::size_t copies_for(std::size_t bytes_per_copy) { return lowbit::eval::rotation_copies(bytes_per_copy); }

using lowbit::eval::CallTime;
using lowbit::eval::process_cpu_seconds;
std::map<std::pair<int, int>, CallTime>& baseline_times() {
  static std::map<std::pair<int, int>, CallTime> m;
  return m;
}
template <class Body>
CallTime timed_loop(benchmark::State& state, int threads, Body&& body) {
  const auto t0 = std::chrono::steady_clock::now();
  const double c0 = process_cpu_seconds();
  std::size_t calls = 0;
  for (auto _ : state) {
    body(calls++);
    benchmark::ClobberMemory();
  }
  const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const double cpu = (process_cpu_seconds() - c0) / threads;
  if (!calls) return {};
  return {wall / static_cast<double>(calls), cpu / static_cast<double>(calls)};
}
void report(benchmark::State& state, int shape_index, int threads, CallTime t, std::size_t bytes, double bpw,
            std::size_t copies) {
  state.counters["weight_GB/s"] =
      benchmark::Counter(static_cast<double>(bytes) * state.iterations(), benchmark::Counter::kIsRate);
  state.counters["bits/weight"] = bpw;
  const auto it = baseline_times().find({shape_index, threads});
  if (it != baseline_times().end() && t.wall > 0 && t.cpu > 0) {
    state.counters["speedup"] = it->second.wall / t.wall;
    state.counters["speedup_cpu"] = it->second.cpu / t.cpu;
  }
  char label[160];
  std::snprintf(label, sizeof label, "DRAM-resident: %zu copies, %.0f MiB > L3 %.0f MiB", copies,
                static_cast<double>(copies * bytes) / (1 << 20), static_cast<double>(lowbit::eval::l3_bytes()) / (1 << 20));
  state.SetLabel(label);
}

std::vector<float> random_matrix(Shape s, std::uint64_t seed) { return lowbit::eval::gaussian_matrix(s.rows, s.cols, seed); }

void bench_fp32(benchmark::State& state) {
  const int shape_index = static_cast<int>(state.range(0)), threads = static_cast<int>(state.range(1));
  const Shape s = kShapes[shape_index];
  lowbit::set_num_threads(threads);
  const std::size_t bytes = static_cast<std::size_t>(s.rows * s.cols) * sizeof(float);
  const std::size_t copies = copies_for(bytes);
  const auto w = random_matrix(s, 1);
  std::vector<std::vector<float>> mats(copies, w);
  std::vector<float> x(static_cast<std::size_t>(s.cols), 0.5f), y(static_cast<std::size_t>(s.rows));
  const CallTime t = timed_loop(state, threads, [&](std::size_t call) {
    lowbit::eval::fp32_gemv(mats[call % copies].data(), s.rows, s.cols, x.data(), y.data());
  });
  baseline_times()[{shape_index, threads}] = t;
  report(state, shape_index, threads, t, bytes, 32.0, copies);
}

// Speed does not depend on the code values, so random codes stand in for a calibrated matrix.
template <int M, int B, int G>
void bench_additive(benchmark::State& state) {
  using Q = lowbit::Quantizer<lowbit::Additive<M, B, G>>;
  const int shape_index = static_cast<int>(state.range(0)), threads = static_cast<int>(state.range(1));
  const Shape s = kShapes[shape_index];
  lowbit::set_num_threads(threads);
  lowbit::AdditiveCodes a(lowbit::Additive<M, B, G>::shape(s.rows, s.cols));
  lowbit::Rng rng(3);
  for (auto& c : a.codes) c = static_cast<std::uint32_t>(rng.below(static_cast<std::uint64_t>(a.shape.codebook_size())));
  for (auto& v : a.codebooks) v = 0.1f * static_cast<float>(rng.normal());
  for (auto& v : a.scales) v = 0.02f;
  const auto packed = Q::pack(a);
  const std::size_t bytes = packed.bytes(), copies = copies_for(bytes);
  std::vector<typename Q::Packed> mats(copies, packed);
  for (const auto& m : mats) (void)lowbit::additive_kernel_view(m);  // decode fp32 codebooks before timing
  std::vector<float> x(static_cast<std::size_t>(s.cols), 0.5f), y(static_cast<std::size_t>(s.rows));
  const CallTime t =
      timed_loop(state, threads, [&](std::size_t call) { Q::matvec(mats[call % copies], x.data(), y.data()); });
  report(state, shape_index, threads, t, bytes, Q::bits_per_weight(packed), copies);
}

template <class Format>
void bench_uniform(benchmark::State& state) {
  using Q = lowbit::Quantizer<Format>;
  const int shape_index = static_cast<int>(state.range(0)), threads = static_cast<int>(state.range(1));
  const Shape s = kShapes[shape_index];
  lowbit::set_num_threads(threads);
  const auto w = random_matrix(s, 1);
  const auto packed = Q::quantize(lowbit::MatrixView<const float>(w.data(), s.rows, s.cols));
  const std::size_t bytes = packed.bytes(), copies = copies_for(bytes);
  std::vector<typename Q::Packed> mats(copies, packed);
  std::vector<float> x(static_cast<std::size_t>(s.cols), 0.5f), y(static_cast<std::size_t>(s.rows));
  const CallTime t =
      timed_loop(state, threads, [&](std::size_t call) { Q::matvec(mats[call % copies], x.data(), y.data()); });
  report(state, shape_index, threads, t, bytes, Q::bits_per_weight(packed), copies);
}

// One AQLM calibration of a 576x1536 weight against H = XᵀX/N of 2048 correlated random activations,
// with the defaults `lowbit quantize --method aqlm` uses.
void bench_calibrate_2x8(benchmark::State& state) {
  const int threads = static_cast<int>(state.range(0));
  lowbit::set_num_threads(threads);
  const index_t rows = 576, cols = 1536, tokens = 2048;
  const auto w = random_matrix({rows, cols}, 5);
  lowbit::Rng rng(6);
  Eigen::MatrixXf X(tokens, cols);
  for (index_t t = 0; t < tokens; ++t) {
    const float common = static_cast<float>(rng.normal());
    for (index_t c = 0; c < cols; ++c) X(t, c) = static_cast<float>(rng.normal()) + 0.5f * common;
  }
  using RowMajor = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  const RowMajor H = (X.transpose() * X) / static_cast<float>(tokens);
  lowbit::calib::AdditiveCalibOptions o;
  o.num_codebooks = 2;
  o.code_bits = 8;
  o.group_size = 8;
  o.kmeans.iterations = 25;
  o.max_epochs = 10;
  lowbit::calib::AdditiveCalibReport r;
  for (auto _ : state) {
    lowbit::calib::calibrate_additive(lowbit::MatrixView<const float>(w.data(), rows, cols),
                                      lowbit::MatrixView<const float>(H.data(), cols, cols), o, &r);
  }
  state.counters["epochs"] = r.epochs;
  state.counters["relative_mse"] = r.relative_mse;
  state.counters["init_relative_mse"] = r.initial_relative_mse;
}

void matvec_args(benchmark::internal::Benchmark* b) {
  for (int shape = 0; shape < 2; ++shape)
    for (int threads : {1, 2}) b->Args({shape, threads});
  b->Unit(benchmark::kMicrosecond)->UseRealTime()->MinTime(0.5);
}

}  // namespace

BENCHMARK(bench_fp32)->Apply(matvec_args);
BENCHMARK(bench_additive<2, 8, 8>)->Name("aqlm_2x8_g8")->Apply(matvec_args);
BENCHMARK(bench_additive<4, 8, 8>)->Name("aqlm_4x8_g8")->Apply(matvec_args);
BENCHMARK(bench_additive<4, 6, 8>)->Name("aqlm_4x6_g8")->Apply(matvec_args);
BENCHMARK(bench_additive<3, 7, 8>)->Name("aqlm_3x7_g8")->Apply(matvec_args);
BENCHMARK(bench_additive<1, 16, 8>)->Name("aqlm_1x16_g8")->Apply(matvec_args);
BENCHMARK(bench_uniform<lowbit::Uniform<2, 128>>)->Name("uniform_2_128")->Apply(matvec_args);
BENCHMARK(bench_calibrate_2x8)->Arg(1)->Arg(2)->Iterations(1)->Unit(benchmark::kSecond)->UseRealTime();

BENCHMARK_MAIN();
