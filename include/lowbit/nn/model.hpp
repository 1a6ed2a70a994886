// The LLaMA model: token embedding, n_layers pre-norm blocks, final RMSNorm and a tied or untied
// output head. One object serves inference (batched forward over [B, T], incremental decoding with a
// KV cache), calibration (embed / block_forward with taps / head_forward, linears swappable per role)
// and training (forward_train + backward with += gradients, llm.c style). BasicLlama<double> runs the
// very same code in double precision for the finite-difference checks; lowbit uses Llama (float).
// For inference the token table and the head can live in any weight format too (set_output_head,
// set_token_embedding): the head then runs through the format's matvec kernel and the embedding
// decodes only the rows it reads; a tied model keeps one table for both.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "../core/error.hpp"
#include "../core/rng.hpp"
#include "block.hpp"
#include "embedding.hpp"
#include "gemm.hpp"
#include "kv_cache.hpp"
#include "output_head.hpp"
#include "rmsnorm.hpp"
#include "rope.hpp"
#include "weights.hpp"

namespace lowbit::nn {

template <class F>
class BasicLlama {
 public:
  // Dense model from loaded weights (names and shapes as in weights.hpp).
  explicit BasicLlama(const ModelWeights& w) : BasicLlama(w.config, w.source, false) { load(w, nullptr); }
  // The same, taking the fp32 buffers over instead of copying them (w's tensors are left empty).
  explicit BasicLlama(ModelWeights&& w) : BasicLlama(w.config, w.source, false) { load(w, &w); }

  // Small-std initialization for pretraining: N(0, 0.02²) for embeddings and projections, with wo and
  // w2 scaled by 1/sqrt(2·n_layers) (GPT-2) so the residual stream keeps its scale; norm gains 1.
  static BasicLlama random_init(const ModelConfig& c, Rng& rng, double std = 0.02) {
    BasicLlama m(c, "random_init", true);
    auto fill = [&](F* p, std::size_t count, double sd) {
      for (std::size_t i = 0; i < count; ++i) p[i] = static_cast<F>(sd * rng.normal());
    };
    fill(m.tok_embeddings_.data(), m.tok_embeddings_.size(), std);
    for (int l = 0; l < c.n_layers; ++l)
      for (auto r : kAllLinearRoles) {
        auto [out, in] = linear_role_shape(c, r);
        std::vector<F> w(static_cast<std::size_t>(out * in));
        const bool residual_out = r == LinearRole::O || r == LinearRole::Down;
        fill(w.data(), w.size(), residual_out ? std / std::sqrt(2.0 * c.n_layers) : std);
        m.blocks_[static_cast<std::size_t>(l)].set_linear(r, std::make_unique<BasicDenseLinear<F>>(out, in, std::move(w)));
      }
    if (!c.tied_embeddings) fill(m.output_.data(), m.output_.size(), std);
    return m;
  }

  // A model with every tensor still to be set (loaders): no table is allocated, the blocks have no
  // linears; set the norms, the linears (set_linear) and the tables (tok_embeddings() / output_weight()
  // as fp32, or set_output_head / set_token_embedding) before use.
  static BasicLlama unfilled(const ModelConfig& c, std::string source) {
    return BasicLlama(c, std::move(source), false);
  }

  BasicLlama(BasicLlama&&) noexcept = default;
  BasicLlama& operator=(BasicLlama&&) noexcept = default;

  const ModelConfig& config() const { return cfg_; }
  int n_layers() const { return cfg_.n_layers; }

  BasicLinear<F>& linear(int layer, LinearRole role) { return block(layer).linear(role); }
  const BasicLinear<F>& linear(int layer, LinearRole role) const { return block(layer).linear(role); }
  void set_linear(int layer, LinearRole role, BasicLinearPtr<F> l) {
    block(layer).set_linear(role, std::move(l), source_ + ": layers." + std::to_string(layer));
  }
  BasicBlock<F>& block(int layer) {
    LOWBIT_CHECK(layer >= 0 && layer < cfg_.n_layers, source_, ": layer ", layer, " out of range [0, ", cfg_.n_layers,
                 ")");
    return blocks_[static_cast<std::size_t>(layer)];
  }
  const BasicBlock<F>& block(int layer) const {
    LOWBIT_CHECK(layer >= 0 && layer < cfg_.n_layers, source_, ": layer ", layer, " out of range [0, ", cfg_.n_layers,
                 ")");
    return blocks_[static_cast<std::size_t>(layer)];
  }

