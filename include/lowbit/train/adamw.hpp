// AdamW (Loshchilov & Hutter) over any mix of nn::Parameter views: dense weights, codebooks, scales,
// norm gains. Weight decay is decoupled (p ← p·(1 − lr·wd) before the Adam step), bias correction is on
// by default, and AMSGrad (the running maximum of v, as AQLM's fine-tuning enables) is an option. The
// state (m, v, v_max, step) is written to and read from a checkpoint stream so training resumes exactly.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <istream>
#include <ostream>
#include <string>
#include <vector>

#include "../core/error.hpp"
#include "../core/parallel.hpp"
#include "../nn/parameter.hpp"

namespace lowbit::train {

struct AdamWOptions {
  float lr = 1e-3f;
  float beta1 = 0.9f;
  float beta2 = 0.999f;
  float eps = 1e-8f;
  float weight_decay = 0.0f;  // decoupled
  bool amsgrad = false;
  bool bias_correction = true;
  // Which parameters weight decay applies to (by name); default all. Typical: only 2-D weights.
  std::function<bool(const std::string&)> decays;
};

// True for names of matrices that conventionally get weight decay (linears and embeddings), false for
// norm gains, scales and biases.
inline bool is_decayed_weight(const std::string& name) {
  auto ends_with = [&](const std::string& s) {
    return name.size() >= s.size() && name.compare(name.size() - s.size(), s.size(), s) == 0;
  };
  return ends_with(".weight") && name.find("norm") == std::string::npos;
}

class AdamW {
 public:
  AdamW(std::vector<nn::Parameter> params, AdamWOptions options)
      : params_(std::move(params)), options_(std::move(options)) {
    state_.resize(params_.size());
    for (std::size_t i = 0; i < params_.size(); ++i) {
      const auto n = static_cast<std::size_t>(params_[i].size);
      state_[i].m.assign(n, 0.0f);
      state_[i].v.assign(n, 0.0f);
      if (options_.amsgrad) state_[i].v_max.assign(n, 0.0f);
    }
  }

  const AdamWOptions& options() const { return options_; }
  const std::vector<nn::Parameter>& parameters() const { return params_; }
  std::int64_t step_count() const { return step_; }

  void zero_grad() {
    for (auto& p : params_) std::fill(p.grad, p.grad + p.size, 0.0f);
  }

  // One update with learning rate `lr` (from a schedule); gradients are read, not cleared.
  void step(float lr) {
    ++step_;
    const float b1 = options_.beta1, b2 = options_.beta2;
    const double bc1 = options_.bias_correction ? 1.0 - std::pow(static_cast<double>(b1), static_cast<double>(step_)) : 1.0;
    const double bc2 = options_.bias_correction ? 1.0 - std::pow(static_cast<double>(b2), static_cast<double>(step_)) : 1.0;
    const float step_size = static_cast<float>(lr / bc1);
    const float inv_sqrt_bc2 = static_cast<float>(1.0 / std::sqrt(bc2));
    const float eps = options_.eps;
    const bool amsgrad = options_.amsgrad;
    for (std::size_t i = 0; i < params_.size(); ++i) {
      auto& p = params_[i];
      auto& s = state_[i];
      const bool decay = options_.weight_decay != 0.0f && (!options_.decays || options_.decays(p.name));
      const float keep = decay ? 1.0f - lr * options_.weight_decay : 1.0f;
      float* value = p.value;
      const float* grad = p.grad;
      float* m = s.m.data();
      float* v = s.v.data();
      float* v_max = amsgrad ? s.v_max.data() : nullptr;
      parallel_for(
          0, p.size,
          [&](index_t lo, index_t hi) {
            for (index_t j = lo; j < hi; ++j) {
              const float g = grad[j];
              m[j] = b1 * m[j] + (1.0f - b1) * g;
              v[j] = b2 * v[j] + (1.0f - b2) * g * g;
              float second = v[j];
              if (v_max) {
                v_max[j] = std::max(v_max[j], v[j]);
                second = v_max[j];
              }
              const float denom = std::sqrt(second) * inv_sqrt_bc2 + eps;
              value[j] = value[j] * keep - step_size * m[j] / denom;
            }
          },
          16384);
    }
  }
  void step() { step(options_.lr); }

