// `lowbit bench-formats`: what each weight format costs and buys, on random matrices. For every format in
// `format_table()` it quantizes a Gaussian and a heavy-tailed (Student-t, 3 degrees of freedom) matrix
// and prints bits/weight as stored, the relative Frobenius error ‖W − Ŵ‖/‖W‖, and the matvec time and
// speedup over an Eigen fp32 GEMV measured in the same run. Both sides rotate over enough copies of
// their weights (≥ 4x the L3) that they stream from DRAM, as in decoding. New formats append one line
// to `format_table()`.
#include <Eigen/Core>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include <lowbit/core/error.hpp>
#include <lowbit/core/parallel.hpp>
#include <lowbit/core/rng.hpp>
#include <lowbit/format/concepts.hpp>
#include <lowbit/quantizer.hpp>

#include "cli.hpp"

namespace {

using namespace lowbit;

struct Matrices {
  index_t rows = 0, cols = 0;
  std::vector<float> gaussian, heavy, x;
};

struct FormatResult {
  std::string name;
  double bits_per_weight = 0, error_gaussian = 0, error_heavy = 0, matvec_us = 0;
};

std::size_t l3_bytes() {
  std::ifstream in("/sys/devices/system/cpu/cpu0/cache/index3/size");
  std::size_t kib = 0;
  return (in >> kib) ? kib * 1024 : (32u << 20);
}

std::size_t rotation_copies(std::size_t bytes_per_copy) {
  const std::size_t target = std::max<std::size_t>(128u << 20, 4 * l3_bytes());
  return std::max<std::size_t>(2, (target + bytes_per_copy - 1) / bytes_per_copy);
}

// Seconds per call of `call(i)`: the best of 3 batches, each at least 0.1 s long.
double seconds_per_call(const std::function<void(std::size_t)>& call) {
  using Clock = std::chrono::steady_clock;
  double best = 1e30;
  std::size_t i = 0;
  call(i++);  // warm-up
  for (int batch = 0; batch < 3; ++batch) {
    const auto t0 = Clock::now();
    std::size_t n = 0;
    double elapsed = 0;
    do {
      call(i++);
      ++n;
      elapsed = std::chrono::duration<double>(Clock::now() - t0).count();
    } while (elapsed < 0.1);
    best = std::min(best, elapsed / static_cast<double>(n));
  }
  return best;
}

double relative_error(const std::vector<float>& w, const std::vector<float>& w_hat) {
  double num = 0, den = 0;
  for (std::size_t i = 0; i < w.size(); ++i) {
    const double d = static_cast<double>(w[i]) - w_hat[i];
    num += d * d;
    den += static_cast<double>(w[i]) * w[i];
  }
  return std::sqrt(num / den);
}

template <class Format>
  requires QuantizerFor<Quantizer<Format>>
FormatResult run_format(const Matrices& m) {
  using Q = Quantizer<Format>;
  FormatResult result;
  result.name = Q::name();
  std::vector<float> w_hat(m.gaussian.size());
  const auto heavy = Q::quantize(MatrixView<const float>(m.heavy.data(), m.rows, m.cols));
  Q::dequantize(heavy, MatrixView<float>(w_hat.data(), m.rows, m.cols));
  result.error_heavy = relative_error(m.heavy, w_hat);
  const auto packed = Q::quantize(MatrixView<const float>(m.gaussian.data(), m.rows, m.cols));
  Q::dequantize(packed, MatrixView<float>(w_hat.data(), m.rows, m.cols));
  result.error_gaussian = relative_error(m.gaussian, w_hat);
  result.bits_per_weight = Q::bits_per_weight(packed);
  const std::size_t copies = rotation_copies(packed.bytes());
  std::vector<typename Q::Packed> mats(copies, packed);
  std::vector<float> y(static_cast<std::size_t>(m.rows));
  result.matvec_us = 1e6 * seconds_per_call([&](std::size_t i) { Q::matvec(mats[i % copies], m.x.data(), y.data()); });
  return result;
}

// Every format the benchmark knows; append new formats here.
using FormatRunner = FormatResult (*)(const Matrices&);
const std::vector<FormatRunner>& format_table() {
  static const std::vector<FormatRunner> table = {
      &run_format<Uniform<4, 128>>, &run_format<Uniform<4, 64>>, &run_format<Uniform<3, 128>>,
      &run_format<Uniform<3, 64>>,  &run_format<Uniform<2, 128>>, &run_format<Uniform<2, 64>>,
  };
  return table;
}

double fp32_matvec_us(const Matrices& m) {
  const std::size_t bytes = m.gaussian.size() * sizeof(float);
  const std::size_t copies = rotation_copies(bytes);
  std::vector<std::vector<float>> mats(copies, m.gaussian);
  std::vector<float> y(static_cast<std::size_t>(m.rows));
  using RowMajor = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  return 1e6 * seconds_per_call([&](std::size_t i) {
           const float* W = mats[i % copies].data();
           parallel_for(
               0, m.rows,
               [&](index_t r0, index_t r1) {
                 Eigen::Map<const RowMajor> block(W + r0 * m.cols, r1 - r0, m.cols);
                 Eigen::Map<const Eigen::VectorXf> xv(m.x.data(), m.cols);
                 Eigen::Map<Eigen::VectorXf> yv(y.data() + r0, r1 - r0);
                 yv.noalias() = block * xv;
               },
               64);
         });
}

Matrices make_matrices(index_t rows, index_t cols, std::uint64_t seed) {
  Matrices m;
  m.rows = rows;
  m.cols = cols;
  const auto n = static_cast<std::size_t>(rows * cols);
  m.gaussian.resize(n);
  m.heavy.resize(n);
  m.x.resize(static_cast<std::size_t>(cols));
  const Rng root(seed);
  // one generator per row, so the matrices do not depend on the thread count
  parallel_for(0, rows, [&](index_t r0, index_t r1) {
    for (index_t r = r0; r < r1; ++r) {
      Rng rng = root.fork(static_cast<std::uint64_t>(r));
      for (index_t c = 0; c < cols; ++c) {
        const auto i = static_cast<std::size_t>(r * cols + c);
        m.gaussian[i] = 0.02f * static_cast<float>(rng.normal());
        double chi2 = 0;
        for (int k = 0; k < 3; ++k) {
          const double z = rng.normal();
          chi2 += z * z;
        }
        m.heavy[i] = 0.02f * static_cast<float>(rng.normal() / std::sqrt(chi2 / 3.0));
      }
    }
  });
  Rng rng = root.fork(static_cast<std::uint64_t>(rows) + 1);
  for (auto& v : m.x) v = static_cast<float>(rng.normal());
  return m;
}

struct Options {
  index_t rows = 4096, cols = 4096;
  std::uint64_t seed = 0;
  int threads = 0;
  bool json = false;
};

int run(const Options& opt) {
  LOWBIT_CHECK(opt.rows > 0 && opt.cols > 0, "bench-formats: --rows and --cols must be positive, got ", opt.rows,
               " and ", opt.cols);
  if (opt.threads > 0) set_num_threads(opt.threads);
  const Matrices m = make_matrices(opt.rows, opt.cols, opt.seed);
  const double fp32_us = fp32_matvec_us(m);
  std::vector<FormatResult> results;
  std::printf("bench-formats: %lldx%lld, seed %llu, %d threads; weights rotate over >= %zu MiB (L3 %zu MiB), "
              "so every matvec streams them from DRAM\n",
              static_cast<long long>(m.rows), static_cast<long long>(m.cols),
              static_cast<unsigned long long>(opt.seed), max_threads(),
              std::max<std::size_t>(128u << 20, 4 * l3_bytes()) >> 20, l3_bytes() >> 20);
  std::printf("%-20s %10s %14s %16s %12s %9s\n", "format", "bits/w", "rel.err gauss", "rel.err t(3)",
              "matvec us", "speedup");
  std::printf("%-20s %10.3f %14s %16s %12.1f %8.2fx\n", "f32 (Eigen)", 32.0, "0", "0", fp32_us, 1.0);
  for (const auto runner : format_table()) {
    const FormatResult r = runner(m);
    std::printf("%-20s %10.3f %14.4f %16.4f %12.1f %8.2fx\n", r.name.c_str(), r.bits_per_weight, r.error_gaussian,
                r.error_heavy, r.matvec_us, fp32_us / r.matvec_us);
    std::fflush(stdout);
    results.push_back(r);
  }
  if (opt.json) {
    nlohmann::json out;
    out["rows"] = m.rows;
    out["cols"] = m.cols;
    out["seed"] = opt.seed;
    out["threads"] = max_threads();
    out["dram_resident"] = true;
    out["fp32_matvec_us"] = fp32_us;
    out["formats"] = nlohmann::json::array();
    for (const auto& r : results)
      out["formats"].push_back({{"format", r.name},
                                {"bits_per_weight", r.bits_per_weight},
                                {"rel_error_gaussian", r.error_gaussian},
                                {"rel_error_student_t3", r.error_heavy},
                                {"matvec_us", r.matvec_us},
                                {"speedup_vs_fp32", fp32_us / r.matvec_us}});
    std::printf("%s\n", out.dump().c_str());
  }
  return 0;
}

const lowbit::cli::Registration registration{
    "bench-formats",
    "Quantize random Gaussian and heavy-tailed matrices with every format: bits/weight, error, matvec speedup",
    [](CLI::App& app) -> lowbit::cli::Action {
      auto opt = std::make_shared<Options>();
      app.add_option("--rows", opt->rows, "matrix rows (output features)")->capture_default_str();
      app.add_option("--cols", opt->cols, "matrix columns (input features)")->capture_default_str();
      app.add_option("--seed", opt->seed, "random seed")->capture_default_str();
      app.add_option("--threads", opt->threads, "threads (0: all cores)")->capture_default_str();
      app.add_flag("--json", opt->json, "print one JSON object with all results on the last stdout line");
      return [opt] { return run(*opt); };
    }};

}  // namespace
