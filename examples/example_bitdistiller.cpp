// BitDistiller's three steps with the public API, on stories260K in well under a minute:
//   1. teacher data: the FP model continues prompts cut from calibration text (temperature 0.7),
//   2. the student: every linear a fake-quant layer over its format, started by AutoClip's clipping search,
//   3. QAT: the whole student distilled from the FP model with CAKLD on the teacher data, then packed
// and written as a lowbit quantized file; perplexity of the FP model, the AutoClip start and the QAT
// result on the evaluation text.
//
//   example_bitdistiller MODEL TOKENIZER CALIB_TEXT EVAL_TEXT OUT [FORMAT=uniform:2:32] [STEPS=200]
//   e.g. example_bitdistiller ../shared/data/models/stories260K.bin ../shared/data/models/tok512.bin
//        ../shared/data/text/tinystories_v2_valid_first100.txt ../shared/data/text/tinystories_valid_prefix.txt
//        stories-qat.safetensors
#include <cstdio>
#include <cstdlib>
#include <string>

#include <lowbit/calib/bitdistiller.hpp>
#include <lowbit/calib/pipeline.hpp>
#include <lowbit/eval/model_source.hpp>
#include <lowbit/eval/perplexity.hpp>
#include <lowbit/eval/text_input.hpp>
#include <lowbit/io/quantized_model.hpp>
#include <lowbit/io/tokenizer.hpp>

using namespace lowbit;

namespace {

double perplexity(nn::Llama& model, const io::Tokenizer& tok, const std::string& text) {
  return eval::text_perplexity(model, tok, text, "gptq", 256, 65536).ppl;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 6) {
    std::fprintf(stderr, "usage: %s MODEL TOKENIZER CALIB_TEXT EVAL_TEXT OUT [FORMAT] [STEPS]\n", argv[0]);
    return 2;
  }
  const std::string model_path = argv[1], tokenizer_path = argv[2], calib_text = argv[3], eval_text = argv[4], out = argv[5];
  const std::string format = argc > 6 ? argv[6] : "uniform:2:32";
  const long steps = argc > 7 ? std::atol(argv[7]) : 200;
  try {
    nn::Llama teacher(eval::load_any_weights(model_path));
    auto tok = io::load_tokenizer(model_path, tokenizer_path);
    std::printf("FP32 perplexity: %.3f\n", perplexity(teacher, *tok, eval_text));

    // 1. Teacher data: 96 prompts of 64 characters from the calibration text, up to 192 new tokens each.
    train::TeacherDataOptions td;
    td.samples = 96;
    td.max_new_tokens = 192;
    td.prompt_chars = 64;
    td.min_paragraph_chars = 128;
    td.quiet = true;
    const auto prompts = train::draw_teacher_prompts({{calib_text, 1.0}}, td);
    train::TeacherHeader header;
    header.options = td.to_json();
    header.model = model_path;
    header.model_fingerprint = file_fingerprint(model_path);
    header.tokenizer = tok->describe();
    header.vocab_size = teacher.config().vocab_size;
    const std::string teacher_file = out + ".teacher.jsonl";
    const auto gen = train::generate_teacher_data(teacher, *tok, prompts, header, td, teacher_file);
    std::printf("teacher data: %lld samples (%lld new tokens) in %s\n", static_cast<long long>(gen.kept + gen.written),
                static_cast<long long>(gen.new_tokens), teacher_file.c_str());

    // 2. The student: AutoClip on 16 calibration windows, every linear a fake-quant layer.
    calib::BitDistillerOptions qat;
    qat.steps = steps;
    qat.batch = 4;
    qat.seq_len = 128;
    qat.lr = 1e-3f;  // a 260K-parameter model takes a much larger step than the paper's 7B (8e-6)
    calib::CalibrationConfig cfg;
    cfg.format = format;
    cfg.nsamples = 16;
    cfg.seqlen = 128;
    cfg.quiet = true;
    const auto windows = calib::draw_calibration_tokens(eval::read_documents(calib_text), *tok, cfg.nsamples, cfg.seqlen,
                                                        cfg.seed, calib_text);
    nn::Llama student(eval::load_any_weights(model_path));
    calib::calibrate_model(student, windows, cfg, calib::QuantizationPlan(calib::bitdistiller_method(qat), format),
                           nlohmann::json::object());
    std::printf("AutoClip start (%s): perplexity %.3f\n", format.c_str(), perplexity(student, *tok, eval_text));

    // 3. QAT with CAKLD on the teacher data, then the fold into the packed format.
    const auto data = train::teacher_token_data(train::read_teacher_data(teacher_file), teacher_file,
                                                teacher.config().vocab_size, tok->describe(), qat.heldout_fraction);
    const auto r = calib::bitdistiller_train(student, teacher, data, qat, true);
    std::printf("QAT: %lld steps, beta %.3f, held-out CAKLD %.4f -> %.4f (best at step %lld), %.1f s\n",
                r["steps"].get<long long>(), r["beta"].get<double>(), r["heldout_before"].get<double>(),
                r["heldout_after"].get<double>(), r["best_step"].get<long long>(), r["seconds"].get<double>());
    io::write_quantized_model(out, student, {{"method", "bitdistiller"}, {"format", format}, {"qat", r["options"]}},
                              model_path);
    nn::Llama written = io::load_quantized_model(out);
    std::printf("QAT result %s: perplexity %.3f\n", out.c_str(), perplexity(written, *tok, eval_text));
  } catch (const Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
