// Lloyd's k-means for codebook initialization (AQLM's residual k-means, ALGORITHMS.md §1.3 step 2).
// Distances come from a GEMM (‖c‖² − 2⟨x, c⟩) over chunks of points, so 2^16 centroids never need an
// n × K distance matrix in memory. Training can be subsampled (at most `max_points_per_centroid · K`
// points, drawn with the caller's seeded Rng); the final assignment always covers every point. Ties go
// to the lowest centroid index and an empty cluster takes the point farthest from its centroid, so the
// result is deterministic for a seed and independent of the thread count.
#pragma once

#include <Eigen/Core>
#include <algorithm>
#include <cstdint>
#include <limits>
#include <numeric>
#include <vector>

#include "../core/error.hpp"
#include "../core/parallel.hpp"
#include "../core/rng.hpp"
#include "../core/tensor.hpp"

namespace lowbit::calib {

struct KMeansOptions {
  int iterations = 100;                  // Lloyd iterations (AQLM default)
  index_t max_points_per_centroid = 256;  // training subsample cap; <= 0 disables subsampling
};

struct KMeansResult {
  std::vector<float> centroids;           // [K, dim]
  std::vector<std::uint32_t> assignment;  // [n], nearest centroid of every point
  double inertia = 0.0;                   // Σ ‖x − c(x)‖² over all points
  int iterations_run = 0;
};

// Nearest centroid of every point (lowest index on ties) and, if `distance2` is given, the squared
// distance to it. points [n, dim], centroids [K, dim], both row-major and contiguous.
inline void kmeans_assign(const float* points, index_t n, int dim, const float* centroids, index_t K,
                          std::uint32_t* assignment, float* distance2 = nullptr) {
  using RowMajor = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  Eigen::Map<const RowMajor> C(centroids, K, dim);
  // Squared norms in a plain loop: Eigen's vectorized reduction over a Map peels up to the first aligned
  // address, so its rounding (and near-tie assignments) would depend on where the centroids lie in memory.
  Eigen::VectorXf c_norm(K);
  for (index_t k = 0; k < K; ++k) {
    float acc = 0.0f;
    for (int d = 0; d < dim; ++d) acc += centroids[k * dim + d] * centroids[k * dim + d];
    c_norm[k] = acc;
  }
  // Keep each thread's score block near 4 MiB.
  const index_t chunk = std::max<index_t>(8, std::min<index_t>(1024, (index_t{1} << 20) / std::max<index_t>(1, K)));
  const index_t chunks = (n + chunk - 1) / chunk;
  parallel_for(0, chunks, [&](index_t b0, index_t b1) {
    RowMajor scores;
    for (index_t b = b0; b < b1; ++b) {
      const index_t p0 = b * chunk, p1 = std::min(n, p0 + chunk);
      Eigen::Map<const RowMajor> X(points + p0 * dim, p1 - p0, dim);
      scores.noalias() = X * C.transpose();  // [chunk, K]
      for (index_t p = p0; p < p1; ++p) {
        const float* row = scores.data() + (p - p0) * K;
        float best = std::numeric_limits<float>::infinity();
        index_t best_k = 0;
        for (index_t k = 0; k < K; ++k) {
          const float d = c_norm[k] - 2.0f * row[k];
          if (d < best) {
            best = d;
            best_k = k;
          }
        }
        assignment[p] = static_cast<std::uint32_t>(best_k);
        if (distance2) {
          float exact = 0.0f;
          const float* x = points + p * dim;
          const float* c = centroids + best_k * dim;
          for (int d = 0; d < dim; ++d) exact += (x[d] - c[d]) * (x[d] - c[d]);
          distance2[p] = exact;
        }
      }
    }
  });
}

// Lloyd's iterations from the given centroids (updated in place); stops early when no assignment
// changes. Returns the number of iterations run. `assignment` [n] receives the final assignment.
inline int kmeans_lloyd(const float* points, index_t n, int dim, float* centroids, index_t K, int iterations,
                        std::uint32_t* assignment) {
  std::vector<float> dist2(static_cast<std::size_t>(n));
  std::vector<std::uint32_t> previous(static_cast<std::size_t>(n), std::numeric_limits<std::uint32_t>::max());
  std::vector<double> sums(static_cast<std::size_t>(K * dim));
  std::vector<index_t> counts(static_cast<std::size_t>(K));
  int it = 0;
  for (; it < iterations; ++it) {
    kmeans_assign(points, n, dim, centroids, K, assignment, dist2.data());
    if (std::equal(assignment, assignment + n, previous.begin())) break;
    std::copy(assignment, assignment + n, previous.begin());
    std::fill(sums.begin(), sums.end(), 0.0);
    std::fill(counts.begin(), counts.end(), 0);
    for (index_t p = 0; p < n; ++p) {
      const index_t k = assignment[p];
      ++counts[static_cast<std::size_t>(k)];
      for (int d = 0; d < dim; ++d) sums[static_cast<std::size_t>(k * dim + d)] += points[p * dim + d];
    }
    // Empty clusters take the points farthest from their centroids, farthest first (ties: lowest index).
    std::vector<index_t> by_distance;
    for (index_t k = 0; k < K; ++k) {
      if (counts[static_cast<std::size_t>(k)] > 0) {
        for (int d = 0; d < dim; ++d)
          centroids[k * dim + d] =
              static_cast<float>(sums[static_cast<std::size_t>(k * dim + d)] / counts[static_cast<std::size_t>(k)]);
        continue;
      }
      if (by_distance.empty()) {
        by_distance.resize(static_cast<std::size_t>(n));
        std::iota(by_distance.begin(), by_distance.end(), index_t{0});
        std::stable_sort(by_distance.begin(), by_distance.end(),
                         [&](index_t a, index_t b) { return dist2[static_cast<std::size_t>(a)] > dist2[static_cast<std::size_t>(b)]; });
        by_distance.erase(by_distance.begin() + std::min<index_t>(n, K), by_distance.end());
        std::reverse(by_distance.begin(), by_distance.end());  // pop_back yields the farthest
      }
      if (by_distance.empty()) continue;  // more empty clusters than points: keep the old centroid
      const index_t p = by_distance.back();
      by_distance.pop_back();
      for (int d = 0; d < dim; ++d) centroids[k * dim + d] = points[p * dim + d];
    }
  }
  if (it == iterations) kmeans_assign(points, n, dim, centroids, K, assignment);
  return it;
}

// k-means with K centroids: initial centroids are K distinct training points drawn with `rng` (when
// there are fewer points than centroids, every point plus repeats), Lloyd's iterations on the training
// subsample, then the assignment of all points.
inline KMeansResult kmeans(const float* points, index_t n, int dim, index_t K, const KMeansOptions& options, Rng& rng) {
  LOWBIT_CHECK(n > 0 && dim > 0 && K > 0, "kmeans: need points and centroids, got n=", n, ", dim=", dim, ", K=", K);
  // Training subset: a seeded partial Fisher-Yates shuffle of the point indices.
  std::vector<index_t> order(static_cast<std::size_t>(n));
  std::iota(order.begin(), order.end(), index_t{0});
  index_t train_n = n;
  if (options.max_points_per_centroid > 0 && n > options.max_points_per_centroid * K)
    train_n = options.max_points_per_centroid * K;
  const index_t shuffled = std::min(n, std::max(train_n, K));
  for (index_t i = 0; i < shuffled; ++i) {
    const index_t j = i + static_cast<index_t>(rng.below(static_cast<std::uint64_t>(n - i)));
    std::swap(order[static_cast<std::size_t>(i)], order[static_cast<std::size_t>(j)]);
  }
  std::vector<float> train;
  const float* train_points = points;
  if (train_n < n) {
    std::vector<index_t> picked(order.begin(), order.begin() + train_n);
    std::sort(picked.begin(), picked.end());  // keep memory order for locality
    train.resize(static_cast<std::size_t>(train_n * dim));
    for (index_t i = 0; i < train_n; ++i)
      std::copy(points + picked[static_cast<std::size_t>(i)] * dim, points + (picked[static_cast<std::size_t>(i)] + 1) * dim,
                train.begin() + i * dim);
    train_points = train.data();
  }
  KMeansResult result;
  result.centroids.resize(static_cast<std::size_t>(K * dim));
  for (index_t k = 0; k < K; ++k) {
    const index_t p = k < n ? order[static_cast<std::size_t>(k)] : static_cast<index_t>(rng.below(static_cast<std::uint64_t>(n)));
    std::copy(points + p * dim, points + (p + 1) * dim, result.centroids.begin() + k * dim);
  }
  std::vector<std::uint32_t> train_assignment(static_cast<std::size_t>(train_n));
  result.iterations_run =
      kmeans_lloyd(train_points, train_n, dim, result.centroids.data(), K, options.iterations, train_assignment.data());
  result.assignment.resize(static_cast<std::size_t>(n));
  std::vector<float> dist2(static_cast<std::size_t>(n));
  kmeans_assign(points, n, dim, result.centroids.data(), K, result.assignment.data(), dist2.data());
  result.inertia = std::accumulate(dist2.begin(), dist2.end(), 0.0);
  return result;
}

}  // namespace lowbit::calib
