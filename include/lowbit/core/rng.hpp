// An explicit, seedable random generator. Every random choice in lowbit takes one of these by
// reference, so the same seed gives the same output on every machine and the state can be saved in a
// checkpoint (four 64-bit words) and restored bit-identically. Algorithm: xoshiro256** seeded through
// SplitMix64 (Blackman & Vigna); normals by Box-Muller with no cached second value, so the state alone
// determines the stream.
#pragma once

#include <array>
#include <cmath>
#include <cstdint>

#include "../config.hpp"

namespace lowbit {

class Rng {
 public:
  using State = std::array<std::uint64_t, 4>;

  explicit Rng(std::uint64_t seed = 0) { reseed(seed); }

  void reseed(std::uint64_t seed) {
    std::uint64_t x = seed;
    for (auto& s : state_) s = splitmix64(x);
  }

  // A child generator for sub-task `stream` (e.g. one per thread or per matrix row), independent of how
  // many numbers the parent has drawn.
  Rng fork(std::uint64_t stream) const {
    std::uint64_t x = state_[0] ^ (0x9e3779b97f4a7c15ULL * (stream + 1));
    Rng child(splitmix64(x) ^ state_[3]);
    return child;
  }

  std::uint64_t next_u64() {
    const std::uint64_t result = rotl(state_[1] * 5, 7) * 9;
    const std::uint64_t t = state_[1] << 17;
    state_[2] ^= state_[0];
    state_[3] ^= state_[1];
    state_[1] ^= state_[2];
    state_[0] ^= state_[3];
    state_[2] ^= t;
    state_[3] = rotl(state_[3], 45);
    return result;
  }
  std::uint32_t next_u32() { return static_cast<std::uint32_t>(next_u64() >> 32); }

  // Uniform in [0, 1) with 53 random bits (double) or 24 (float).
  double uniform() { return static_cast<double>(next_u64() >> 11) * 0x1.0p-53; }
  float uniform_float() { return static_cast<float>(next_u64() >> 40) * 0x1.0p-24f; }

  // Uniform integer in [0, n) without modulo bias (Lemire's method).
  std::uint64_t below(std::uint64_t n) {
    if (n == 0) return 0;
    while (true) {
      const unsigned __int128 m = static_cast<unsigned __int128>(next_u64()) * n;
      const std::uint64_t low = static_cast<std::uint64_t>(m);
      if (low >= n || low >= (0 - n) % n) return static_cast<std::uint64_t>(m >> 64);
    }
  }

  double normal() {
    double u1 = uniform();
    const double u2 = uniform();
    if (u1 < 1e-300) u1 = 1e-300;
    return std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
  }

  const State& state() const { return state_; }
  void set_state(const State& s) { state_ = s; }

 private:
  static std::uint64_t rotl(std::uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
  static std::uint64_t splitmix64(std::uint64_t& x) {
    std::uint64_t z = (x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  }
  State state_{};
};

}  // namespace lowbit
