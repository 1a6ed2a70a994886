// 1-bit-activation matvec (issue 17; kernels/cpu/sign_matvec.hpp, kernels/cpu/bcq_sign_matvec.hpp) against
// baselines measured in the same run, for the SmolLM2-135M shapes 576x576, 1536x576, 576x1536 and a
// LLaMA-7B 4096x4096:
//   - `f32_eigen/RxC`: Eigen fp32 GEMV with a dense x (the baseline of `sign`);
//   - `sign/RxC`: y = W'·s on fp32 weights with α folded in (masked adds + the precomputed row sum);
//   - `bcq_lut/bcq:B:128/RxC`: the BCQ format's own matvec (bcq_matvec: AVX-512/AVX2 16-entry tables) with
//     the ±1 activations as floats (the baseline of `bcq_sign`);
//   - `bcq_sign/bcq:B:128/RxC`: the XNOR/popcount path on the same bit-planes and packed signs.
// Every benchmark rotates over enough copies of its matrix (≥ 256 MiB and ≥ 4x the L3) that each call
// streams its weights from DRAM, as batch-1 decoding does. Counters: `speedup` = baseline time / this
// time (wall), `speedup_cpu` the same on CPU time per thread (robust to other jobs on a shared machine).
// A table of all ratios is printed at the end. The packed values are random (speed does not depend on
// them; tests/test_kernels_sign.cpp checks correctness).
//
// Usage: bench_sign [--benchmark_filter=threads:1] [Google Benchmark options]
#include <benchmark/benchmark.h>

#include <chrono>
#include <cstdio>
#include <lowbit/core/half.hpp>
#include <lowbit/core/parallel.hpp>
#include <lowbit/core/rng.hpp>
#include <lowbit/eval/matvec_bench.hpp>
#include <lowbit/kernels/cpu/bcq_matvec.hpp>
#include <lowbit/kernels/cpu/bcq_sign_matvec.hpp>
#include <lowbit/kernels/cpu/sign_matvec.hpp>
#include <map>
#include <string>
#include <tuple>
#include <vector>

