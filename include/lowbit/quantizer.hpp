// Quantizer<Format>: the façade generic code uses (QuantizedLinear, benchmarks, the CLI) to quantize,
// dequantize and multiply with any weight format. The primary template and the QuantizerFor concept are
// format/concepts.hpp; each format family specializes it in its own header under quantizer/, where the
// format's storage (format/) meets its kernels (kernels/) and its default quantization. The list of
// formats a program knows by name is formats.hpp.
#pragma once

#include "format/activation.hpp"
#include "format/concepts.hpp"
#include "quantizer/additive.hpp"
#include "quantizer/bcq.hpp"
#include "quantizer/nf3.hpp"
#include "quantizer/uniform.hpp"

namespace lowbit {

// y = Ŵx with activation format A: the format's own kernel for A when it has one (Quantizer<F>::
// matvec<A>), otherwise its exact matvec. Generic code calls this, so a format needs no kernel per
// activation format.
template <class Format, ActivationFormat A = F32Activations>
void matvec_with(const typename Quantizer<Format>::Packed& packed, const float* x, float* y) {
  using Q = Quantizer<Format>;
  if constexpr (requires { Q::template matvec<A>(packed, x, y); })
    Q::template matvec<A>(packed, x, y);
  else
    Q::matvec(packed, x, y);
}

// Whether matvec_with<Format, A> runs a kernel of its own for A on this build (false: the exact path).
template <class Format, ActivationFormat A>
constexpr bool has_activation_kernel() {
  if constexpr (A::exact)
    return true;
  else if constexpr (requires { Quantizer<Format>::template has_kernel_for<A>(); })
    return Quantizer<Format>::template has_kernel_for<A>();
  else
    return false;
}

}  // namespace lowbit
