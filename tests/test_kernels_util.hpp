// Inputs shared by the matvec kernel tests: Gaussian or heavy-tailed vectors, and the odd shapes (rows
// and columns that are multiples of nothing, short last groups, single elements) every path must take.
#pragma once

#include <cstddef>
#include <vector>

#include <lowbit/core/rng.hpp>
#include <lowbit/core/tensor.hpp>

namespace lowbit::test {

// n values of N(0,1), or of its cube (heavy tails: a few large outliers per vector) when heavy.
inline std::vector<float> random_vector(index_t n, Rng& rng, bool heavy) {
  std::vector<float> v(static_cast<std::size_t>(n));
  for (auto& x : v) {
    const double z = rng.normal();
    x = static_cast<float>(heavy ? z * z * z : z);
  }
  return v;
}

// {rows, cols} pairs for the kernel-vs-reference checks.
inline constexpr index_t kOddShapes[][2] = {{1, 1},   {3, 7},     {37, 1000}, {29, 333},
                                            {5, 129}, {61, 1536}, {17, 4097}};

}  // namespace lowbit::test