  // Trainable norm gains and tables, for calibration methods that fold scales into them.
  std::vector<F>& attention_norm(int layer) { return block(layer).attn_norm; }
  std::vector<F>& ffn_norm(int layer) { return block(layer).ffn_norm; }
  std::vector<F>& final_norm() { return final_norm_; }
  const std::vector<F>& attention_norm(int layer) const { return block(layer).attn_norm; }
  const std::vector<F>& ffn_norm(int layer) const { return block(layer).ffn_norm; }
  const std::vector<F>& final_norm() const { return final_norm_; }
  const std::vector<F>& tok_embeddings() const {
    LOWBIT_CHECK(!token_embedding(), source_, ": the token table is stored as ", token_embedding()->format(),
                 "; this needs it in fp32");
    return tok_embeddings_;
  }
  // The fp32 token table [vocab, dim] (an error once the table is stored in a weight format).
  std::vector<F>& tok_embeddings() {
    LOWBIT_CHECK(!token_embedding(), source_, ": the token table is stored as ", token_embedding()->format(),
                 "; this needs it in fp32");
    return tok_embeddings_;
  }
  // The fp32 output matrix [vocab, dim]: the embedding table itself when tied.
  std::vector<F>& output_weight() {
    LOWBIT_CHECK(!head_, source_, ": the output head is stored as ", head_ ? head_->format() : "", "; this needs it in fp32");
    return cfg_.tied_embeddings ? tok_embeddings_ : output_;
  }
  const std::vector<F>& output_weight() const {
    LOWBIT_CHECK(!head_, source_, ": the output head is stored as ", head_ ? head_->format() : "", "; this needs it in fp32");
    return cfg_.tied_embeddings ? tok_embeddings_ : output_;
  }

  // ---- token table and head in a weight format (inference only) ----
  // The output head [vocab, dim] as a layer of any format; on a tied model it is the token table too.
  // The fp32 matrix it replaces is released.
  void set_output_head(BasicLinearPtr<F> head) {
    check_table(head.get(), "output head");
    head_ = std::move(head);
    if (cfg_.tied_embeddings) release(tok_embeddings_);
    else release(output_);
  }
  // The token table [vocab, dim] of an untied model as a layer of any format (a row lookup decodes the
  // rows it reads). A tied model's table is its head: use set_output_head.
  void set_token_embedding(BasicLinearPtr<F> table) {
    LOWBIT_CHECK(!cfg_.tied_embeddings, source_, ": the token table is tied to the output head; set_output_head sets both");
    check_table(table.get(), "token table");
    embedding_ = std::move(table);
    release(tok_embeddings_);
  }
  // The layers holding the tables, or nullptr while they are fp32 vectors.
  const BasicLinear<F>* output_head() const { return head_.get(); }
  const BasicLinear<F>* token_embedding() const { return cfg_.tied_embeddings ? head_.get() : embedding_.get(); }
  // Descriptor of each table's storage: "f32" or a format name.
  std::string output_head_format() const { return head_ ? head_->format() : "f32"; }
  std::string token_embedding_format() const { return token_embedding() ? token_embedding()->format() : "f32"; }

  // ---- inference -------------------------------------------------------------------------------
  // tokens [B*T] -> logits [B*T, vocab]; each row b sees only its own sequence.
  void forward(const std::int32_t* tokens, int B, int T, F* logits) {
    check_batch(B, T);
    const index_t n = static_cast<index_t>(B) * T;
    x_.resize(static_cast<std::size_t>(n * cfg_.dim));
    embed(tokens, n, x_.data());
    for (int l = 0; l < cfg_.n_layers; ++l) block_forward(l, x_.data(), B, T);
    head_forward(x_.data(), n, logits);
  }

  void embed(const std::int32_t* tokens, index_t n, F* x) const {
    if (const auto* table = token_embedding()) {
      for (index_t r = 0; r < n; ++r) {
        const std::int32_t t = tokens[r];
        LOWBIT_CHECK(t >= 0 && t < cfg_.vocab_size, "embedding: token id ", t, " at position ", r,
                     " is outside the vocabulary [0, ", cfg_.vocab_size, ")");
        table->dequantize_row(t, x + r * cfg_.dim);
      }
      return;
    }
    embedding_forward(tok_embeddings_.data(), cfg_.vocab_size, cfg_.dim, tokens, n, x);
  }

  // x [B*T, dim] in place through block `layer`; taps (optional) receive the linear inputs.
  void block_forward(int layer, F* x, int B, int T, BasicBlockTaps<F>* taps = nullptr) {
    rope_.ensure(T);
    block(layer).forward(x, B, T, rope_, nullptr, layer, 0, taps, &workspace_);
  }

