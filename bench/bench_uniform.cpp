// Uniform<2|3|4, 64|128> matvec against the Eigen fp32 GEMV on LLaMA-sized matrices, 1 and 2 threads:
// `matvec/...` the exact kernels (fp32 activations), `matvec_q8/...` int8 activations (AVX-512 VNNI).
// A matvec reads every weight once, so what matters is DRAM traffic: each benchmark rotates over enough
// distinct copies of its matrix (≥ 256 MiB and ≥ 4x the L3 in total) that every call streams its
// weights from DRAM, for fp32 and quantized alike. The fp32 baseline of each (shape, threads) runs first
// and the quantized runs report `speedup` = fp32 time / their time, measured in the same process
// (`speedup` on wall time; `speedup_cpu` on CPU time per thread, robust to other jobs on the machine).
#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <fstream>
#include <lowbit/core/parallel.hpp>
#include <lowbit/core/rng.hpp>
#include <lowbit/eval/matvec_bench.hpp>
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
constexpr Shape kShapes[] = {{4096, 4096}, {5632, 2048}, {1536, 576}};

std::size_t copies_for(std::size_t bytes_per_copy) { return lowbit::eval::rotation_copies(bytes_per_copy); }

std::vector<float> random_matrix(Shape s, std::uint64_t seed) { return lowbit::eval::gaussian_matrix(s.rows, s.cols, seed); }

using lowbit::eval::CallTime;
using lowbit::eval::process_cpu_seconds;

// fp32 times, keyed by (shape, threads); filled by the baseline benchmarks, which run first.
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

void report_speedup(benchmark::State& state, int shape_index, int threads, CallTime t) {
  const auto it = baseline_times().find({shape_index, threads});
  if (it == baseline_times().end() || t.wall <= 0 || t.cpu <= 0) return;
  state.counters["speedup"] = it->second.wall / t.wall;
  state.counters["speedup_cpu"] = it->second.cpu / t.cpu;
  state.counters["cpu_us/thread"] = 1e6 * t.cpu;
}

void set_context(benchmark::State& state, std::size_t copies, std::size_t bytes_per_copy) {
  char label[160];
  std::snprintf(label, sizeof label, "DRAM-resident: rotating %zu copies, %.0f MiB > L3 %.0f MiB", copies,
                static_cast<double>(copies * bytes_per_copy) / (1 << 20),
                static_cast<double>(lowbit::eval::l3_bytes()) / (1 << 20));
  state.SetLabel(label);
}

void bench_fp32(benchmark::State& state) {
  const int shape_index = static_cast<int>(state.range(0));
  const int threads = static_cast<int>(state.range(1));
  const Shape s = kShapes[shape_index];
  lowbit::set_num_threads(threads);
  const std::size_t bytes = static_cast<std::size_t>(s.rows * s.cols) * sizeof(float);
  const std::size_t copies = copies_for(bytes);
  const auto w = random_matrix(s, 1);
  std::vector<std::vector<float>> mats(copies, w);
  std::vector<float> x(static_cast<std::size_t>(s.cols), 0.5f), y(static_cast<std::size_t>(s.rows));
  const CallTime seconds = timed_loop(state, threads, [&](std::size_t call) {
    lowbit::eval::fp32_gemv(mats[call % copies].data(), s.rows, s.cols, x.data(), y.data());
  });
  baseline_times()[{shape_index, threads}] = seconds;
  state.counters["weight_GB/s"] =
      benchmark::Counter(static_cast<double>(bytes) * state.iterations(), benchmark::Counter::kIsRate);
  state.counters["bits/weight"] = 32.0;
  report_speedup(state, shape_index, threads, seconds);
  set_context(state, copies, bytes);
}

template <class Format, class Activations>
void bench_uniform(benchmark::State& state) {
  using Q = lowbit::Quantizer<Format>;
  const int shape_index = static_cast<int>(state.range(0));
  const int threads = static_cast<int>(state.range(1));
  const Shape s = kShapes[shape_index];
  lowbit::set_num_threads(threads);
  const auto w = random_matrix(s, 1);
  const auto packed = Q::quantize(lowbit::MatrixView<const float>(w.data(), s.rows, s.cols));
  const std::size_t bytes = packed.bytes();
  const std::size_t copies = copies_for(bytes);
  std::vector<typename Q::Packed> mats(copies, packed);
  std::vector<float> x(static_cast<std::size_t>(s.cols), 0.5f), y(static_cast<std::size_t>(s.rows));
  const CallTime seconds = timed_loop(
      state, threads, [&](std::size_t call) { Q::template matvec<Activations>(mats[call % copies], x.data(), y.data()); });
  state.counters["weight_GB/s"] =
      benchmark::Counter(static_cast<double>(bytes) * state.iterations(), benchmark::Counter::kIsRate);
  state.counters["bits/weight"] = Q::bits_per_weight(packed);
  report_speedup(state, shape_index, threads, seconds);
  set_context(state, copies, bytes);
}

template <class Format>
void add_format(const std::string& shape_name, int shape_index, int threads) {
  using Q = lowbit::Quantizer<Format>;
  benchmark::RegisterBenchmark(("matvec/" + Q::name() + "/" + shape_name).c_str(),
                               bench_uniform<Format, lowbit::F32Activations>)
      ->Args({shape_index, threads})
      ->ArgNames({"shape", "threads"})
      ->UseRealTime()
      ->Unit(benchmark::kMicrosecond);
  // int8 activations (kernels/cpu/uniform_matvec_q8.hpp): only where this build has the kernel.
  if constexpr (lowbit::kernels::cpu::uniform_q8_supported<Format>())
    benchmark::RegisterBenchmark(("matvec_q8/" + Q::name() + "/" + shape_name).c_str(),
                                 bench_uniform<Format, lowbit::Int8Activations>)
        ->Args({shape_index, threads})
        ->ArgNames({"shape", "threads"})
        ->UseRealTime()
        ->Unit(benchmark::kMicrosecond);
}

}  // namespace

int main(int argc, char** argv) {
  for (int i = 0; i < static_cast<int>(std::size(kShapes)); ++i) {
    const std::string name = std::to_string(kShapes[i].rows) + "x" + std::to_string(kShapes[i].cols);
    for (int threads : {1, 2}) {
      benchmark::RegisterBenchmark(("matvec/f32_eigen/" + name).c_str(), bench_fp32)
          ->Args({i, threads})
          ->ArgNames({"shape", "threads"})
          ->UseRealTime()
          ->Unit(benchmark::kMicrosecond);
      add_format<lowbit::Uniform<4, 128>>(name, i, threads);
      add_format<lowbit::Uniform<4, 64>>(name, i, threads);
      add_format<lowbit::Uniform<3, 128>>(name, i, threads);
      add_format<lowbit::Uniform<3, 64>>(name, i, threads);
      add_format<lowbit::Uniform<2, 128>>(name, i, threads);
      add_format<lowbit::Uniform<2, 64>>(name, i, threads);
    }
  }
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  std::printf("lowbit bench_uniform: every benchmark rotates over >= %zu MiB of weight copies (L3 %zu MiB), "
              "so weights stream from DRAM; speedup = Eigen fp32 time / format time, same shape and threads\n",
              lowbit::eval::rotation_bytes() >> 20, lowbit::eval::l3_bytes() >> 20);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
