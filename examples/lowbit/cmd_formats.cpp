// `lowbit formats`: every weight format of the registry (formats.hpp) with its exact storage cost on a
// matrix shape (bits/weight as stored: codes, scales, zeros and codebooks) and its capabilities: which
// calibration methods can fill it, whether it has an int8-activation kernel on this build, whether it
// has a trainable form (block and end-to-end fine-tuning). Nothing is quantized: the packed storage is
// allocated for the shape and its bytes counted.
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include <lowbit/formats.hpp>
#include <lowbit/nn/quantized_linear.hpp>

#include "cli.hpp"

namespace lowbit_cmd_formats {

using namespace lowbit;

struct Options : cli::CommonOptions {
  index_t rows = 4096, cols = 4096;
};

struct FormatRow {
  std::string name;
  double bits_per_weight = 0;
  std::vector<std::string> capabilities;
};

template <class F>
FormatRow describe(index_t rows, index_t cols) {
  FormatRow r;
  r.name = F::name();
  const typename Quantizer<F>::Packed packed(rows, cols);
  r.bits_per_weight = 8.0 * static_cast<double>(packed.bytes()) / static_cast<double>(rows * cols);
  if constexpr (GroupGridFormat<F>) r.capabilities.push_back("group-grid (rtn, gptq, autoclip, autoclip+gptq)");
  if constexpr (AdditiveFormat<F>) r.capabilities.push_back("additive (aqlm)");
  if constexpr (has_activation_kernel<F, Int8Activations>()) r.capabilities.push_back("int8-activation kernel");
  if constexpr (nn::HasTrainableForm<F>) r.capabilities.push_back("trainable form (fine-tuning)");
  return r;
}

int run(const Options& o) {
  LOWBIT_CHECK(o.rows > 0 && o.cols > 0, "formats: --rows and --cols must be positive, got ", o.rows, " and ", o.cols);
  std::vector<FormatRow> rows;
  for_each_format([&]<class F>(FormatTag<F>) { rows.push_back(describe<F>(o.rows, o.cols)); });
  if (o.json) {
    nlohmann::json out = {{"rows", o.rows}, {"cols", o.cols}, {"formats", nlohmann::json::array()}};
    for (const auto& r : rows)
      out["formats"].push_back({{"format", r.name}, {"bits_per_weight", r.bits_per_weight}, {"capabilities", r.capabilities}});
    std::printf("%s\n", out.dump().c_str());
    return 0;
  }
  std::printf("%zu registered formats; bits/weight as stored on a %lldx%lld matrix\n\n", rows.size(),
              static_cast<long long>(o.rows), static_cast<long long>(o.cols));
  std::printf("%-18s %10s  %s\n", "format", "bits/w", "capabilities");
  for (const auto& r : rows) {
    std::string caps;
    for (const auto& c : r.capabilities) caps += (caps.empty() ? "" : "; ") + c;
    std::printf("%-18s %10.4f  %s\n", r.name.c_str(), r.bits_per_weight, caps.c_str());
  }
  std::printf("\nf32 (dense, 32 bits/weight) is also accepted where a file stores a linear unquantized.\n");
  return 0;
}

const cli::Registration registration{
    "formats", "List the registered weight formats: exact bits/weight on a matrix shape and capabilities",
    [](CLI::App& app) -> cli::Action {
      auto o = std::make_shared<Options>();
      app.add_option("--rows", o->rows, "matrix rows (output features)")->capture_default_str();
      app.add_option("--cols", o->cols, "matrix columns (input features)")->capture_default_str();
      cli::add_common_options(app, *o, cli::kJson);
      return [o] { return run(*o); };
    }};

}  // namespace lowbit_cmd_formats