  // Final norm + output head: x [n, dim] -> logits [n, vocab].
  void head_forward(const F* x, index_t n, F* logits) {
    xn_.resize(static_cast<std::size_t>(n * cfg_.dim));
    rmsnorm_forward(x, final_norm_.data(), n, cfg_.dim, static_cast<F>(cfg_.norm_eps), xn_.data());
    if (head_) {
      head_->forward(MatrixView<const F>(xn_.data(), n, cfg_.dim), MatrixView<F>(logits, n, cfg_.vocab_size));
      return;
    }
    matmul_xwt<F>(MatrixView<const F>(xn_.data(), n, cfg_.dim),
                  MatrixView<const F>(output_weight().data(), cfg_.vocab_size, cfg_.dim),
                  MatrixView<F>(logits, n, cfg_.vocab_size));
  }

  // Activation format of every single-token product (linears and head): "int8" runs the integer
  // kernels where a format has them (format/activation.hpp), "f32" the exact products. Returns how
  // many layers took it (dense layers stay exact).
  int set_activations(const std::string& name) {
    int switched = 0;
    for (int l = 0; l < cfg_.n_layers; ++l)
      for (auto r : kAllLinearRoles) switched += linear(l, r).set_activations(name) ? 1 : 0;
    if (head_) switched += head_->set_activations(name) ? 1 : 0;
    return switched;
  }

  // ---- incremental decoding --------------------------------------------------------------------
  BasicKVCache<F> make_cache(int max_len) const { return BasicKVCache<F>(cfg_, max_len); }

  // Feeds T tokens of one sequence at positions start_pos.. (keys/values go to the cache). logits
  // receives [T, vocab], or only the last position's [vocab] when last_only.
  void forward_prefill(const std::int32_t* tokens, int T, int start_pos, BasicKVCache<F>& cache, F* logits,
                       bool last_only = true) {
    LOWBIT_CHECK(cache.n_layers == cfg_.n_layers && cache.kv_width == cfg_.kv_dim(), source_,
                 ": KV cache was made for another model shape");
    LOWBIT_CHECK(T > 0, source_, ": forward_prefill needs at least one token");
    LOWBIT_CHECK(start_pos >= 0 && start_pos + T <= cache.max_len, source_, ": positions [", start_pos, ", ",
                 start_pos + T, ") exceed the KV cache length ", cache.max_len);
    rope_.ensure(start_pos + T);
    const index_t n = T;
    x_.resize(static_cast<std::size_t>(n * cfg_.dim));
    embed(tokens, n, x_.data());
    for (int l = 0; l < cfg_.n_layers; ++l)
      block(l).forward(x_.data(), 1, T, rope_, &cache, l, start_pos, nullptr, &workspace_);
    if (last_only)
      head_forward(x_.data() + (n - 1) * cfg_.dim, 1, logits);
    else
      head_forward(x_.data(), n, logits);
  }

  // One token at position `pos` (the cache holds positions 0..pos-1): logits [vocab].
  void forward_token(std::int32_t token, int pos, BasicKVCache<F>& cache, F* logits) {
    forward_prefill(&token, 1, pos, cache, logits, true);
  }

  // ---- training --------------------------------------------------------------------------------
  // Embeddings, norms, every Linear's parameters(), with canonical names.
  std::vector<BasicParameter<F>> parameters() {
    require_fp32_tables("training");
    ensure_grads();
    std::vector<BasicParameter<F>> out;
    out.push_back({"tok_embeddings.weight", tok_embeddings_.data(), tok_embeddings_grad_.data(),
                   static_cast<index_t>(tok_embeddings_.size())});
    for (int l = 0; l < cfg_.n_layers; ++l)
      for (auto& p : block_parameters(l)) out.push_back(std::move(p));
    out.push_back({"norm.weight", final_norm_.data(), final_norm_grad_.data(), static_cast<index_t>(final_norm_.size())});
    if (!cfg_.tied_embeddings)
      out.push_back({"output.weight", output_.data(), output_grad_.data(), static_cast<index_t>(output_.size())});
    return out;
  }

  std::vector<BasicParameter<F>> block_parameters(int layer) {
    return block(layer).parameters(ModelWeights::layer_name(layer, ""));
  }

  void zero_grad() {
    for (auto& p : parameters()) std::fill_n(p.grad, p.size, F(0));
  }

