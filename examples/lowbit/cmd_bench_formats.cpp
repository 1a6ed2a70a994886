// `lowbit bench-formats`: what each weight format costs and buys, on random matrices. For every
// registered format (formats.hpp) selected by --formats it quantizes a Gaussian and a heavy-tailed
// (Student-t, 3 degrees of freedom) matrix with the format's default quantization (RTN for group-grid
// formats, data-free AQ for additive ones) and prints bits/weight as stored, the relative Frobenius
// error ‖W − Ŵ‖/‖W‖, and the matvec time and speedup over an Eigen fp32 GEMV measured in the same run,
// with the harness bench/ uses (eval/matvec_bench.hpp: weights stream from DRAM, as in decoding).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <functional>
#include <nlohmann/json.hpp>
#include <regex>
#include <string>
#include <vector>

#include <lowbit/core/error.hpp>
#include <lowbit/core/parallel.hpp>
#include <lowbit/core/rng.hpp>
#include <lowbit/eval/matvec_bench.hpp>
#include <lowbit/formats.hpp>

#include "cli.hpp"

namespace lowbit_cmd_bench_formats {

using namespace lowbit;

struct Matrices {
  index_t rows = 0, cols = 0;
  std::vector<float> gaussian, heavy, x;
};

struct FormatResult {
  std::string name;
  double bits_per_weight = 0, error_gaussian = 0, error_heavy = 0, matvec_us = 0;
};

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
  const std::size_t copies = eval::rotation_copies(packed.bytes(), 128u << 20);
  std::vector<typename Q::Packed> mats(copies, packed);
  std::vector<float> y(static_cast<std::size_t>(m.rows));
  result.matvec_us =
      1e6 * eval::time_calls([&](std::size_t i) { Q::matvec(mats[i % copies], m.x.data(), y.data()); }, max_threads()).wall;
  return result;
}

double fp32_matvec_us(const Matrices& m) {
  const std::size_t copies = eval::rotation_copies(m.gaussian.size() * sizeof(float), 128u << 20);
  std::vector<std::vector<float>> mats(copies, m.gaussian);
  std::vector<float> y(static_cast<std::size_t>(m.rows));
  return 1e6 * eval::time_calls([&](std::size_t i) { eval::fp32_gemv(mats[i % copies].data(), m.rows, m.cols, m.x.data(), y.data()); },
                                max_threads())
                   .wall;
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

struct Options : cli::CommonOptions {
  index_t rows = 4096, cols = 4096;
  std::uint64_t seed = 0;
  std::string formats = "^(uniform|nf3):";  // group-grid formats: RTN quantizes them in a blink
};

int run(const Options& opt) {
  LOWBIT_CHECK(opt.rows > 0 && opt.cols > 0, "bench-formats: --rows and --cols must be positive, got ", opt.rows,
               " and ", opt.cols);
  opt.apply();
  std::regex select;
  try {
    select = std::regex(opt.formats);
  } catch (const std::regex_error& e) {
    fail("bench-formats: --formats '", opt.formats, "' is not a valid regular expression (", e.what(), ")");
  }
  const Matrices m = make_matrices(opt.rows, opt.cols, opt.seed);
  const double fp32_us = fp32_matvec_us(m);
  std::vector<FormatResult> results;
  std::printf("bench-formats: %lldx%lld, seed %llu, %d threads; weights rotate over >= %zu MiB (L3 %zu MiB), "
              "so every matvec streams them from DRAM\n",
              static_cast<long long>(m.rows), static_cast<long long>(m.cols),
              static_cast<unsigned long long>(opt.seed), max_threads(),
              eval::rotation_bytes(128u << 20) >> 20, eval::l3_bytes() >> 20);
  std::printf("%-20s %10s %14s %16s %12s %9s\n", "format", "bits/w", "rel.err gauss", "rel.err t(3)",
              "matvec us", "speedup");
  std::printf("%-20s %10.3f %14s %16s %12.1f %8.2fx\n", "f32 (Eigen)", 32.0, "0", "0", fp32_us, 1.0);
  for_each_format([&]<class F>(FormatTag<F>) {
    if (!std::regex_search(F::name(), select)) return;
    const FormatResult r = run_format<F>(m);
    std::printf("%-20s %10.3f %14.4f %16.4f %12.1f %8.2fx\n", r.name.c_str(), r.bits_per_weight, r.error_gaussian,
                r.error_heavy, r.matvec_us, fp32_us / r.matvec_us);
    std::fflush(stdout);
    results.push_back(r);
  });
  LOWBIT_CHECK(!results.empty(), "bench-formats: --formats '", opt.formats, "' selects no registered format (",
               lowbit::detail::joined(format_names()), ")");
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
      app.add_option("--formats", opt->formats,
                     "regular expression over format names (`lowbit formats`); additive formats quantize slowly "
                     "(data-free AQ), e.g. '^additive:2:8:8$'")
          ->capture_default_str();
      cli::add_common_options(app, *opt, cli::kThreads | cli::kJson);
      return [opt] { return run(*opt); };
    }};

}  // namespace lowbit_cmd_bench_formats
