// The one harness behind lowbit's matvec speed measurements (bench/*.cpp and `lowbit bench-formats`):
// batch-1 decoding reads every weight once, so a fair measurement streams weights from DRAM. Both the
// fp32 baseline and a quantized format rotate over enough distinct copies of their matrix (at least
// `min_bytes` and 4x the L3 in total) that no call finds its weights in cache; the baseline is Eigen's
// fp32 GEMV with rows split over threads, as the model's decode path runs it; times are wall clock and
// process CPU time per thread (robust to other jobs on a shared machine).
#pragma once

#include <Eigen/Core>
#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <ctime>
#include <fstream>
#include <functional>
#include <vector>

#include "../core/parallel.hpp"
#include "../core/resources.hpp"
#include "../core/rng.hpp"
#include "../core/tensor.hpp"

namespace lowbit::eval {

// The last-level cache size (Linux sysfs; 32 MiB when unknown).
inline std::size_t l3_bytes() {
  std::ifstream in("/sys/devices/system/cpu/cpu0/cache/index3/size");
  std::size_t kib = 0;
  return (in >> kib) ? kib * 1024 : (32u << 20);
}

// Total bytes a rotation must cover to be DRAM-resident.
inline std::size_t rotation_bytes(std::size_t min_bytes = 256u << 20) { return std::max(min_bytes, 4 * l3_bytes()); }

// Copies of a `bytes_per_copy` matrix that a rotation needs (at least 2).
inline std::size_t rotation_copies(std::size_t bytes_per_copy, std::size_t min_bytes = 256u << 20) {
  const std::size_t total = rotation_bytes(min_bytes);
  return std::max<std::size_t>(2, (total + bytes_per_copy - 1) / std::max<std::size_t>(bytes_per_copy, 1));
}

using lowbit::process_cpu_seconds;

// Per-call time: wall clock, and process CPU time divided by the thread count.
struct CallTime {
  double wall = 0, cpu = 0;
};

// Times `call(i)` (i = 0, 1, ... so a rotation can index copies): after one warm-up call, the best of
// `batches` batches, each at least `min_seconds` long.
inline CallTime time_calls(const std::function<void(std::size_t)>& call, int threads, int batches = 3,
                           double min_seconds = 0.1) {
  using Clock = std::chrono::steady_clock;
  CallTime best{1e30, 1e30};
  std::size_t i = 0;
  call(i++);
  for (int b = 0; b < batches; ++b) {
    const auto t0 = Clock::now();
    const double c0 = process_cpu_seconds();
    std::size_t n = 0;
    double elapsed = 0;
    do {
      call(i++);
      ++n;
      elapsed = std::chrono::duration<double>(Clock::now() - t0).count();
    } while (elapsed < min_seconds);
    best.wall = std::min(best.wall, elapsed / static_cast<double>(n));
    best.cpu = std::min(best.cpu, (process_cpu_seconds() - c0) / std::max(threads, 1) / static_cast<double>(n));
  }
  return best;
}

// y[rows] = W x with Eigen, rows split over threads (Eigen does not thread a GEMV).
inline void fp32_gemv(const float* W, index_t rows, index_t cols, const float* x, float* y) {
  using RowMajor = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  parallel_for(
      0, rows,
      [&](index_t r0, index_t r1) {
        Eigen::Map<const RowMajor> block(W + r0 * cols, r1 - r0, cols);
        Eigen::Map<const Eigen::VectorXf> xv(x, cols);
        Eigen::Map<Eigen::VectorXf> yv(y + r0, r1 - r0);
        yv.noalias() = block * xv;
      },
      64);
}

// A [rows, cols] matrix of N(0, sigma²) weights; one generator per row, so the values do not depend on
// the thread count.
inline std::vector<float> gaussian_matrix(index_t rows, index_t cols, std::uint64_t seed, float sigma = 0.02f) {
  std::vector<float> w(static_cast<std::size_t>(rows * cols));
  const Rng root(seed);
  parallel_for(0, rows, [&](index_t r0, index_t r1) {
    for (index_t r = r0; r < r1; ++r) {
      Rng rng = root.fork(static_cast<std::uint64_t>(r));
      for (index_t c = 0; c < cols; ++c) w[static_cast<std::size_t>(r * cols + c)] = sigma * static_cast<float>(rng.normal());
    }
  });
  return w;
}

}  // namespace lowbit::eval
