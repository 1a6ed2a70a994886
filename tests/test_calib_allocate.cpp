// Mixed-precision allocation (calib/knapsack.hpp, calib/allocate.hpp): the knapsack against brute force
// (optimal, never over the budget, rounding says so); the output-error proxy against ‖ΔW x‖² computed
// from the inputs; the block-wise KL probe against a whole-model forward; the sensitivity pass's bytes,
// references and predictions; every strategy within its budget; the budget and candidate errors; and the
// sensitivity and plan files round-tripping. The CLI side (allocate → quantize --plan → the file's bytes)
// is tests/cli/allocate.sh.
#include <doctest/doctest.h>

#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include <lowbit/calib/allocate.hpp>
#include <lowbit/calib/group_methods.hpp>
#include <lowbit/core/rng.hpp>
#include <lowbit/train/pretrain.hpp>

#include "test_util.hpp"

using namespace lowbit;

namespace {

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return {};
}

nn::Llama tiny_model(std::uint64_t seed) {
  Rng rng(seed);
  return nn::Llama::random_init(train::byte_model_config(64, 128, 3, 4, 2, 64), rng, 0.05);
}

std::vector<std::int32_t> random_tokens(int n, int vocab, std::uint64_t seed) {
  Rng rng(seed);
  std::vector<std::int32_t> t(static_cast<std::size_t>(n));
  for (auto& v : t) v = static_cast<std::int32_t>(rng.below(static_cast<std::uint64_t>(vocab)));
  return t;
}

// Brute force: every combination of options.
double brute_force(const std::vector<std::vector<calib::KnapsackOption>>& items, std::uint64_t budget) {
  double best = INFINITY;
  std::vector<std::size_t> k(items.size(), 0);
  while (true) {
    std::uint64_t bytes = 0;
    double loss = 0;
    for (std::size_t i = 0; i < items.size(); ++i) bytes += items[i][k[i]].bytes, loss += items[i][k[i]].loss;
    if (bytes <= budget) best = std::min(best, loss);
    std::size_t i = 0;
    while (i < items.size() && ++k[i] == items[i].size()) k[i++] = 0;
    if (i == items.size()) return best;
  }
}

calib::SensitivityTable measured_table(bool all) {
  nn::Llama work = tiny_model(3);
  calib::CalibrationConfig cfg;
  cfg.nsamples = 4;
  cfg.seqlen = 32;
  cfg.seed = 1;
  cfg.quiet = true;
  const auto tokens = random_tokens(cfg.nsamples * cfg.seqlen, work.config().vocab_size, 9);
  calib::SensitivityOptions opt;
  for (const char* f : {"uniform:2:32", "uniform:3:32", "uniform:4:32"})
    opt.candidates.push_back({{"gptq", f}, calib::group_method("gptq")});
  opt.table_formats = {"f32", "uniform:8:row:sym", "uniform:4:32"};
  opt.measure_all = all;
  opt.kl_samples = 2;
  opt.kl_seqlen = 16;
  opt.quiet = true;
  return calib::measure_sensitivity(work, [] { return tiny_model(3); }, tokens, cfg, opt);
}

}  // namespace

TEST_CASE("knapsack: optimal against brute force and never over the budget") {
  Rng rng(5);
  for (int trial = 0; trial < 300; ++trial) {
    const int n = 1 + static_cast<int>(rng.below(6));
    const std::uint64_t scale = 1 + rng.below(3) * 7;  // a common factor the unit should find
    std::vector<std::vector<calib::KnapsackOption>> items(static_cast<std::size_t>(n));
    std::uint64_t lo = 0, hi = 0;
    for (auto& it : items) {
      const int m = 1 + static_cast<int>(rng.below(4));
      std::uint64_t a = UINT64_MAX, b = 0;
      for (int k = 0; k < m; ++k) {
        it.push_back({scale * (1 + rng.below(40)), rng.uniform() * 10});
        a = std::min(a, it.back().bytes), b = std::max(b, it.back().bytes);
      }
      lo += a, hi += b;
    }
    const std::uint64_t budget = lo + rng.below(hi - lo + 2);
    const auto s = calib::solve_knapsack(items, budget);
    CHECK(s.exact);
    CHECK(s.bytes <= budget);
    CHECK(s.loss == doctest::Approx(brute_force(items, budget)).epsilon(1e-12));
    double loss = 0;
    std::uint64_t bytes = 0;
    for (std::size_t i = 0; i < items.size(); ++i) {
      loss += items[i][static_cast<std::size_t>(s.choice[i])].loss;
      bytes += items[i][static_cast<std::size_t>(s.choice[i])].bytes;
    }
    CHECK(loss == s.loss);
    CHECK(bytes == s.bytes);
    // A table too small for the exact DP: coarser, rounded-up costs; still within the budget.
    if (hi > lo + 8) {
      const auto r = calib::solve_knapsack(items, budget, static_cast<std::uint64_t>(n) * 3);
      CHECK(r.bytes <= budget);
      CHECK(r.loss >= s.loss - 1e-12);
      if (!r.exact) CHECK(r.unit > s.unit);
    }
  }
}

