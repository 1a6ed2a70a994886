// AQLM end to end with the public API: load a LLaMA-family model, calibrate every linear block by block
// with additive quantization (residual k-means, exact least-squares codebooks, beam search over codes),
// optionally fine-tune each block's codebooks/scales/norms against the FP block outputs and then the
// whole model against the FP model's next-token distributions (KL), measure WikiText-2 perplexity
// before and after, and save a lowbit quantized model file.
//
//   example_aqlm MODEL CALIB_TEXT EVAL_TEXT OUT [FORMAT=additive:2:8:8] [NSAMPLES=32] [FINETUNE_EPOCHS=0]
//                [E2E_STEPS=0] [TOKENIZER]
//   e.g. example_aqlm ~/.cache/lowbit/SmolLM2-135M-Instruct.Q4_1.gguf
//        ../shared/data/text/c4_validation_sample.jsonl ../shared/data/text/wikitext2_test.txt smollm2-aqlm.safetensors
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>

#include <lowbit/calib/additive_pipeline.hpp>
#include <lowbit/eval/model_source.hpp>
#include <lowbit/eval/perplexity.hpp>
#include <lowbit/eval/text_input.hpp>
#include <lowbit/io/quantized_model.hpp>
#include <lowbit/io/tokenizer.hpp>

using namespace lowbit;

namespace {

// WikiText-2 perplexity with the GPTQ protocol (2048-token windows), first `limit` tokens.
double wikitext_ppl(nn::Llama& model, const io::Tokenizer& tok, const std::string& text, std::size_t limit) {
  return eval::text_perplexity(model, tok, text, "gptq", 0, limit).ppl;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 5) {
    std::fprintf(stderr,
                 "usage: %s MODEL CALIB_TEXT EVAL_TEXT OUT [FORMAT] [NSAMPLES] [FINETUNE_EPOCHS] [E2E_STEPS] [TOKENIZER]\n",
                 argv[0]);
    return 2;
  }
  const std::string model_path = argv[1], calib_text = argv[2], eval_text = argv[3], out = argv[4];
  const std::string format = argc > 5 ? argv[5] : "additive:2:8:8";
  const int nsamples = argc > 6 ? std::atoi(argv[6]) : 32;
  const int finetune_epochs = argc > 7 ? std::atoi(argv[7]) : 0;
  const long e2e_steps = argc > 8 ? std::atol(argv[8]) : 0;
  const std::string tokenizer_path = argc > 9 ? argv[9] : "";  // default: inside or beside the model
  const std::size_t eval_tokens = 32768;  // a quick estimate; drop the limit for the full test set
  try {
    // 1. Model and tokenizer.
    auto model = std::make_unique<nn::Llama>(eval::load_any_weights(model_path));
    auto tok = io::load_tokenizer(model_path, tokenizer_path);
    std::printf("FP32 perplexity: %.3f\n", wikitext_ppl(*model, *tok, eval_text, eval_tokens));

    // 2. Calibration windows and settings: AQLM's knobs live in AqlmOptions.
    calib::CalibrationConfig cfg;
    cfg.method = "aqlm";
    cfg.format = format;
    cfg.nsamples = nsamples;
    cfg.seqlen = 512;
    cfg.seed = 0;
    calib::AqlmOptions aqlm;
    aqlm.calib.beam_size = 1;                                     // greedy code search
    aqlm.calib.update = calib::CodebookUpdate::ExactLeastSquares;  // or CodebookUpdate::Adam (the paper's)
    aqlm.finetune_epochs = finetune_epochs;                        // block fine-tuning, 0 = off
    aqlm.e2e_steps = e2e_steps;                                    // end-to-end fine-tuning, 0 = off
    const auto tokens = calib::draw_calibration_tokens(eval::read_documents(calib_text), *tok, cfg.nsamples,
                                                       cfg.seqlen, cfg.seed, calib_text);

    // 3. Block by block: H = XᵀX per linear input, AQLM per linear, optional block fine-tune, propagate.
    //    A run directory makes the run resumable after a kill.
    nlohmann::json fingerprint = {{"model", file_fingerprint(model_path)}};
    const auto report = calib::calibrate_model(*model, tokens, cfg, calib::aqlm_method(aqlm), fingerprint,
                                               out + ".run", calib::aqlm_hooks(aqlm));
    std::printf("calibrated in %.1f s (peak RSS %.0f MiB)\n", report.seconds, report.peak_rss_mib);

    // 4. Optional global fine-tuning: codebooks, scales and norms of the whole model, forward KL to the
    //    FP model (a second, untouched copy) on the calibration windows.
    if (aqlm.e2e_steps > 0) {
      nn::Llama teacher(eval::load_any_weights(model_path));
      const auto e2e = calib::aqlm_finetune_end_to_end(*model, teacher, tokens, cfg.seqlen, aqlm, false, out + ".run");
      std::printf("end-to-end: held-out KL %.4f -> %.4f\n", e2e["heldout_kl_before"].get<double>(),
                  e2e["heldout_kl_after"].get<double>());
    }

    // 5. Size and quality.
    std::uint64_t weights = 0, bytes = 0;
    for (int l = 0; l < model->config().n_layers; ++l)
      for (auto role : nn::kAllLinearRoles) {
        auto& lin = model->linear(l, role);
        weights += static_cast<std::uint64_t>(lin.out_features() * lin.in_features());
        bytes += lin.bytes();
      }
    std::printf("%s: %.4f bits/weight over the linears (codebooks and scales included)\n", format.c_str(),
                8.0 * static_cast<double>(bytes) / static_cast<double>(weights));
    std::printf("AQLM perplexity: %.3f\n", wikitext_ppl(*model, *tok, eval_text, eval_tokens));

    // 6. Save: `lowbit perplexity --model OUT` and friends read it back.
    io::write_quantized_model(out, *model, {{"method", "aqlm"}, {"format", format}, {"aqlm", aqlm.to_json()}}, model_path);
    std::printf("wrote %s\n", out.c_str());
  } catch (const Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
