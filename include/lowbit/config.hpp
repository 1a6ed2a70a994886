// Portability macros shared by host and CUDA code. Every function that must run on both sides is
// marked LOWBIT_HD; without nvcc the macros collapse to plain `inline`, so the same header compiles
// with any C++20 host compiler and the host test suite exercises exactly the device arithmetic.
#pragma once

#if defined(__CUDACC__) || defined(__HIPCC__)
#define LOWBIT_HD __host__ __device__ inline
#define LOWBIT_DEVICE __device__ inline
#define LOWBIT_GLOBAL __global__
#else
#define LOWBIT_HD inline
#define LOWBIT_DEVICE inline
#define LOWBIT_GLOBAL
#endif

#if defined(__CUDACC__)
#define LOWBIT_UNROLL _Pragma("unroll")
#elif defined(__clang__)
#define LOWBIT_UNROLL _Pragma("clang loop unroll(enable)")
#elif defined(__GNUC__)
#define LOWBIT_UNROLL _Pragma("GCC unroll 8")
#else
#define LOWBIT_UNROLL
#endif

#if !defined(__CUDACC__) && __cplusplus < 202002L && !defined(_MSVC_LANG)
#error "lowbit requires C++20 (compile with -std=c++20)"
#endif

#define LOWBIT_VERSION_MAJOR 0
#define LOWBIT_VERSION_MINOR 1
#define LOWBIT_VERSION_PATCH 0
#define LOWBIT_VERSION_STRING "0.1.0"

namespace lowbit {
// A dependent false for `static_assert` in primary templates that only specializations may satisfy.
template <class...>
inline constexpr bool dependent_false = false;
}  // namespace lowbit
