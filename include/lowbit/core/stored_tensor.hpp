// What a packed weight stores, described as named tensors: each format's packed storage lists its
// tensors (suffix, element type, shape, bytes) next to its own definition, and file writers and readers
// (io/quantized_model.hpp) work from that list alone, so a new format needs no code in io/. The element
// types are the few that packed storage uses; io/ maps them to its container's dtypes.
#pragma once

#include <cstddef>
#include <string>
#include <type_traits>
#include <vector>

#include "tensor.hpp"

namespace lowbit {

enum class StoredType { U8, U16, U32, F16, F32 };

inline std::size_t stored_type_size(StoredType t) {
  switch (t) {
    case StoredType::U8: return 1;
    case StoredType::U16:
    case StoredType::F16: return 2;
    case StoredType::U32:
    case StoredType::F32: return 4;
  }
  return 0;
}

// One named tensor of a packed matrix. Ptr is `const void*` for writing (StoredTensor) and `void*` for
// filling storage that a reader allocated (StoredTensorSlot).
template <class Ptr>
struct BasicStoredTensor {
  std::string suffix;  // "codes", "scales", ...: the file names it "<linear>.<suffix>"
  StoredType type;
  std::vector<index_t> shape;
  Ptr data;
  std::size_t bytes;
};
using StoredTensor = BasicStoredTensor<const void*>;
using StoredTensorSlot = BasicStoredTensor<void*>;

// The list a packed storage returns for itself: read-only views when `Self` is const, slots otherwise.
template <class Self>
using StoredTensorsOf = std::vector<BasicStoredTensor<std::conditional_t<std::is_const_v<Self>, const void*, void*>>>;

// A stored tensor over a std::vector member of `storage` (const storage gives a read-only view).
template <class Vector>
auto stored_tensor(std::string suffix, StoredType type, std::vector<index_t> shape, Vector& values) {
  using Ptr = std::conditional_t<std::is_const_v<Vector>, const void*, void*>;
  return BasicStoredTensor<Ptr>{std::move(suffix), type, std::move(shape), static_cast<Ptr>(values.data()),
                                values.size() * sizeof(typename std::remove_const_t<Vector>::value_type)};
}

}  // namespace lowbit
