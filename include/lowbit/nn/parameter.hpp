// A trainable tensor as the optimizers see it: a name, a value buffer and a gradient buffer of the same
// size. Layers own the memory; `parameters()` hands out non-owning views so AdamW, gradient clipping
// and checkpoints can walk any mix of dense and quantized layers uniformly.
#pragma once

#include <string>

#include "../core/tensor.hpp"

namespace lowbit::nn {

struct Parameter {
  std::string name;
  float* value = nullptr;
  float* grad = nullptr;  // accumulated with +=; zeroed by the training loop
  index_t size = 0;
};

}  // namespace lowbit::nn