  // Forward that saves activations for backward(); logits [B*T, vocab].
  void forward_train(const std::int32_t* tokens, int B, int T, F* logits) {
    check_batch(B, T);
    require_fp32_tables("training");
    const index_t n = static_cast<index_t>(B) * T;
    rope_.ensure(T);
    train_B_ = B;
    train_T_ = T;
    train_tokens_.assign(tokens, tokens + n);
    acts_.resize(static_cast<std::size_t>(cfg_.n_layers));
    std::vector<F> x(static_cast<std::size_t>(n * cfg_.dim)), next(x.size());
    embed(tokens, n, x.data());
    for (int l = 0; l < cfg_.n_layers; ++l) {
      block(l).forward_train(x.data(), B, T, rope_, next.data(), acts_[static_cast<std::size_t>(l)]);
      std::swap(x, next);
    }
    x_final_ = std::move(x);
    inv_rms_final_.resize(static_cast<std::size_t>(n));
    xn_final_.resize(static_cast<std::size_t>(n * cfg_.dim));
    rmsnorm_forward(x_final_.data(), final_norm_.data(), n, cfg_.dim, static_cast<F>(cfg_.norm_eps), xn_final_.data(),
                    inv_rms_final_.data());
    matmul_xwt<F>(MatrixView<const F>(xn_final_.data(), n, cfg_.dim),
                  MatrixView<const F>(output_weight().data(), cfg_.vocab_size, cfg_.dim),
                  MatrixView<F>(logits, n, cfg_.vocab_size));
  }

  // After forward_train: gradients of every parameter += given dlogits [B*T, vocab].
  void backward(const F* dlogits) {
    LOWBIT_CHECK(!x_final_.empty(), source_, ": backward() needs a preceding forward_train()");
    ensure_grads();
    const int B = train_B_, T = train_T_;
    const index_t n = static_cast<index_t>(B) * T, dim = cfg_.dim, V = cfg_.vocab_size;
    MatrixView<const F> dY(dlogits, n, V);
    std::vector<F> d_xn(static_cast<std::size_t>(n * dim), F(0));
    matmul_add_dyw<F>(dY, MatrixView<const F>(output_weight().data(), V, dim), MatrixView<F>(d_xn.data(), n, dim));
    std::vector<F>& head_grad = cfg_.tied_embeddings ? tok_embeddings_grad_ : output_grad_;
    matmul_add_dytx<F>(dY, MatrixView<const F>(xn_final_.data(), n, dim), MatrixView<F>(head_grad.data(), V, dim));
    std::vector<F> d_x(static_cast<std::size_t>(n * dim), F(0)), d_prev(d_x.size());
    rmsnorm_backward(x_final_.data(), final_norm_.data(), inv_rms_final_.data(), d_xn.data(), n, dim, d_x.data(),
                     final_norm_grad_.data());
    for (int l = cfg_.n_layers - 1; l >= 0; --l) {
      std::fill(d_prev.begin(), d_prev.end(), F(0));
      block(l).backward(acts_[static_cast<std::size_t>(l)], rope_, d_x.data(), d_prev.data());
      std::swap(d_x, d_prev);
    }
    embedding_backward(train_tokens_.data(), n, dim, d_x.data(), tok_embeddings_grad_.data());
  }

  // Mean cross-entropy of targets [B*T] (negative targets are ignored); gradients +=.
  F forward_backward_ce(const std::int32_t* tokens, const std::int32_t* targets, int B, int T) {
    const index_t n = static_cast<index_t>(B) * T;
    index_t count = 0;
    for (index_t i = 0; i < n; ++i) count += targets[i] >= 0;
    LOWBIT_CHECK(count > 0, source_, ": forward_backward_ce got no scored target");
    logits_.resize(static_cast<std::size_t>(n * cfg_.vocab_size));
    forward_train(tokens, B, T, logits_.data());
    const double loss = cross_entropy(logits_.data(), targets, n, cfg_.vocab_size, logits_.data(),
                                      1.0 / static_cast<double>(count));
    backward(logits_.data());
    return static_cast<F>(loss / static_cast<double>(count));
  }

  // Block-level training for block reconstruction: x_in, x_out [B*T, dim].
  void block_forward_train(int layer, const F* x_in, int B, int T, F* x_out, BasicBlockActivations<F>& acts) {
    rope_.ensure(T);
    block(layer).forward_train(x_in, B, T, rope_, x_out, acts);
  }
  void block_backward(int layer, const BasicBlockActivations<F>& acts, const F* d_out, F* d_in) {
    block(layer).backward(acts, rope_, d_out, d_in);
  }

  const std::string& source() const { return source_; }

