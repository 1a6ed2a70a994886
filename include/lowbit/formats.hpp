// The format registry: the one list of weight formats lowbit knows by name. The quantized-model file
// (reader and writer), the calibration methods (which formats they can fill), the CLI (`--format`
// validation and help, `lowbit formats`), the format benchmark table and the generic tests all derive
// from this list, so a new format is its own headers plus one line here (docs/adding-a-format.md).
// Everything format-specific lives next to the format: its descriptor (`Format::name()`), its storage
// and stored tensors (format/), its kernels and façade (quantizer/), its capabilities as concepts
// (format/concepts.hpp, or next to its family like AdditiveFormat), its trainable form (nn/).
//
// A program can register formats of its own without editing lowbit: compile with
// -DLOWBIT_USER_FORMATS_HEADER='"my_formats.hpp"', a header that defines the formats and
// `namespace lowbit { using UserFormats = FormatList<MyFormat<...>, ...>; }` (tests/formats/ does this).
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "core/error.hpp"
#include "format/additive.hpp"
#include "format/bcq.hpp"
#include "format/concepts.hpp"
#include "format/nf3.hpp"
#include "format/uniform.hpp"
#include "quantizer.hpp"

namespace lowbit {

template <class... Formats>
struct FormatList {
  static constexpr std::size_t size = sizeof...(Formats);
};
template <class Format>
struct FormatTag {
  using type = Format;
};

namespace detail {
template <class... A, class... B>
FormatList<A..., B...> concat_formats(FormatList<A...>, FormatList<B...>) {
  return {};
}
}  // namespace detail

// ---- the list -----------------------------------------------------------------------------------
using BuiltinFormats = FormatList<
    // group-wise uniform (RTN, GPTQ, AutoClip, BitDistiller): bits x group size
    Uniform<2, 32>, Uniform<2, 64>, Uniform<2, 128>, Uniform<3, 32>, Uniform<3, 64>, Uniform<3, 128>, Uniform<4, 32>,
    Uniform<4, 64>, Uniform<4, 128>, Uniform<8, 128>,
    // 4-bit symmetric (one fp16 scale per 128 weights, 4.125 bits/weight): with the 8-bit token table
    // it keeps a whole SmolLM2 file under 5 bits/weight, where the asymmetric W4g128 lands at 5.01
    Uniform<4, 128, UniformMode::Symmetric>,
    // token tables and heads (the quantized file's default for both): 8 bits, one fp16 scale per row
    Uniform<8, whole_row, UniformMode::Symmetric>,
    // BitDistiller's NF3 grid
    NF3<64>, NF3<128>,
    // AQLM: M codebooks of 2^B codewords of G weights. 3x7 and 4x6 (g8) spend 21 and 24 code bits per 8
    // weights with 6 and 4 KiB of codebooks per matrix (3x8: 12 KiB), so on SmolLM2-sized matrices they
    // land at ~2.75 and ~3.09 bits/weight where 3x8 lands at 3.22 (docs/aqlm.md).
    Additive<1, 8, 8>, Additive<2, 8, 8>, Additive<3, 8, 8>, Additive<4, 8, 8>, Additive<8, 8, 8>, Additive<2, 8, 4>,
    Additive<1, 16, 8>, Additive<2, 15, 8>, Additive<1, 16, 16>, Additive<2, 8, 16>, Additive<3, 7, 8>,
    Additive<4, 6, 8>,
    // UniQuanF's binary-coding formats: Bits planes of signs, Bits fp16 scales + an fp16 offset per group.
    // Whole-row groups cost Bits + 16(Bits+1)/cols bits/weight (3.11 at 3 bits on 576 columns), groups of
    // 128 cost Bits + 0.125(Bits+1)
    BCQ<1, 128>, BCQ<1, whole_row>, BCQ<2, 32>, BCQ<2, 64>, BCQ<2, 128>, BCQ<2, whole_row>, BCQ<3, 32>, BCQ<3, 64>,
    BCQ<3, 128>, BCQ<3, whole_row>, BCQ<4, 32>, BCQ<4, 64>, BCQ<4, 128>, BCQ<4, whole_row>>;

}  // namespace lowbit