TEST_CASE("knapsack: the greatest common divisor makes byte-sized costs cheap and exact") {
  // Two items of megabytes whose differences share a factor of 4096: 3 cells of slack, not millions.
  std::vector<std::vector<calib::KnapsackOption>> items = {{{4'000'000, 3.0}, {4'008'192, 1.0}},
                                                           {{2'000'000, 5.0}, {2'004'096, 2.0}, {2'012'288, 0.5}}};
  const auto s = calib::solve_knapsack(items, 6'008'192);
  CHECK(s.exact);
  CHECK(s.unit == 4096);
  CHECK(s.loss == doctest::Approx(brute_force(items, 6'008'192)));
  CHECK(s.bytes <= 6'008'192);
  CHECK(error_of([&] { calib::solve_knapsack(items, 5'999'999); }).find("below the cheapest choice") != std::string::npos);
}

TEST_CASE("output_error is the mean of ‖ΔW x‖² over the input rows") {
  Rng rng(7);
  const index_t out = 5, in = 9, rows = 40;
  std::vector<float> dW(static_cast<std::size_t>(out * in)), X(static_cast<std::size_t>(rows * in));
  for (auto& v : dW) v = static_cast<float>(rng.normal());
  for (auto& v : X) v = static_cast<float>(rng.normal());
  calib::HessianAccumulator h(in);
  h.add(MatrixView<const float>(X.data(), rows, in));
  double direct = 0;
  for (index_t r = 0; r < rows; ++r)
    for (index_t o = 0; o < out; ++o) {
      double y = 0;
      for (index_t i = 0; i < in; ++i) y += double(dW[size_t(o * in + i)]) * X[size_t(r * in + i)];
      direct += y * y;
    }
  CHECK(calib::output_error(MatrixView<const float>(dW.data(), out, in), h) ==
        doctest::Approx(direct / rows).epsilon(1e-5));
}

TEST_CASE("KL probe: from a block on equals a whole-model forward") {
  nn::Llama fp = tiny_model(3), changed = tiny_model(3);
  const int T = 16, N = 3;
  const auto tokens = random_tokens(N * T, fp.config().vocab_size, 4);
  calib::KlProbe probe(fp, tokens, T, 2);
  CHECK(probe.kl(fp, 0) < 1e-9);
  // wv of block 1 to 2 bits
  const index_t rows = changed.linear(1, nn::LinearRole::V).out_features(), cols = 64;
  std::vector<float> W(static_cast<std::size_t>(rows * cols));
  changed.linear(1, nn::LinearRole::V).dequantize(MatrixView<float>(W.data(), rows, cols));
  changed.set_linear(1, nn::LinearRole::V,
                     nn::make_rtn_linear("uniform:2:32", MatrixView<const float>(W.data(), rows, cols)));
  const index_t V = fp.config().vocab_size, n = N * T;
  std::vector<float> a(static_cast<std::size_t>(n * V)), b(a.size());
  tiny_model(3).forward(tokens.data(), N, T, a.data());
  changed.forward(tokens.data(), N, T, b.data());
  double direct = 0;
  for (index_t r = 0; r < n; ++r) {
    const double la = eval::log_sum_exp(a.data() + r * V, int(V)), lb = eval::log_sum_exp(b.data() + r * V, int(V));
    for (index_t v = 0; v < V; ++v) {
      const double pa = a[size_t(r * V + v)] - la;
      direct += std::exp(pa) * (pa - (b[size_t(r * V + v)] - lb));
    }
  }
  direct /= double(n);
  REQUIRE(direct > 1e-4);
  CHECK(probe.kl(changed, 1) == doctest::Approx(direct).epsilon(1e-4));
  CHECK(probe.kl(changed, 0) == doctest::Approx(direct).epsilon(1e-4));
  CHECK(probe.kl(changed, -1) == doctest::Approx(direct).epsilon(1e-4));
}