 private:
  BasicLlama(const ModelConfig& c, std::string source, bool allocate_tables)
      : cfg_(c),
        source_(std::move(source)),
        rope_(c.head_dim(), c.rope_theta, c.rope_layout, std::min(c.max_seq_len, 2048)) {
    cfg_.validate(source_);
    final_norm_.assign(static_cast<std::size_t>(c.dim), F(1));
    if (allocate_tables) {
      tok_embeddings_.assign(static_cast<std::size_t>(c.vocab_size) * c.dim, F(0));
      if (!c.tied_embeddings) output_.assign(tok_embeddings_.size(), F(0));
    }
    blocks_.reserve(static_cast<std::size_t>(c.n_layers));
    for (int l = 0; l < c.n_layers; ++l) blocks_.emplace_back(c, false);  // both factories set every linear
  }

  // The checked tensor `name` as a buffer of F: moved out of `owner` (== &w) when given and F is float.
  static std::vector<F> take(const ModelWeights& w, ModelWeights* owner, const std::string& name,
                             const std::vector<index_t>& shape) {
    const Tensor& t = w.get(name, shape);
    (void)owner;
    if constexpr (std::is_same_v<F, float>) {
      if (owner) return std::move(owner->tensors.find(name)->second.data);
    }
    return std::vector<F>(t.data.begin(), t.data.end());
  }

  void load(const ModelWeights& w, ModelWeights* owner) {
    const index_t dim = cfg_.dim, V = cfg_.vocab_size;
    tok_embeddings_ = take(w, owner, "tok_embeddings.weight", {V, dim});
    final_norm_ = take(w, owner, "norm.weight", {dim});
    if (!cfg_.tied_embeddings) output_ = take(w, owner, "output.weight", {V, dim});
    for (int l = 0; l < cfg_.n_layers; ++l) {
      auto& b = blocks_[static_cast<std::size_t>(l)];
      b.attn_norm = take(w, owner, ModelWeights::layer_name(l, "attention_norm.weight"), {dim});
      b.ffn_norm = take(w, owner, ModelWeights::layer_name(l, "ffn_norm.weight"), {dim});
      for (auto r : kAllLinearRoles) {
        auto [out, in] = linear_role_shape(cfg_, r);
        auto data = take(w, owner, ModelWeights::layer_name(l, std::string(linear_role_name(r)) + ".weight"), {out, in});
        b.set_linear(r, std::make_unique<BasicDenseLinear<F>>(out, in, std::move(data)));
      }
    }
  }

  void check_table(const BasicLinear<F>* table, const char* what) const {
    LOWBIT_CHECK(table != nullptr, source_, ": ", what, " is null");
    LOWBIT_CHECK(table->out_features() == cfg_.vocab_size && table->in_features() == cfg_.dim, source_, ": ", what,
                 " is ", table->out_features(), "x", table->in_features(), ", expected ", cfg_.vocab_size, "x",
                 cfg_.dim);
  }
  static void release(std::vector<F>& v) {
    v.clear();
    v.shrink_to_fit();
  }
  void require_fp32_tables(const char* what) const {
    LOWBIT_CHECK(!head_ && !embedding_, source_, ": ", what, " needs the token table and head in fp32 (stored as ",
                 token_embedding_format(), " / ", output_head_format(), ")");
  }

  void check_batch(int B, int T) const {
    LOWBIT_CHECK(B > 0 && T > 0, source_, ": batch ", B, " x ", T, " tokens is empty");
  }

  void ensure_grads() {
    auto ensure = [](std::vector<F>& g, const std::vector<F>& v) {
      if (g.size() != v.size()) g.assign(v.size(), F(0));
    };
    ensure(tok_embeddings_grad_, tok_embeddings_);
    ensure(final_norm_grad_, final_norm_);
    if (!cfg_.tied_embeddings) ensure(output_grad_, output_);
  }

  ModelConfig cfg_;
  std::string source_;
  RopeTable<F> rope_;
  std::vector<F> tok_embeddings_, tok_embeddings_grad_;
  std::vector<BasicBlock<F>> blocks_;
  std::vector<F> final_norm_, final_norm_grad_;
  std::vector<F> output_, output_grad_;  // untied head only
  BasicLinearPtr<F> head_;               // the head in a weight format (tied: also the token table)
  BasicLinearPtr<F> embedding_;          // the token table in a weight format (untied models)

  // inference workspace (one for all blocks)
  std::vector<F> x_, xn_;
  BasicBlockActivations<F> workspace_;
  // training state (forward_train -> backward)
  int train_B_ = 0, train_T_ = 0;
  std::vector<std::int32_t> train_tokens_;
  std::vector<BasicBlockActivations<F>> acts_;
  std::vector<F> x_final_, inv_rms_final_, xn_final_, logits_;
};

using Llama = BasicLlama<float>;

}  // namespace lowbit::nn
