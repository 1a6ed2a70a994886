// Additive quantization (AQLM): a row's group of G weights is s_o · Σ_m C_m[code_m], with M codebooks
// of 2^B fp16 vectors shared by the whole matrix and one fp16 scale per row. This header holds the
// policy `Additive<M, B, G>`, the runtime shape and the unpacked fp32 form that calibration works on
// (AdditiveShape, AdditiveCodes), and the packed storage; the LOWBIT_HD per-group arithmetic is
// format/additive_shared.hpp, the façade Quantizer<Additive<...>> is quantizer/additive.hpp.
// Byte layout (docs/aqlm.md): codes [rows, ceil(cols/G), M] as a B-bit stream per row starting on a
// 32-bit word (core/bitpack.hpp), codebooks [M, 2^B, G] fp16, scales [rows] fp16.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "../config.hpp"
#include "../core/bitpack.hpp"
#include "../core/error.hpp"
#include "../core/half.hpp"
#include "../core/stored_tensor.hpp"
#include "../core/tensor.hpp"

namespace lowbit {

// Runtime description of an additive layout: M codebooks of 2^B vectors of G weights each.
struct AdditiveShape {
  index_t rows = 0;
  index_t cols = 0;
  int num_codebooks = 0;  // M
  int code_bits = 0;      // B
  int group_size = 0;     // G

  LOWBIT_HD index_t groups() const { return (cols + group_size - 1) / group_size; }
  LOWBIT_HD index_t padded_cols() const { return groups() * group_size; }
  LOWBIT_HD index_t codebook_size() const { return index_t{1} << code_bits; }
  LOWBIT_HD index_t codes_per_row() const { return groups() * num_codebooks; }

  void validate(const std::string& what) const {
    LOWBIT_CHECK(rows > 0 && cols > 0, what, ": additive matrix must be non-empty, found [", rows, ", ",
                 cols, "]");
    LOWBIT_CHECK(num_codebooks >= 1 && num_codebooks <= 8, what, ": number of codebooks must be 1..8, found ",
                 num_codebooks);
    LOWBIT_CHECK(code_bits >= 1 && code_bits <= 16, what, ": code bits must be 1..16, found ", code_bits);
    LOWBIT_CHECK(group_size == 2 || group_size == 4 || group_size == 8 || group_size == 16 || group_size == 32,
                 what, ": group size must be 2, 4, 8, 16 or 32, found ", group_size);
  }
  // The format descriptor of this layout, "additive:M:B:G" (the one place the family's descriptor is
  // spelled; Additive<M, B, G>::name() is this for its shape).
  std::string format_name() const {
    return "additive:" + std::to_string(num_codebooks) + ":" + std::to_string(code_bits) + ":" +
           std::to_string(group_size);
  }
  bool operator==(const AdditiveShape&) const = default;
};

struct AdditiveCodes {
  AdditiveShape shape;
  std::vector<std::uint32_t> codes;  // [rows, groups, M]
  std::vector<float> codebooks;      // [M, 2^B, G]
  std::vector<float> scales;         // [rows]

  AdditiveCodes() = default;
  explicit AdditiveCodes(const AdditiveShape& s)
      : shape(s),
        codes(static_cast<std::size_t>(s.rows * s.codes_per_row()), 0u),
        codebooks(static_cast<std::size_t>(s.num_codebooks * s.codebook_size() * s.group_size), 0.0f),
        scales(static_cast<std::size_t>(s.rows), 1.0f) {}

  std::uint32_t& code(index_t row, index_t group, int m) {
    return codes[static_cast<std::size_t>((row * shape.groups() + group) * shape.num_codebooks + m)];
  }
  std::uint32_t code(index_t row, index_t group, int m) const {
    return codes[static_cast<std::size_t>((row * shape.groups() + group) * shape.num_codebooks + m)];
  }
  float* codeword(int m, index_t k) {
    return codebooks.data() + (m * shape.codebook_size() + k) * shape.group_size;
  }
  const float* codeword(int m, index_t k) const {
    return codebooks.data() + (m * shape.codebook_size() + k) * shape.group_size;
  }
};

template <int M, int B, int G>
struct Additive {
  static_assert(M >= 1 && M <= 8, "Additive<M, B, G>: the number of codebooks M must be 1..8");
  static_assert(B >= 1 && B <= 16, "Additive<M, B, G>: the code width B must be 1..16 bits");
  static_assert(G == 2 || G == 4 || G == 8 || G == 16 || G == 32,
                "Additive<M, B, G>: the group size G must be 2, 4, 8, 16 or 32");
  static constexpr int num_codebooks = M;
  static constexpr int code_bits = B;
  static constexpr int group_size = G;
  static constexpr index_t codebook_size = index_t{1} << B;

