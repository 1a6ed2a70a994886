// Calibration methods and plans. A Method turns one linear layer (its FP weight and the statistics of
// its input) into a quantized layer of the format its job asks for; it declares which formats it can
// produce (a capability, checked against the format registry) and which statistics it needs. A
// QuantizationPlan maps tensor names to (method, format) by regular expression, first match wins, so one
// calibration run can give every linear its own method and format (the CLI's --tensor-format).
#pragma once

#include <algorithm>
#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <regex>
#include <string>
#include <utility>
#include <vector>

#include "../core/error.hpp"
#include "../core/tensor.hpp"
#include "../formats.hpp"
#include "../nn/linear.hpp"
#include "../nn/model.hpp"
#include "hessian.hpp"

namespace lowbit::calib {

// Which input a linear reads; q/k/v share attn_in, gate/up share ffn_in.
enum class LinearInput { AttnIn = 0, AttnOut = 1, FfnIn = 2, FfnHidden = 3 };
inline LinearInput input_of(nn::LinearRole r) {
  switch (r) {
    case nn::LinearRole::Q:
    case nn::LinearRole::K:
    case nn::LinearRole::V: return LinearInput::AttnIn;
    case nn::LinearRole::O: return LinearInput::AttnOut;
    case nn::LinearRole::Gate:
    case nn::LinearRole::Up: return LinearInput::FfnIn;
    case nn::LinearRole::Down: return LinearInput::FfnHidden;
  }
  return LinearInput::AttnIn;
}

struct LinearJob {
  int layer = 0;
  nn::LinearRole role = nn::LinearRole::Q;
  std::string name;                             // canonical tensor name, e.g. "layers.3.attention.wq"
  std::string format;                           // the format to produce, a registered descriptor
  MatrixView<const float> weight;               // FP weight [out, in]
  const HessianAccumulator* hessian = nullptr;  // XᵀX of this linear's effective input (when requested)
  MatrixView<const float> sample_inputs;        // sampled effective input rows [S, in] (when requested)
  std::uint64_t seed = 0;                       // the run's seed
};

struct LinearOutcome {
  nn::LinearPtr layer;
  nlohmann::json stats = nlohmann::json::object();
};

// A per-linear quantization method. `accepts` is its capability: the formats it can fill (build it
// with accepts_formats_where). `options` is everything in the method that changes the result: it goes
// into the run fingerprint and the file's quantization_config.
struct Method {
  std::string name;
  std::string capability;  // what `accepts` admits, for messages: "group-grid format"
  std::function<bool(const std::string& format)> accepts;
  bool needs_hessian = true;
  bool needs_samples = false;
  std::function<LinearOutcome(const LinearJob&)> run;
  nlohmann::json options = nlohmann::json::object();
  // Whether a finished block can be checkpointed in the run directory: false for a method whose layers
  // stay in a trainable form after the block pass (their state is more than the packed form a block
  // checkpoint stores), so a resumed run recomputes the block pass instead of reloading it.
  bool block_checkpoints = true;
};

// The block handed to an optional fine-tune step after its linears were replaced: cached inputs and FP
// targets [nsamples·seqlen, dim]. Returns stats for the log (train/block_trainer.hpp fits here).
struct BlockContext {
  int layer = 0;
  nn::Llama* model = nullptr;
  MatrixView<const float> inputs;
  MatrixView<const float> targets;
  int nsamples = 0, seqlen = 0;
  // With PipelineHooks::fp_stream: the FP model's own block inputs (the FP blocks applied to the FP
  // stream from the embedding on) and the FP block's outputs on them; empty otherwise.
  MatrixView<const float> fp_inputs;
  MatrixView<const float> fp_targets;
};
using BlockFinetune = std::function<nlohmann::json(BlockContext&)>;

// `accepts` for the registered formats that pass a capability filter (formats.hpp), e.g.
// accepts_formats_where([]<class F>() { return GroupGridFormat<F>; }).
template <class Filter>
std::function<bool(const std::string&)> accepts_formats_where(Filter filter) {
  const auto names = format_names(filter);
  return [names](const std::string& format) {
    for (const auto& n : names)
      if (n == format) return true;
    return false;
  };
}

// ---- plans ----------------------------------------------------------------------------------------

class QuantizationPlan {
 public:
  struct Rule {
    std::string pattern;  // ECMAScript regex, searched in the canonical tensor name
    Method method;
    std::string format;
  };