TEST_CASE("sensitivity: bytes as stored, KL falls with bits, references fit the proxy") {
  const auto s = measured_table(true);
  const nn::Llama model = tiny_model(3);
  const auto& c = model.config();
  REQUIRE(s.tensors.size() == static_cast<std::size_t>(c.n_layers * 7 + 1));
  int falling = 0, linears = 0;
  for (const auto& t : s.tensors) {
    if (t.is_table()) {
      CHECK(t.entries[0].bytes == static_cast<std::uint64_t>(c.vocab_size) * c.dim * 4);
      CHECK(t.entries[0].predicted == 0);
      CHECK(t.entries[1].measured > 0);
      CHECK(t.entries[2].measured > t.entries[1].measured);  // 4-bit table hurts more than 8-bit
      continue;
    }
    ++linears;
    std::vector<float> W(static_cast<std::size_t>(t.rows * t.cols));
    model.linear(t.layer, nn::kAllLinearRoles[static_cast<std::size_t>(linears - 1) % 7]).dequantize(
        MatrixView<float>(W.data(), t.rows, t.cols));
    for (std::size_t k = 0; k < 3; ++k) {
      const auto fmt = s.candidates[k].format;
      CHECK(t.entries[k].bytes == nn::make_rtn_linear(fmt, MatrixView<const float>(W.data(), t.rows, t.cols))->bytes());
      CHECK(t.entries[k].proxy > 0);
      CHECK(t.entries[k].predicted == t.entries[k].measured);  // everything measured
    }
    CHECK(t.reference == 0);  // the cheapest
    CHECK(t.alpha == doctest::Approx(t.entries[0].measured / t.entries[0].proxy));
    CHECK(t.entries[0].proxy > t.entries[1].proxy);
    CHECK(t.entries[1].proxy > t.entries[2].proxy);
    falling += t.entries[0].measured > t.entries[1].measured && t.entries[1].measured > t.entries[2].measured;
  }
  CHECK(falling >= linears - 2);  // KL of tiny random models can be noisy for a tensor or two
  // Measuring only the reference predicts the rest from alpha·proxy, with the same proxies and references.
  const auto r = measured_table(false);
  for (std::size_t i = 0; i < r.tensors.size(); ++i) {
    const auto& t = r.tensors[i];
    if (t.is_table()) continue;
    CHECK(t.entries[0].measured == doctest::Approx(s.tensors[i].entries[0].measured));
    CHECK(std::isnan(t.entries[1].measured));
    CHECK(t.entries[1].predicted == doctest::Approx(t.alpha * t.entries[1].proxy));
  }
  // The file round-trips, and is checked against the model it claims to describe.
  const auto back = calib::SensitivityTable::from_json(s.to_json(), "mem");
  CHECK(back.to_json() == s.to_json());
  calib::check_sensitivity_matches(back, c, "mem");
  Rng rng(1);
  const nn::Llama other = nn::Llama::random_init(train::byte_model_config(64, 96, 3, 4, 2, 64), rng, 0.05);
  CHECK(error_of([&] { calib::check_sensitivity_matches(back, other.config(), "sens.json"); })
            .find("sens.json: tensor 4 is layers.0.feed_forward.w1 [128, 64], the model's is layers.0.feed_forward.w1 [96, 64]") !=
        std::string::npos);
  auto forged = back;
  forged.tensors[3].entries[1].bytes = std::uint64_t{1} << 60;
  CHECK(error_of([&] { calib::check_sensitivity_matches(forged, c, "sens.json"); }).find("impossible for its shape") !=
        std::string::npos);
}

