// Additive quantization (AQLM): a row's group of G weights is s_o · Σ_m C_m[code_m], with M codebooks
// of 2^B fp16 vectors shared by the whole matrix and one fp16 scale per row. `Additive<M, B, G>` is the
// policy; `Quantizer<Additive<...>>` packs, dequantizes and runs the matvec through the CPU kernels.
// Byte layout (docs/aqlm.md): codes [rows, ceil(cols/G), M] as a B-bit stream per row starting on a
// 32-bit word (core/bitpack.hpp), codebooks [M, 2^B, G] fp16, scales [rows] fp16.
#pragma once

#include <cstdint>
#include <cstdio>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "../calib/additive.hpp"
#include "../core/bitpack.hpp"
#include "../core/half.hpp"
#include "../kernels/cpu/additive_matvec.hpp"
#include "../kernels/cpu/additive_reference.hpp"
#include "concepts.hpp"

namespace lowbit {

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

  static std::string name() {
    return "additive:" + std::to_string(M) + ":" + std::to_string(B) + ":" + std::to_string(G);
  }
  static AdditiveShape shape(index_t rows, index_t cols) { return AdditiveShape{rows, cols, M, B, G}; }
};

// Packed storage, exactly as written to a file, plus fp32 copies of the codebooks and scales that the
// kernels read (decoded on first use; not counted in bytes()). Storage filled in place after
// construction (a file reader) must happen before the first kernel call.
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

  AdditiveKernelView view() const {
    const Decoded& d = decoded();
    return AdditiveKernelView{shape_, codes_.data(), words_per_row_, d.codebooks.data(), d.scales.data(),
                              d.tiled_codes.empty() ? nullptr : d.tiled_codes.data()};
  }

  // Back to the unpacked fp32 form (codebooks and scales as stored in fp16).
  AdditiveCodes unpack() const {
    AdditiveCodes a(shape_);
    const index_t n = shape_.codes_per_row();
    for (index_t o = 0; o < shape_.rows; ++o)
      for (index_t i = 0; i < n; ++i)
        a.codes[static_cast<std::size_t>(o * n + i)] = unpack_code(codes_.data() + o * words_per_row_, i, shape_.code_bits);
    a.codebooks = decoded().codebooks;
    a.scales = decoded().scales;
    return a;
  }

 private:
  struct Decoded {
    std::mutex mutex;
    bool ready = false;
    std::vector<float> codebooks, scales;
    std::vector<std::uint8_t> tiled_codes;  // kernel layout of B ≤ 8-bit codes (AVX-512 builds only)
  };
  const Decoded& decoded() const {
    if (!decoded_) decoded_ = std::make_shared<Decoded>();  // a moved-from object being reused
    Decoded& d = *decoded_;
    std::lock_guard<std::mutex> lock(d.mutex);
    if (!d.ready) {
      d.codebooks.resize(codebooks_.size());
      for (std::size_t i = 0; i < codebooks_.size(); ++i) d.codebooks[i] = to_float(codebooks_[i]);
      d.scales.resize(scales_.size());
      for (std::size_t i = 0; i < scales_.size(); ++i) d.scales[i] = to_float(scales_[i]);
#if defined(__AVX512F__) && defined(__AVX512BW__)
      if (shape_.code_bits <= 8) d.tiled_codes = additive_tile_codes(shape_, codes_.data(), words_per_row_);
#endif
      d.ready = true;
    }
    return d;
  }

  AdditiveShape shape_{};
  index_t words_per_row_ = 0;
  std::vector<std::uint32_t> codes_;  // [rows, words_per_row]
  std::vector<half_t> codebooks_;     // [M, 2^B, G]
  std::vector<half_t> scales_;        // [rows]
  mutable std::shared_ptr<Decoded> decoded_ = std::make_shared<Decoded>();  // null only when moved from
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

template <int M, int B, int G>
struct Quantizer<Additive<M, B, G>> {
  using Format = Additive<M, B, G>;
  using Packed = AdditivePackedOf<M, B, G>;

  // Defaults of the data-free quantize(W): AQ against the identity (plain weight MSE), a short schedule.
  static calib::AdditiveCalibOptions default_options() {
    calib::AdditiveCalibOptions o;
    o.num_codebooks = M;
    o.code_bits = B;
    o.group_size = G;
    o.kmeans.iterations = 25;
    o.max_epochs = 20;
    o.relative_mse_tolerance = 0.01;
    return o;
  }

  // Data-free additive quantization: H = identity.
  static Packed quantize(MatrixView<const float> W) { return quantize(W, MatrixView<const float>{}, default_options()); }

  // AQ against a proxy Hessian H = XᵀX [cols, cols] (H.data == nullptr: identity). The options' M, B
  // and G are overridden by the format's.
  static Packed quantize(MatrixView<const float> W, MatrixView<const float> H, calib::AdditiveCalibOptions options,
                         calib::AdditiveCalibReport* report = nullptr) {
    options.num_codebooks = M;
    options.code_bits = B;
    options.group_size = G;
    return Packed(calib::calibrate_additive(W, H, options, report));
  }

  static Packed pack(const AdditiveCodes& a) { return Packed(a); }

  static void dequantize(const Packed& p, MatrixView<float> out) { additive_dequantize(p.view(), out); }
  static void matvec(const Packed& p, const float* x, float* y) { additive_matvec(p.view(), x, y); }
  static double bits_per_weight(const Packed& p) {
    return 8.0 * static_cast<double>(p.bytes()) / static_cast<double>(p.rows() * p.cols());
  }
  // Closed form for a [rows, cols] matrix, before quantizing (codes padded per row to 32-bit words).
  static double bits_per_weight(index_t rows, index_t cols) {
    const AdditiveShape s = Format::shape(rows, cols);
    const double bytes = 4.0 * static_cast<double>(rows * packed_words(s.codes_per_row(), B)) +
                         2.0 * static_cast<double>(M * s.codebook_size() * G) + 2.0 * static_cast<double>(rows);
    return 8.0 * bytes / static_cast<double>(rows * cols);
  }
  static std::string name() { return Format::name(); }
};

// Parses "additive:M:B:G" into a shape template (rows/cols left 0); throws on anything else.
inline AdditiveShape parse_additive_format(const std::string& text) {
  AdditiveShape s;
  int m = 0, b = 0, g = 0;
  char tail = 0;
  LOWBIT_CHECK(std::sscanf(text.c_str(), "additive:%d:%d:%d%c", &m, &b, &g, &tail) == 3, "format '", text,
               "': expected additive:M:B:G, e.g. additive:2:8:8");
  s.rows = 1;
  s.cols = 1;
  s.num_codebooks = m;
  s.code_bits = b;
  s.group_size = g;
  s.validate("format '" + text + "'");
  s.rows = 0;
  s.cols = 0;
  return s;
}

}  // namespace lowbit
