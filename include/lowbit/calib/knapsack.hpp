// The exact multiple-choice knapsack behind mixed-precision allocation (calib/allocate.hpp): every item
// (a tensor) takes exactly one of its options (a format), each with a cost in bytes and a loss; the
// choice minimizes the total loss with the total cost never above the budget. Dynamic programming over
// the budget's slack above the cheapest choice, in units of the greatest common divisor of the costs
// above each item's cheapest: exact for any instance whose table fits `max_cells`; a larger one has its
// costs rounded up to a coarser unit (still never above the budget) and says so (`exact` false).
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <vector>

#include "../core/error.hpp"

namespace lowbit::calib {

struct KnapsackOption {
  std::uint64_t bytes = 0;
  double loss = 0;
};

struct KnapsackSolution {
  std::vector<int> choice;  // one option index per item
  std::uint64_t bytes = 0;  // total cost of the choice
  double loss = 0;          // total loss of the choice
  std::uint64_t unit = 1;   // the DP counted costs in units of this many bytes
  bool exact = true;        // false: costs were rounded up to `unit` (the budget still holds; the optimum may be missed)
};

inline KnapsackSolution solve_knapsack(const std::vector<std::vector<KnapsackOption>>& items, std::uint64_t budget,
                                       std::uint64_t max_cells = std::uint64_t{1} << 26) {
  LOWBIT_CHECK(!items.empty(), "knapsack: no items");
  std::uint64_t base = 0, top = 0;  // cost of the cheapest and of the most expensive choice
  std::vector<std::uint64_t> cheapest(items.size());
  std::size_t max_options = 0;
  for (std::size_t i = 0; i < items.size(); ++i) {
    LOWBIT_CHECK(!items[i].empty(), "knapsack: item ", i, " has no option");
    std::uint64_t lo = items[i][0].bytes, hi = 0;
    for (const auto& o : items[i]) {
      LOWBIT_CHECK(std::isfinite(o.loss), "knapsack: item ", i, " has a non-finite loss");
      lo = std::min(lo, o.bytes);
      hi = std::max(hi, o.bytes);
    }
    cheapest[i] = lo;
    base += lo;
    top += hi;
    max_options = std::max(max_options, items[i].size());
  }
  LOWBIT_CHECK(max_options <= 65535, "knapsack: an item has more than 65535 options");
  LOWBIT_CHECK(base <= budget, "knapsack: the budget of ", budget, " bytes is below the cheapest choice (", base, " bytes)");
  const std::uint64_t slack = std::min(budget, top) - base;

  KnapsackSolution s;
  std::uint64_t unit = 0;  // gcd of every cost above its item's cheapest
  for (std::size_t i = 0; i < items.size(); ++i)
    for (const auto& o : items[i]) unit = std::gcd(unit, o.bytes - cheapest[i]);
  if (unit == 0) unit = 1;  // every item has one cost
  const auto cells = [&](std::uint64_t u) { return static_cast<double>(items.size()) * static_cast<double>(slack / u + 1); };
  if (cells(unit) > static_cast<double>(max_cells)) {
    s.exact = false;
    unit = std::max<std::uint64_t>(unit, static_cast<std::uint64_t>(std::ceil(
                                             static_cast<double>(slack) * static_cast<double>(items.size()) /
                                             static_cast<double>(max_cells))));
    while (cells(unit) > static_cast<double>(max_cells)) unit += unit / 16 + 1;
  }
  s.unit = unit;
  const std::size_t cap = static_cast<std::size_t>(slack / unit);
  const auto weight = [&](std::size_t i, const KnapsackOption& o) {  // rounded up: never under the true cost
    return static_cast<std::size_t>((o.bytes - cheapest[i] + unit - 1) / unit);
  };

  // best[c]: the least loss of the items so far with extra cost ≤ c units; pick[i][c]: item i's option there.
  constexpr double kInf = std::numeric_limits<double>::infinity();
  std::vector<double> best(cap + 1, 0.0), next(cap + 1);
  std::vector<std::vector<std::uint16_t>> pick(items.size(), std::vector<std::uint16_t>(cap + 1, 0));
  for (std::size_t i = 0; i < items.size(); ++i) {
    std::fill(next.begin(), next.end(), kInf);
    for (std::size_t k = 0; k < items[i].size(); ++k) {
      const std::size_t w = weight(i, items[i][k]);
      const double loss = items[i][k].loss;
      for (std::size_t c = w; c <= cap; ++c) {
        const double v = best[c - w] + loss;
        if (v < next[c]) {
          next[c] = v;
          pick[i][c] = static_cast<std::uint16_t>(k);
        }
      }
    }
    best.swap(next);
  }
  LOWBIT_CHECK(best[cap] < kInf, "knapsack: no choice fits ", budget, " bytes once costs are rounded up to units of ",
               unit, " bytes");
  s.choice.assign(items.size(), 0);
  std::size_t c = cap;
  for (std::size_t i = items.size(); i-- > 0;) {
    const int k = pick[i][c];
    s.choice[i] = k;
    c -= weight(i, items[i][static_cast<std::size_t>(k)]);
  }
  for (std::size_t i = 0; i < items.size(); ++i) {
    s.bytes += items[i][static_cast<std::size_t>(s.choice[i])].bytes;
    s.loss += items[i][static_cast<std::size_t>(s.choice[i])].loss;
  }
  return s;
}

}  // namespace lowbit::calib