TEST_CASE("allocate: every strategy within its budget, knapsack best on the predicted loss, budget errors") {
  const auto s = measured_table(false);
  const double lo_bpw = 8.0 * [&] {
    double b = 0;
    for (const auto& t : s.tensors)
      if (!t.is_table()) b += double(t.entries[0].bytes);
    return b;
  }() / s.linear_weights();
  for (double target : {lo_bpw + 0.05, 3.0, 3.6, 4.2}) {
    const auto k = calib::allocate(s, target, calib::Scope::Blocks, calib::Strategy::Knapsack, 0);
    CHECK(k.exact);
    std::uint64_t bytes = 0;
    for (const auto& t : k.tensors) bytes += t.bytes;
    CHECK(bytes <= k.budget_bytes);
    CHECK(k.linear_bits_per_weight <= target + 1e-12);
    CHECK(k.tensors.size() == s.tensors.size() - 1);
    for (auto strategy : {calib::Strategy::Uniform, calib::Strategy::BlockAdversary, calib::Strategy::RoleDepth}) {
      const auto b = calib::allocate(s, target, calib::Scope::Blocks, strategy, 0);
      CHECK(b.linear_bits_per_weight <= target + 1e-12);
      CHECK(k.predicted_kl <= b.predicted_kl + 1e-15);
    }
    const auto back = calib::AllocationPlan::from_json(k.to_json(), "mem");
    CHECK(back.to_json() == k.to_json());
  }
  // The whole-model scope chooses the table too, and counts norms and table in its bits/weight.
  const auto m = calib::allocate(s, 4.0, calib::Scope::Model, calib::Strategy::Knapsack, 0);
  CHECK(m.tensors.size() == s.tensors.size());
  CHECK(m.model_bits_per_weight <= 4.0 + 1e-12);
  CHECK(m.find("tok_embeddings") != nullptr);
  // Errors: below the cheapest, above the dearest, a baseline in the model scope.
  CHECK(error_of([&] { calib::allocate(s, 1.0, calib::Scope::Blocks, calib::Strategy::Knapsack, 0); })
            .find("below the cheapest plan") != std::string::npos);
  CHECK(error_of([&] { calib::allocate(s, 9.0, calib::Scope::Blocks, calib::Strategy::Knapsack, 0); })
            .find("above the dearest plan") != std::string::npos);
  CHECK(error_of([&] { calib::allocate(s, 4.0, calib::Scope::Model, calib::Strategy::Uniform, 0); })
            .find("--scope blocks") != std::string::npos);
}

TEST_CASE("allocate: a candidate whose groups are longer than a tensor's rows is refused by name") {
  nn::Llama work = tiny_model(3);
  calib::CalibrationConfig cfg;
  cfg.nsamples = 2;
  cfg.seqlen = 16;
  cfg.quiet = true;
  calib::SensitivityOptions opt;
  opt.candidates.push_back({{"rtn", "uniform:2:128"}, calib::group_method("rtn")});
  opt.kl_samples = 1;
  opt.kl_seqlen = 8;
  const auto msg = error_of([&] {
    calib::measure_sensitivity(work, [] { return tiny_model(3); }, random_tokens(32, 256, 1), cfg, opt);
  });
  CHECK(msg.find("rtn:uniform:2:128 cannot apply to layers.0.attention.wq") != std::string::npos);
  CHECK(msg.find("rows of 64") != std::string::npos);
  CHECK(calib::format_group_size("uniform:4:128:sym") == 128);
  CHECK(calib::format_group_size("uniform:8:row:sym") == 0);
  CHECK(calib::format_group_size("additive:2:8:16") == 16);
  CHECK(calib::format_group_size("nf3:64") == 64);
  CHECK(error_of([] { calib::parse_candidates("gptq:uniform:2:7", "--candidates"); }).find("unknown format") !=
        std::string::npos);
  CHECK(error_of([] { calib::parse_candidates("gptq", "--candidates"); }).find("METHOD:FORMAT") != std::string::npos);
}

TEST_CASE("llama.cpp's use_more_bits") {
  // n = 30: the first 3, the last 4 (i >= 26), and i = 5, 8, ..., 23 in between
  std::vector<int> more;
  for (int i = 0; i < 30; ++i)
    if (calib::detail::use_more_bits(i, 30)) more.push_back(i);
  CHECK(more == std::vector<int>{0, 1, 2, 5, 8, 11, 14, 17, 20, 23, 26, 27, 28, 29});
  CHECK(calib::detail::spread_order(5) == std::vector<std::size_t>{0, 4, 2, 1, 3});
}