  // Descriptor: "additive:2:8:8".
  static std::string name() { return shape(0, 0).format_name(); }
  static AdditiveShape shape(index_t rows, index_t cols) { return AdditiveShape{rows, cols, M, B, G}; }
};

// Packed storage, exactly as written to a file, plus a cache slot for what kernels derive from it (not
// counted in bytes()). Storage filled in place after construction (a file reader) must be complete
// before the first kernel call.
class AdditivePacked {
 public:
  AdditivePacked() = default;
  AdditivePacked(const AdditivePacked& o)
      : shape_(o.shape_), words_per_row_(o.words_per_row_), codes_(o.codes_), codebooks_(o.codebooks_),
        scales_(o.scales_) {}
  AdditivePacked(AdditivePacked&&) noexcept = default;
  AdditivePacked& operator=(const AdditivePacked& o) {
    if (this != &o) *this = AdditivePacked(o);
    return *this;
  }
  AdditivePacked& operator=(AdditivePacked&&) noexcept = default;

  // Zero storage for a shape (to be filled by a reader).
  explicit AdditivePacked(const AdditiveShape& shape) : shape_(shape) {
    shape_.validate("AdditivePacked");
    words_per_row_ = packed_words(shape_.codes_per_row(), shape_.code_bits);
    codes_.assign(static_cast<std::size_t>(shape_.rows * words_per_row_), 0u);
    codebooks_.assign(static_cast<std::size_t>(shape_.num_codebooks * shape_.codebook_size() * shape_.group_size), half_t{});
    scales_.assign(static_cast<std::size_t>(shape_.rows), half_t{});
  }

  // Packs unpacked codes; codebooks and scales are rounded to fp16 (the fp32 copies hold the rounded
  // values, so every kernel computes exactly the stored matrix).
  explicit AdditivePacked(const AdditiveCodes& a) : shape_(a.shape) {
    shape_.validate("AdditivePacked");
    const index_t n = shape_.codes_per_row(), K = shape_.codebook_size();
    LOWBIT_CHECK(static_cast<index_t>(a.codes.size()) == shape_.rows * n, "AdditivePacked: expected ",
                 shape_.rows * n, " codes, found ", a.codes.size());
    words_per_row_ = packed_words(n, shape_.code_bits);
    codes_.assign(static_cast<std::size_t>(shape_.rows * words_per_row_), 0u);
    for (index_t o = 0; o < shape_.rows; ++o)
      for (index_t i = 0; i < n; ++i) {
        const std::uint32_t c = a.codes[static_cast<std::size_t>(o * n + i)];
        LOWBIT_CHECK(c < static_cast<std::uint32_t>(K), "AdditivePacked: code ", c, " at row ", o, " position ", i,
                     " does not fit in ", shape_.code_bits, " bits");
        pack_code(codes_.data() + o * words_per_row_, i, shape_.code_bits, c);
      }
    codebooks_.resize(a.codebooks.size());
    for (std::size_t i = 0; i < a.codebooks.size(); ++i) codebooks_[i] = to_half(a.codebooks[i]);
    scales_.resize(a.scales.size());
    for (std::size_t i = 0; i < a.scales.size(); ++i) scales_[i] = to_half(a.scales[i]);
  }

  // Adopts raw storage (as read from a file); sizes are checked against the shape.
  AdditivePacked(const AdditiveShape& shape, std::vector<std::uint32_t> codes, std::vector<half_t> codebooks,
                 std::vector<half_t> scales)
      : shape_(shape), codes_(std::move(codes)), codebooks_(std::move(codebooks)), scales_(std::move(scales)) {
    shape_.validate("AdditivePacked");
    words_per_row_ = packed_words(shape_.codes_per_row(), shape_.code_bits);
    LOWBIT_CHECK(static_cast<index_t>(codes_.size()) == shape_.rows * words_per_row_, "AdditivePacked: expected ",
                 shape_.rows * words_per_row_, " code words, found ", codes_.size());
    LOWBIT_CHECK(static_cast<index_t>(codebooks_.size()) == shape_.num_codebooks * shape_.codebook_size() * shape_.group_size,
                 "AdditivePacked: expected ", shape_.num_codebooks * shape_.codebook_size() * shape_.group_size,
                 " codebook values, found ", codebooks_.size());
    LOWBIT_CHECK(static_cast<index_t>(scales_.size()) == shape_.rows, "AdditivePacked: expected ", shape_.rows,
                 " scales, found ", scales_.size());
  }

