// Umbrella header for host code: everything lowbit offers on the CPU. CUDA kernels: lowbit/cuda.cuh.
#pragma once

#include "config.hpp"
#include "core/bitpack.hpp"
#include "core/error.hpp"
#include "core/half.hpp"
#include "core/parallel.hpp"
#include "core/progress.hpp"
#include "core/rng.hpp"
#include "core/tensor.hpp"
#include "format/concepts.hpp"
#include "nn/config.hpp"
#include "nn/linear.hpp"
#include "nn/parameter.hpp"
