// The token table and the output head in a weight format. They hold a fifth of a small model's weights
// (SmolLM2-135M: 28 M of 135 M, tied) and the head is read in full for every decoded token, so leaving
// them in fp32 makes a "4-bit" file 10 bits per weight and spends a third of decoding on one fp32 GEMV.
// Round-to-nearest is enough at 8 bits (the default, `kDefaultTableFormat`: one fp16 scale per row,
// symmetric), and any registered format works; a tied model has one table, which is both.
#pragma once

#include <string>

#include "../core/error.hpp"
#include "../core/tensor.hpp"
#include "../formats.hpp"
#include "../nn/model.hpp"
#include "../nn/stored_linear.hpp"

namespace lowbit::calib {

inline constexpr const char* kDefaultTableFormat = "uniform:8:row:sym";

inline void check_table_format(const std::string& descriptor, const char* what) {
  LOWBIT_CHECK(descriptor == "f32" || is_registered_format(descriptor), what, ": unknown format '", descriptor,
               "' (f32, or a registered format: ", lowbit::detail::joined(format_names()), ")");
}

// Stores the token table in `table_format` and the head in `head_format` (RTN; "f32" keeps either in
// fp32). On a tied model the two are one tensor: the formats must then be equal.
inline void quantize_tables(nn::Llama& model, const std::string& table_format, const std::string& head_format) {
  check_table_format(table_format, "token table");
  check_table_format(head_format, "output head");
  const auto& c = model.config();
  if (c.tied_embeddings) {
    LOWBIT_CHECK(table_format == head_format, model.source(), ": the token table is tied to the output head (one tensor), "
                 "so it cannot be stored as both ", table_format, " and ", head_format);
    if (head_format != "f32")
      model.set_output_head(nn::make_rtn_linear(head_format, as_matrix(model.tok_embeddings(), c.vocab_size, c.dim)));
    return;
  }
  if (head_format != "f32")
    model.set_output_head(nn::make_rtn_linear(head_format, as_matrix(model.output_weight(), c.vocab_size, c.dim)));
  if (table_format != "f32")
    model.set_token_embedding(nn::make_rtn_linear(table_format, as_matrix(model.tok_embeddings(), c.vocab_size, c.dim)));
}

}  // namespace lowbit::calib