  index_t rows() const { return shape_.rows; }
  index_t cols() const { return shape_.cols; }
  const AdditiveShape& shape() const { return shape_; }
  index_t words_per_row() const { return words_per_row_; }
  const std::vector<std::uint32_t>& codes() const { return codes_; }
  const std::vector<half_t>& codebooks() const { return codebooks_; }
  const std::vector<half_t>& scales() const { return scales_; }
  // Mutable storage for readers (before the first kernel call).
  std::vector<std::uint32_t>& codes() { return codes_; }
  std::vector<half_t>& codebooks() { return codebooks_; }
  std::vector<half_t>& scales() { return scales_; }

  // Bytes as stored: code words + fp16 codebooks + fp16 scales.
  std::size_t bytes() const { return codes_.size() * 4 + codebooks_.size() * 2 + scales_.size() * 2; }

  // Back to the unpacked fp32 form (codebooks and scales as stored in fp16).
  AdditiveCodes unpack() const {
    AdditiveCodes a(shape_);
    const index_t n = shape_.codes_per_row();
    for (index_t o = 0; o < shape_.rows; ++o)
      for (index_t i = 0; i < n; ++i)
        a.codes[static_cast<std::size_t>(o * n + i)] = unpack_code(codes_.data() + o * words_per_row_, i, shape_.code_bits);
    for (std::size_t i = 0; i < codebooks_.size(); ++i) a.codebooks[i] = to_float(codebooks_[i]);
    for (std::size_t i = 0; i < scales_.size(); ++i) a.scales[i] = to_float(scales_[i]);
    return a;
  }

 // The tensors a file stores (docs/aqlm.md): codes [rows, words] u32, codebooks [M, 2^B, G] f16,
  // scales [rows] f16.
  std::vector<StoredTensor> stored_tensors() const { return tensors_of(*this); }
  std::vector<StoredTensorSlot> stored_tensors() { return tensors_of(*this); }

  // Data a kernel derives once from the stored bytes (decoded fp32 codebooks, a re-tiled code layout):
  // owned here so that it lives and dies with the matrix, defined by the kernels that use it
  // (kernels/cpu/additive_matvec.hpp). Copies start with an empty cache.
  struct KernelCache {
    std::mutex mutex;
    std::shared_ptr<const void> data;
  };
  KernelCache& kernel_cache() const {
    if (!cache_) cache_ = std::make_shared<KernelCache>();  // a moved-from object being reused
    return *cache_;
  }

 private:
  template <class Self>
  static StoredTensorsOf<Self> tensors_of(Self& p) {
    const index_t K = p.shape_.codebook_size();
    return {
        stored_tensor("codes", StoredType::U32, {p.shape_.rows, p.words_per_row_}, p.codes_),
        stored_tensor("codebooks", StoredType::F16, {p.shape_.num_codebooks, K, p.shape_.group_size}, p.codebooks_),
        stored_tensor("scales", StoredType::F16, {p.shape_.rows}, p.scales_)};
  }

  AdditiveShape shape_{};
  index_t words_per_row_ = 0;
  std::vector<std::uint32_t> codes_;  // [rows, words_per_row]
  std::vector<half_t> codebooks_;     // [M, 2^B, G]
  std::vector<half_t> scales_;        // [rows]
  mutable std::shared_ptr<KernelCache> cache_ = std::make_shared<KernelCache>();  // null only when moved from
};

// The packed type of one format: fixes M, B, G so a reader can allocate storage from (rows, cols).
template <int M, int B, int G>
class AdditivePackedOf : public AdditivePacked {
 public:
  AdditivePackedOf() = default;
  AdditivePackedOf(index_t rows, index_t cols) : AdditivePacked(AdditiveShape{rows, cols, M, B, G}) {}
  explicit AdditivePackedOf(const AdditiveCodes& a) : AdditivePacked(check(a)) {}

 private:
  static const AdditiveCodes& check(const AdditiveCodes& a) {
    LOWBIT_CHECK(a.shape.num_codebooks == M && a.shape.code_bits == B && a.shape.group_size == G,
                 "additive:", M, ":", B, ":", G, ": codes are ", a.shape.num_codebooks, "x", a.shape.code_bits,
                 " with group ", a.shape.group_size);
    return a;
  }
};


template <class Format>
inline constexpr bool is_additive_format = false;
template <int M, int B, int G>
inline constexpr bool is_additive_format<Additive<M, B, G>> = true;

// The capability AQLM's calibrator needs: an additive format, whose codes it chooses by beam search and
// whose codebooks it fits (calib/additive.hpp).
template <class Format>
concept AdditiveFormat = is_additive_format<Format>;

}  // namespace lowbit