  // Binary state: magic, step, parameter count, then per parameter name, size, m, v (and v_max).
  void write(std::ostream& out) const {
    write_pod(out, kMagic);
    write_pod(out, step_);
    write_pod(out, static_cast<std::uint8_t>(options_.amsgrad));
    write_pod(out, static_cast<std::uint64_t>(params_.size()));
    for (std::size_t i = 0; i < params_.size(); ++i) {
      write_string(out, params_[i].name);
      write_pod(out, static_cast<std::int64_t>(params_[i].size));
      write_floats(out, state_[i].m);
      write_floats(out, state_[i].v);
      if (options_.amsgrad) write_floats(out, state_[i].v_max);
    }
  }

  // Restores the state written by write(); `source` names the file in error messages.
  void read(std::istream& in, const std::string& source) {
    LOWBIT_CHECK(read_pod<std::uint32_t>(in, source) == kMagic, source, ": optimizer state has a bad magic");
    const auto step = read_pod<std::int64_t>(in, source);
    const bool amsgrad = read_pod<std::uint8_t>(in, source) != 0;
    LOWBIT_CHECK(amsgrad == options_.amsgrad, source, ": optimizer state has amsgrad=", amsgrad,
                 ", expected ", options_.amsgrad);
    const auto count = read_pod<std::uint64_t>(in, source);
    LOWBIT_CHECK(count == params_.size(), source, ": optimizer state holds ", count, " parameters, expected ",
                 params_.size());
    for (std::size_t i = 0; i < params_.size(); ++i) {
      const std::string name = read_string(in, source);
      LOWBIT_CHECK(name == params_[i].name, source, ": optimizer state parameter ", i, " is '", name,
                   "', expected '", params_[i].name, "'");
      const auto size = read_pod<std::int64_t>(in, source);
      LOWBIT_CHECK(size == params_[i].size, source, ": optimizer state of '", name, "' has ", size,
                   " values, expected ", params_[i].size);
      read_floats(in, state_[i].m, source);
      read_floats(in, state_[i].v, source);
      if (options_.amsgrad) read_floats(in, state_[i].v_max, source);
    }
    step_ = step;
  }

  struct State {
    std::vector<float> m, v, v_max;
  };
  const State& state(std::size_t i) const { return state_[i]; }

 private:
  static constexpr std::uint32_t kMagic = 0x4d414457u;  // "WDAM"

  template <class T>
  static void write_pod(std::ostream& out, const T& x) {
    out.write(reinterpret_cast<const char*>(&x), sizeof(T));
  }
  static void write_string(std::ostream& out, const std::string& s) {
    write_pod(out, static_cast<std::uint32_t>(s.size()));
    out.write(s.data(), static_cast<std::streamsize>(s.size()));
  }
  static void write_floats(std::ostream& out, const std::vector<float>& v) {
    out.write(reinterpret_cast<const char*>(v.data()), static_cast<std::streamsize>(v.size() * sizeof(float)));
  }
  template <class T>
  static T read_pod(std::istream& in, const std::string& source) {
    T x{};
    in.read(reinterpret_cast<char*>(&x), sizeof(T));
    LOWBIT_CHECK(in.good(), source, ": optimizer state is truncated");
    return x;
  }
  static std::string read_string(std::istream& in, const std::string& source) {
    const auto n = read_pod<std::uint32_t>(in, source);
    LOWBIT_CHECK(n < (1u << 16), source, ": optimizer state has a parameter name of ", n, " bytes");
    std::string s(n, '\0');
    in.read(s.data(), n);
    LOWBIT_CHECK(in.good(), source, ": optimizer state is truncated");
    return s;
  }
  static void read_floats(std::istream& in, std::vector<float>& v, const std::string& source) {
    in.read(reinterpret_cast<char*>(v.data()), static_cast<std::streamsize>(v.size() * sizeof(float)));
    LOWBIT_CHECK(in.good(), source, ": optimizer state is truncated");
  }

  std::vector<nn::Parameter> params_;
  AdamWOptions options_;
  std::vector<State> state_;
  std::int64_t step_ = 0;
};

}  // namespace lowbit::train
