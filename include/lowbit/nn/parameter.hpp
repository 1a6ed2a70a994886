// A trainable tensor as the optimizers see it: a name, a value buffer and a gradient buffer of the same
// size. Layers own the memory; `parameters()` hands out non-owning views so AdamW, gradient clipping
// and checkpoints can walk any mix of dense and quantized layers uniformly. The scalar type is a
// template parameter only so that finite-difference checks can run the same model code in double.
#pragma once

#include <string>

#include "../core/tensor.hpp"

namespace lowbit::nn {

template <class T>
struct BasicParameter {
  std::string name;
  T* value = nullptr;
  T* grad = nullptr;  // accumulated with +=; zeroed by the training loop
  index_t size = 0;
};

using Parameter = BasicParameter<float>;

}  // namespace lowbit::nn
