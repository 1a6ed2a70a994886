// 1-bit activations before every linear (the Auto Quantization Encoder, ALGORITHMS.md §4) with the public
// API: each encoder kind is inserted into every block of a fresh copy of the model and trained layer-wise
// by local output matching (train/encoder.hpp); the table gives the encoder's cost and the perplexity on
// the evaluation text beside the FP model's.
//
//   example_encoder MODEL TOKENIZER CALIB_TEXT EVAL_TEXT [ENCODERS=none,diag,lowrank:16,mlp] [STEPS=300]
//   e.g. example_encoder ../shared/data/models/stories260K.bin ../shared/data/models/tok512.bin
//        ../shared/data/text/tinystories_v2_valid_first100.txt ../shared/data/text/tinystories_valid_prefix.txt
#include <cstdio>
#include <cstdlib>
#include <sstream>
#include <string>
#include <vector>

#include <lowbit/calib/calibration_data.hpp>
#include <lowbit/eval/model_source.hpp>
#include <lowbit/eval/perplexity.hpp>
#include <lowbit/eval/text_input.hpp>
#include <lowbit/io/tokenizer.hpp>
#include <lowbit/train/encoder.hpp>

using namespace lowbit;

int main(int argc, char** argv) {
  if (argc < 5) {
    std::fprintf(stderr, "usage: %s MODEL TOKENIZER CALIB_TEXT EVAL_TEXT [ENCODERS] [STEPS]\n", argv[0]);
    return 2;
  }
  const std::string model_path = argv[1], tokenizer_path = argv[2], calib_text = argv[3], eval_text = argv[4];
  std::vector<std::string> kinds;
  std::stringstream list(argc > 5 ? argv[5] : "none,diag,lowrank:16,mlp");
  for (std::string k; std::getline(list, k, ',');) kinds.push_back(k);
  const int steps = argc > 6 ? std::atoi(argv[6]) : 300;
  try {
    auto tok = io::load_tokenizer(model_path, tokenizer_path);
    auto ppl = [&](nn::Llama& m) { return eval::text_perplexity(m, *tok, eval_text, "gptq", 256, 65536).ppl; };
    nn::Llama fp(eval::load_any_weights(model_path));
    const double fp_ppl = ppl(fp);
    // 32 windows of 128 calibration tokens (never the evaluation text)
    const int seqlen = 128;
    const auto tokens =
        calib::draw_calibration_tokens(eval::read_documents(calib_text), *tok, 32, seqlen, 0, calib_text);
    std::printf("| encoder | parameters | extra multiply-adds / token | perplexity | x FP | train s |\n");
    std::printf("|---|---:|---:|---:|---:|---:|\n");
    std::printf("| FP (no encoder) | 0 | 0 | %.3f | 1.00 | - |\n", fp_ppl);
    for (const auto& kind : kinds) {
      nn::Llama model(eval::load_any_weights(model_path));
      train::EncoderTrainOptions o;
      o.encoder = kind;
      o.steps_per_block = steps;
      o.lr = 1e-2f;  // a 260K-parameter model takes larger steps than the seed's 1.1B (4e-4)
      o.final_lr = 1e-3f;
      o.quiet = true;
      const auto r = train::train_encoders(model, tokens, seqlen, o);
      const double p = ppl(model);
      std::printf("| %s | %lld | %lld (%.1f%%) | %.3f | %.2f | %.1f |\n", kind.c_str(),
                  static_cast<long long>(r.encoder_parameters), static_cast<long long>(r.encoder_macs_per_token),
                  100.0 * static_cast<double>(r.encoder_macs_per_token) / static_cast<double>(r.linear_macs_per_token),
                  p, p / fp_ppl, r.seconds);
      for (std::size_t l = 0; l < r.first_loss.size(); ++l)
        std::fprintf(stderr, "  %s block %zu: relative output error %.4f -> %.4f\n", kind.c_str(), l, r.first_loss[l],
                     r.last_loss[l]);
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
