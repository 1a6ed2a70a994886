// Threading on OpenMP. `parallel_for` splits [begin, end) into contiguous chunks, one per thread, so
// each thread streams its own slice of a weight matrix; results never depend on the thread count
// because every index is processed by exactly one call. Without OpenMP it runs serially.
#pragma once

#include <algorithm>
#include <cstdint>

#if defined(_OPENMP)
#include <omp.h>
#endif

#include "tensor.hpp"

namespace lowbit {

inline int max_threads() {
#if defined(_OPENMP)
  return omp_get_max_threads();
#else
  return 1;
#endif
}

inline void set_num_threads(int n) {
#if defined(_OPENMP)
  if (n > 0) omp_set_num_threads(n);
#else
  (void)n;
#endif
}

// Calls fn(chunk_begin, chunk_end) on disjoint chunks covering [begin, end). `min_chunk` keeps tiny
// ranges on one thread, where fork/join would cost more than the work.
template <class Fn>
void parallel_for(index_t begin, index_t end, Fn&& fn, index_t min_chunk = 1) {
  const index_t n = end - begin;
  if (n <= 0) return;
  int threads = max_threads();
  threads = static_cast<int>(std::max<index_t>(1, std::min<index_t>(threads, n / std::max<index_t>(1, min_chunk))));
  if (threads <= 1) {
    fn(begin, end);
    return;
  }
#if defined(_OPENMP)
#pragma omp parallel num_threads(threads)
  {
    const int t = omp_get_thread_num();
    const int nt = omp_get_num_threads();
    const index_t lo = begin + n * t / nt;
    const index_t hi = begin + n * (t + 1) / nt;
    if (lo < hi) fn(lo, hi);
  }
#else
  fn(begin, end);
#endif
}

// Calls fn(i) for every i in [begin, end), handing indices to threads one at a time as they finish
// (OpenMP dynamic schedule): for units of very different cost. Each index is still processed exactly
// once, so results do not depend on the thread count. `parallel = false` runs the loop serially (for
// work too small to be worth a fork/join).
template <class Fn>
void parallel_for_dynamic(index_t begin, index_t end, Fn&& fn, bool parallel = true) {
  if (end - begin <= 0) return;
#if defined(_OPENMP)
  if (parallel && max_threads() > 1 && end - begin > 1) {
#pragma omp parallel for schedule(dynamic, 1)
    for (index_t i = begin; i < end; ++i) fn(i);
    return;
  }
#else
  (void)parallel;
#endif
  for (index_t i = begin; i < end; ++i) fn(i);
}

}  // namespace lowbit