namespace {

using lowbit::index_t;
using lowbit::eval::CallTime;
using lowbit::eval::process_cpu_seconds;
namespace cpu = lowbit::kernels::cpu;

struct Shape {
  index_t rows, cols;
  std::string name() const { return std::to_string(rows) + "x" + std::to_string(cols); }
};
constexpr Shape kShapes[] = {{576, 576}, {1536, 576}, {576, 1536}, {4096, 4096}};

// (kernel, shape, threads) -> time per call; baselines run before the kernels compared with them.
std::map<std::tuple<std::string, std::string, int>, CallTime>& times() {
  static std::map<std::tuple<std::string, std::string, int>, CallTime> m;
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
  const double cpu_s = (process_cpu_seconds() - c0) / threads;
  if (!calls) return {};
  return {wall / static_cast<double>(calls), cpu_s / static_cast<double>(calls)};
}

// Records the time, sets the counters, and the speedup over `baseline` (same shape and threads) if it ran.
void report(benchmark::State& state, const std::string& kernel, const Shape& shape, int threads, CallTime t,
            std::size_t copies, std::size_t bytes, const std::string& baseline) {
  char label[128];
  std::snprintf(label, sizeof label, "DRAM-resident: %zu copies, %.0f MiB", copies,
                static_cast<double>(copies * bytes) / (1 << 20));
  state.SetLabel(label);
  state.counters["weight_GB/s"] =
      benchmark::Counter(static_cast<double>(bytes) * state.iterations(), benchmark::Counter::kIsRate);
  times()[{kernel, shape.name(), threads}] = t;
  const auto it = times().find({baseline, shape.name(), threads});
  if (baseline.empty() || it == times().end() || t.wall <= 0 || t.cpu <= 0) return;
  state.counters["speedup"] = it->second.wall / t.wall;
  state.counters["speedup_cpu"] = it->second.cpu / t.cpu;
}

std::vector<std::uint64_t> random_signs(index_t n) {
  lowbit::Rng rng(5);
  std::vector<float> v(static_cast<std::size_t>(n));
  for (auto& x : v) x = static_cast<float>(rng.normal());
  std::vector<std::uint64_t> bits(static_cast<std::size_t>(cpu::signs_words(n)));
  cpu::pack_signs(v.data(), n, bits.data());
  return bits;
}

void bench_fp32(benchmark::State& state, Shape shape) {
  const int threads = static_cast<int>(state.range(0));
  lowbit::set_num_threads(threads);
  const std::size_t bytes = static_cast<std::size_t>(shape.rows * shape.cols) * sizeof(float);
  const std::size_t copies = lowbit::eval::rotation_copies(bytes);
  const std::vector<std::vector<float>> mats(copies, lowbit::eval::gaussian_matrix(shape.rows, shape.cols, 1));
  std::vector<float> x(static_cast<std::size_t>(shape.cols)), y(static_cast<std::size_t>(shape.rows));
  for (std::size_t c = 0; c < x.size(); ++c) x[c] = 0.001f * static_cast<float>(c % 97) - 0.05f;
  const CallTime t = timed_loop(state, threads, [&](std::size_t call) {
    lowbit::eval::fp32_gemv(mats[call % copies].data(), shape.rows, shape.cols, x.data(), y.data());
  });
  report(state, "f32_eigen", shape, threads, t, copies, bytes, "");
}

void bench_sign(benchmark::State& state, Shape shape) {
  const int threads = static_cast<int>(state.range(0));
  lowbit::set_num_threads(threads);
  const std::size_t bytes = static_cast<std::size_t>(shape.rows * shape.cols) * sizeof(float);
  const std::size_t copies = lowbit::eval::rotation_copies(bytes);
  const std::vector<std::vector<float>> mats(copies, lowbit::eval::gaussian_matrix(shape.rows, shape.cols, 1));
  std::vector<float> rowsum(static_cast<std::size_t>(shape.rows)), y(rowsum.size());
  cpu::sign_rowsums(mats[0].data(), shape.rows, shape.cols, rowsum.data());
  const auto bits = random_signs(shape.cols);
  const CallTime t = timed_loop(state, threads, [&](std::size_t call) {
    cpu::sign_matvec(mats[call % copies].data(), rowsum.data(), bits.data(), shape.rows, shape.cols, y.data());
  });
  report(state, "sign", shape, threads, t, copies, bytes, "f32_eigen");
}

template <int Bits>
lowbit::BCQPacked<lowbit::BCQ<Bits, 128>> random_bcq(const Shape& shape) {
  lowbit::BCQPacked<lowbit::BCQ<Bits, 128>> p(shape.rows, shape.cols);
  lowbit::Rng rng(static_cast<std::uint64_t>(shape.rows * 31 + shape.cols + Bits));
  for (auto& w : p.planes()) w = rng.next_u32();
  for (auto& a : p.alphas()) a = lowbit::to_half(0.001f + 0.01f * static_cast<float>(rng.next_u32() >> 8) / 16777216.0f);
  for (auto& o : p.offsets()) o = lowbit::to_half(0.001f * (static_cast<float>(rng.next_u32() >> 8) / 16777216.0f - 0.5f));
  return p;
}

// popcount = false: bcq_matvec with the ±1 signs as a float x; true: bcq_sign_matvec on the packed signs.
template <int Bits, bool Popcount>
void bench_bcq(benchmark::State& state, Shape shape) {
  const int threads = static_cast<int>(state.range(0));
  lowbit::set_num_threads(threads);
  const auto packed = random_bcq<Bits>(shape);
  const std::size_t bytes = packed.bytes();
  const std::size_t copies = lowbit::eval::rotation_copies(bytes);
  const std::vector<lowbit::BCQPacked<lowbit::BCQ<Bits, 128>>> mats(copies, packed);
  const auto bits = random_signs(shape.cols);
  std::vector<float> x(static_cast<std::size_t>(shape.cols)), y(static_cast<std::size_t>(shape.rows));
  for (index_t c = 0; c < shape.cols; ++c) x[static_cast<std::size_t>(c)] = cpu::unpack_sign(bits.data(), c);
  const CallTime t = timed_loop(state, threads, [&](std::size_t call) {
    if constexpr (Popcount)
      cpu::bcq_sign_matvec(mats[call % copies], bits.data(), y.data());
    else
      cpu::bcq_matvec(mats[call % copies], x.data(), y.data());
  });
  const std::string format = lowbit::BCQ<Bits, 128>::name();
  report(state, (Popcount ? "bcq_sign/" : "bcq_lut/") + format, shape, threads, t, copies, bytes,
         Popcount ? "bcq_lut/" + format : "f32_eigen");
}

template <class Fn>
void add(const std::string& name, const Shape& shape, int threads, Fn fn) {
  benchmark::RegisterBenchmark((name + "/" + shape.name()).c_str(), fn, shape)
      ->Arg(threads)
      ->ArgName("threads")
      ->UseRealTime()
      ->Unit(benchmark::kMicrosecond);
}

template <int Bits>
void add_bcq(const Shape& shape, int threads) {
  const std::string format = lowbit::BCQ<Bits, 128>::name();
  add("bcq_lut/" + format, shape, threads, bench_bcq<Bits, false>);
  add("bcq_sign/" + format, shape, threads, bench_bcq<Bits, true>);
}

}  // namespace

