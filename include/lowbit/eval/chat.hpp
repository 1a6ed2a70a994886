// Chat prompts: the model's chat template applied to one user turn, for `lowbit generate --chat`.
// lowbit does not run Jinja; it recognizes the template family. ChatML (`<|im_start|>role\n…<|im_end|>\n`,
// SmolLM2, Qwen, …) is supported: the template's default system message, when it writes one (SmolLM2's
// "You are a helpful AI assistant named SmolLM, …"), is taken from the template text itself, and the
// turn ends with the `<|im_end|>` token. Other families are refused with a message naming them.
#pragma once

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "../core/error.hpp"
#include "../io/gguf.hpp"
#include "../io/model_loader.hpp"
#include "../io/quantized_model.hpp"
#include "../io/tokenizer_base.hpp"

namespace lowbit::eval {

// The chat template text of the model at `path` (GGUF metadata `tokenizer.chat_template`, a Hugging
// Face folder's tokenizer_config.json, or for a lowbit quantized file its source model's); empty when
// the model has none.
inline std::string chat_template_of(const std::filesystem::path& path, int depth = 0) {
  namespace fs = std::filesystem;
  switch (io::detect_model_format(path)) {
    case io::ModelFormat::Gguf: return io::GgufFile(path).get_string_or("tokenizer.chat_template", "");
    case io::ModelFormat::LowbitQuantized: {
      const auto info = io::quantized_model_info(path);
      const std::string source = info.value("source_model", std::string{});
      if (source.empty() || depth > 4 || !fs::exists(source)) return {};
      return chat_template_of(source, depth + 1);
    }
    case io::ModelFormat::Safetensors:
    case io::ModelFormat::HfFolder: {
      const fs::path dir = fs::is_directory(path) ? path : path.parent_path();
      std::ifstream in(dir / "tokenizer_config.json");
      if (!in) return {};
      try {
        const auto j = nlohmann::json::parse(in);
        if (j.contains("chat_template") && j["chat_template"].is_string()) return j["chat_template"].get<std::string>();
      } catch (const nlohmann::json::exception&) {
      }
      return {};
    }
    default: return {};
  }
}

struct ChatPrompt {
  std::vector<std::int32_t> tokens;  // the rendered prompt, ending with the assistant's turn header
  std::int32_t end_of_turn = -1;     // the token that ends the assistant's turn
  std::string text;                  // the rendered prompt as text
};

// The default system message a ChatML template writes when the conversation has none ("" if none).
inline std::string chatml_default_system(const std::string& tmpl) {
  for (const char* open_text : {"<|im_start|>system\n", "<|im_start|>system\\n"}) {
    const std::string open = open_text;
    const auto a = tmpl.find(open);
    if (a == std::string::npos) continue;
    const auto b = tmpl.find("<|im_end|>", a + open.size());
    if (b == std::string::npos) continue;
    const std::string text = tmpl.substr(a + open.size(), b - a - open.size());
    // only a literal message (not an expression such as message['content'])
    if (text.find_first_of("{}'+") == std::string::npos) return text;
  }
  return {};
}

// One user turn (and a system message: `system`, else the template's default) rendered with the
// model's template; throws when the template is not ChatML or the tokenizer lacks its tokens.
inline ChatPrompt chat_prompt(const io::Tokenizer& tok, const std::string& tmpl, const std::string& user,
                              const std::string* system = nullptr) {
  const bool chatml = tmpl.find("<|im_start|>") != std::string::npos;
  LOWBIT_CHECK(chatml || tmpl.empty(), "--chat: the model's chat template is not ChatML (lowbit applies ChatML "
               "templates only; it starts: '", tmpl.substr(0, 60), "'); give the formatted prompt with --prompt");
  auto special = [&](const char* piece) {
    const auto ids = tok.encode(piece, false);
    LOWBIT_CHECK(ids.size() == 1, "--chat: the tokenizer has no single token for ", piece,
                 tmpl.empty() ? " (and the model has no chat template)" : "", "; give the formatted prompt with --prompt");
    return ids[0];
  };
  ChatPrompt p;
  special("<|im_start|>");
  p.end_of_turn = special("<|im_end|>");
  const std::string sys = system ? *system : chatml_default_system(tmpl);
  std::ostringstream text;
  if (!sys.empty() || system) text << "<|im_start|>system\n" << sys << "<|im_end|>\n";
  text << "<|im_start|>user\n" << user << "<|im_end|>\n<|im_start|>assistant\n";
  p.text = text.str();
  p.tokens = tok.encode(p.text, tok.adds_bos_by_default());
  return p;
}

}  // namespace lowbit::eval