#if defined(LOWBIT_USER_FORMATS_HEADER)
#include LOWBIT_USER_FORMATS_HEADER
#else
namespace lowbit {
using UserFormats = FormatList<>;
}  // namespace lowbit
#endif

namespace lowbit {

using RegisteredFormats = decltype(detail::concat_formats(BuiltinFormats{}, UserFormats{}));

namespace detail {
template <class... F>
constexpr bool all_weight_formats(FormatList<F...>) {
  return (WeightFormat<F> && ...);
}
}  // namespace detail
static_assert(detail::all_weight_formats(RegisteredFormats{}),
              "lowbit: every registered format needs a Quantizer (QuantizerFor), a name() and packed storage that "
              "lists its tensors (stored_tensors(), StorableFormat): see format/concepts.hpp");

// ---- visiting -----------------------------------------------------------------------------------

// Calls fn(FormatTag<F>{}) for every registered format, in list order.
template <class Fn>
void for_each_format(Fn&& fn) {
  [&]<class... F>(FormatList<F...>) { (fn(FormatTag<F>{}), ...); }(RegisteredFormats{});
}

// A capability filter is a stateless template lambda, e.g. `[]<class F>() { return GroupGridFormat<F>; }`.
inline constexpr auto any_format = []<class F>() { return true; };

// Descriptors of the registered formats that pass `filter`, in list order.
template <class Filter = decltype(any_format)>
std::vector<std::string> format_names(Filter = any_format) {
  std::vector<std::string> names;
  for_each_format([&]<class F>(FormatTag<F>) {
    if constexpr (Filter{}.template operator()<F>()) names.push_back(F::name());
  });
  return names;
}

inline bool is_registered_format(const std::string& descriptor) {
  bool found = false;
  for_each_format([&]<class F>(FormatTag<F>) { found = found || F::name() == descriptor; });
  return found;
}

namespace detail {
template <class Filter, class First, class... Rest>
constexpr auto first_passing(FormatList<First, Rest...>) {
  if constexpr (Filter{}.template operator()<First>()) {
    return FormatTag<First>{};
  } else {
    static_assert(sizeof...(Rest) > 0, "lowbit: no registered format has this capability");
    return first_passing<Filter>(FormatList<Rest...>{});
  }
}

inline std::string joined(const std::vector<std::string>& names) {
  std::string out;
  for (const auto& n : names) out += (out.empty() ? "" : ", ") + n;
  return out;
}
}  // namespace detail

// Calls fn(FormatTag<F>{}) for the registered format F whose name() is `descriptor` and which passes
// `filter`, and returns its result (every candidate must return the same type). A descriptor that is not
// registered, or names a format without the capability, throws lowbit::Error listing what would work;
// `capability` names the capability in that message ("group-grid format", ...).
template <class Filter, class Fn>
auto visit_format_if(const std::string& descriptor, Filter filter, Fn&& fn, const std::string& capability) {
  (void)filter;  // a stateless lambda: its type is the filter
  using First = typename decltype(detail::first_passing<Filter>(RegisteredFormats{}))::type;
  using R = decltype(fn(FormatTag<First>{}));
  std::conditional_t<std::is_void_v<R>, bool, std::optional<R>> result{};
  bool registered = false;
  for_each_format([&]<class F>(FormatTag<F> tag) {
    if (F::name() != descriptor) return;
    registered = true;
    if constexpr (Filter{}.template operator()<F>()) {
      if constexpr (std::is_void_v<R>) {
        fn(tag);
        result = true;
      } else {
        result.emplace(fn(tag));
      }
    }
  });
  if (!result) {
    const auto able = format_names(filter);
    if (!registered) fail("unknown format '", descriptor, "' (", capability, "s: ", detail::joined(able), ")");
    fail("format '", descriptor, "' is not a ", capability, " (", capability, "s: ", detail::joined(able), ")");
  }
  if constexpr (!std::is_void_v<R>) return std::move(*result);
}

// The same over every registered format.
template <class Fn>
auto visit_format(const std::string& descriptor, Fn&& fn) {
  return visit_format_if(descriptor, any_format, std::forward<Fn>(fn), "registered format");
}

}  // namespace lowbit