int main(int argc, char** argv) {
  for (int threads : {1, 2})
    for (const Shape& shape : kShapes) {
      add("f32_eigen", shape, threads, bench_fp32);
      add("sign", shape, threads, bench_sign);
      add_bcq<1>(shape, threads);
      add_bcq<2>(shape, threads);
      add_bcq<3>(shape, threads);
    }
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  std::printf("lowbit bench_sign: sign path %s, bcq path %s; every benchmark rotates over >= %zu MiB of weight copies "
              "(L3 %zu MiB), so weights stream from DRAM; ratios are measured in this run, same threads\n",
              cpu::sign_matvec_path(), cpu::bcq_matvec_path(), lowbit::eval::rotation_bytes() >> 20,
              lowbit::eval::l3_bytes() >> 20);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  // Summary: time per call (wall, us) and the ratios, per shape and thread count that ran.
  auto us = [](const CallTime* t) { return t ? 1e6 * t->wall : 0.0; };
  auto find = [](const std::string& k, const std::string& s, int th) -> const CallTime* {
    const auto it = times().find({k, s, th});
    return it == times().end() ? nullptr : &it->second;
  };
  std::printf("\n| threads | shape | Eigen fp32 (us) | sign (us) | sign vs fp32 | format | bcq_matvec (us) | popcount (us) "
              "| popcount vs bcq_matvec | popcount vs fp32 |\n|---|---|---:|---:|---:|---|---:|---:|---:|---:|\n");
  for (int threads : {1, 2})
    for (const Shape& shape : kShapes) {
      const CallTime* f = find("f32_eigen", shape.name(), threads);
      const CallTime* s = find("sign", shape.name(), threads);
      for (const char* format : {"bcq:1:128", "bcq:2:128", "bcq:3:128"}) {
        const CallTime* l = find(std::string("bcq_lut/") + format, shape.name(), threads);
        const CallTime* p = find(std::string("bcq_sign/") + format, shape.name(), threads);
        if (!f && !s && !l && !p) continue;
        auto ratio = [](const CallTime* a, const CallTime* b) { return a && b && b->wall > 0 ? a->wall / b->wall : 0.0; };
        std::printf("| %d | %s | %.1f | %.1f | %.2fx | %s | %.1f | %.1f | %.2fx | %.2fx |\n", threads, shape.name().c_str(),
                    us(f), us(s), ratio(f, s), format, us(l), us(p), ratio(l, p), ratio(f, p));
      }
    }
  return 0;
}
