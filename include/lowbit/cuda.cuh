// Umbrella for lowbit's CUDA kernels (include from .cu files compiled by nvcc). Host-only code uses
// lowbit.hpp; each kernel family below also works on its own.
#pragma once

#include "kernels/cuda/uniform_matvec.cuh"