  QuantizationPlan() = default;
  // The plan that gives every linear the same method and format.
  QuantizationPlan(Method method, std::string format) { add(".*", std::move(method), std::move(format)); }

  // Appends a rule; checks that the pattern compiles, the format is registered and the method can
  // produce it.
  QuantizationPlan& add(std::string pattern, Method method, std::string format) {
    std::regex re;
    try {
      re = std::regex(pattern, std::regex::ECMAScript);
    } catch (const std::regex_error& e) {
      fail("tensor pattern '", pattern, "' is not a valid regular expression (", e.what(), ")");
    }
    LOWBIT_CHECK(is_registered_format(format), "unknown format '", format, "' in the rule for '", pattern,
                 "' (registered: ", lowbit::detail::joined(format_names()), ")");
    LOWBIT_CHECK(!method.accepts || method.accepts(format), "method '", method.name, "' cannot produce format '",
                 format, "' (it fills ", method.capability.empty() ? "other formats" : method.capability + "s",
                 method.accepts ? ": " + accepted(method) : std::string(), ")");
    rules_.push_back(Rule{std::move(pattern), std::move(method), std::move(format)});
    regexes_.push_back(std::move(re));
    return *this;
  }

  bool empty() const { return rules_.empty(); }
  bool block_checkpoints() const {
    return std::all_of(rules_.begin(), rules_.end(), [](const Rule& r) { return r.method.block_checkpoints; });
  }
  const std::vector<Rule>& rules() const { return rules_; }

  // The first rule whose pattern occurs in `tensor` (e.g. "layers.3.feed_forward.w2").
  const Rule& rule_for(const std::string& tensor) const {
    for (std::size_t i = 0; i < rules_.size(); ++i)
      if (std::regex_search(tensor, regexes_[i])) return rules_[i];
    std::string patterns;
    for (const auto& r : rules_) patterns += (patterns.empty() ? "" : ", ") + ("'" + r.pattern + "'");
    fail("no tensor rule matches '", tensor, "' (rules: ", patterns.empty() ? std::string("none") : patterns,
         "); add a catch-all rule such as '.*=gptq:uniform:4:128'");
  }

  // Everything that determines the result: the rules in order, with each method's options.
  nlohmann::json to_json() const {
    nlohmann::json rules = nlohmann::json::array();
    for (const auto& r : rules_)
      rules.push_back({{"pattern", r.pattern}, {"method", r.method.name}, {"format", r.format},
                       {"options", r.method.options}});
    return rules;
  }

 private:
  static std::string accepted(const Method& m) {
    std::string out;
    for (const auto& f : format_names())
      if (m.accepts(f)) out += (out.empty() ? "" : ", ") + f;
    return out;
  }

  std::vector<Rule> rules_;
  std::vector<std::regex> regexes_;
};

// The pattern that matches exactly one tensor name (an allocation plan's rules, calib/allocate.hpp).
inline std::string exact_name_pattern(const std::string& name) {
  std::string out = "^";
  for (char c : name) {
    if (std::string("\\^$.|?*+()[]{}").find(c) != std::string::npos) out += '\\';
    out += c;
  }
  return out + "$";
}

// Parses a rule "REGEX=METHOD:FORMAT" (the last '=' before the method splits; the format descriptor
// keeps its own colons): returns {pattern, method, format}.
struct RuleText {
  std::string pattern, method, format;
};
inline RuleText parse_rule_text(const std::string& text) {
  const auto eq = text.rfind('=');
  LOWBIT_CHECK(eq != std::string::npos && eq > 0, "tensor rule '", text,
               "': expected REGEX=METHOD:FORMAT, e.g. 'feed_forward\\.w2=gptq:uniform:4:128'");
  const std::string rhs = text.substr(eq + 1);
  const auto colon = rhs.find(':');
  LOWBIT_CHECK(colon != std::string::npos && colon > 0 && colon + 1 < rhs.size(), "tensor rule '", text,
               "': expected METHOD:FORMAT after '=', e.g. gptq:uniform:4:128");
  return {text.substr(0, eq), rhs.substr(0, colon), rhs.substr(colon + 1)};
}

}  // namespace lowbit::calib
