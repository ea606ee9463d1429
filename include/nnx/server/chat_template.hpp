// nnx/server/chat_template.hpp — turning OpenAI chat messages into one prompt string, for the
// three chat formats most open models use: ChatML (Qwen, many fine-tunes), Llama 2's [INST]
// and Llama 3's header blocks. Hugging Face ships these as Jinja templates in
// tokenizer_config.json; instead of a Jinja interpreter we recognise which of the three a
// template is and render it here.
//
//   nnx::ChatTemplate t = nnx::chat_template_from_name("llama-3");
//   std::string prompt = nnx::render_chat(t, {{"system", "Be brief."}, {"user", "Hi"}});
//   // encode with add_special_tokens = false: the rendered text carries its own BOS
#pragma once

#include <filesystem>
#include <fstream>
#include <iterator>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "nnx/core/error.hpp"
#include "nnx/io/json.hpp"

namespace nnx {

enum class ChatTemplate { chatml, llama2, llama3 };

struct ChatMessage {
  std::string role;  // system, user or assistant
  std::string content;
};

inline std::string_view chat_template_name(ChatTemplate t) {
  switch (t) {
    case ChatTemplate::chatml: return "chatml";
    case ChatTemplate::llama2: return "llama-2";
    case ChatTemplate::llama3: return "llama-3";
  }
  return "?";
}

inline ChatTemplate chat_template_from_name(std::string_view name) {
  if (name == "chatml") return ChatTemplate::chatml;
  if (name == "llama-2" || name == "llama2") return ChatTemplate::llama2;
  if (name == "llama-3" || name == "llama3") return ChatTemplate::llama3;
  throw InvalidArgument("unknown chat template \"" + std::string(name) + "\" (chatml, llama-2, llama-3)");
}

// Which of the three a Jinja chat template is, by the markers only it uses.
inline std::optional<ChatTemplate> detect_chat_template(std::string_view jinja) {
  if (jinja.find("<|start_header_id|>") != std::string_view::npos) return ChatTemplate::llama3;
  if (jinja.find("<|im_start|>") != std::string_view::npos) return ChatTemplate::chatml;
  if (jinja.find("[INST]") != std::string_view::npos) return ChatTemplate::llama2;
  return std::nullopt;
}

// The template a model directory's tokenizer_config.json names ("chat_template": a string),
// if it is one of the three; nullopt when there is no such file or key. A file that is not
// JSON, or a template of another kind, is InvalidArgument naming the file.
inline std::optional<ChatTemplate> chat_template_of(const std::filesystem::path& model_dir) {
  const std::filesystem::path file = model_dir / "tokenizer_config.json";
  if (!std::filesystem::is_regular_file(file)) return std::nullopt;
  nlohmann::json j;
  try {
    std::ifstream in(file, std::ios::binary);
    const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (!in) throw InvalidArgument("cannot be read");
    j = io::parse_json_strict(text);
  } catch (const InvalidArgument& e) {
    throw InvalidArgument(file.string() + ": " + e.what());
  }
  const auto it = j.find("chat_template");
  if (it == j.end() || it->is_null()) return std::nullopt;
  if (!it->is_string())
    throw InvalidArgument(file.string() + ": \"chat_template\" is not a string (a list of named templates is not "
                          "supported); pass --chat-template");
  if (auto t = detect_chat_template(it->get_ref<const std::string&>())) return t;
  throw InvalidArgument(file.string() + ": its chat_template is none of chatml, llama-2, llama-3; pass --chat-template");
}

namespace detail::chat {

inline std::string_view trim(std::string_view s) {
  const auto space = [](char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; };
  while (!s.empty() && space(s.front())) s.remove_prefix(1);
  while (!s.empty() && space(s.back())) s.remove_suffix(1);
  return s;
}

}  // namespace detail::chat

// The prompt for `messages`, ending where the assistant's reply begins. Roles other than
// system, user and assistant, an empty list, and (llama-2) a system message anywhere but first
// are InvalidArgument. Llama templates strip each content's surrounding whitespace, as theirs
// do.
inline std::string render_chat(ChatTemplate t, const std::vector<ChatMessage>& messages) {
  if (messages.empty()) throw InvalidArgument("\"messages\" is empty");
  for (std::size_t i = 0; i < messages.size(); ++i) {
    const std::string& r = messages[i].role;
    if (r != "system" && r != "user" && r != "assistant")
      throw InvalidArgument("messages[" + std::to_string(i) + "]: unknown role \"" + r +
                            "\" (system, user, assistant)");
  }
  std::string out;
  switch (t) {
    case ChatTemplate::chatml:
      for (const ChatMessage& m : messages) out += "<|im_start|>" + m.role + "\n" + m.content + "<|im_end|>\n";
      out += "<|im_start|>assistant\n";
      break;
    case ChatTemplate::llama3:
      out = "<|begin_of_text|>";
      for (const ChatMessage& m : messages)
        out += "<|start_header_id|>" + m.role + "<|end_header_id|>\n\n" + std::string(detail::chat::trim(m.content)) +
               "<|eot_id|>";
      out += "<|start_header_id|>assistant<|end_header_id|>\n\n";
      break;
    case ChatTemplate::llama2: {
      // <s>[INST] <<SYS>>\n{system}\n<</SYS>>\n\n{user} [/INST] {assistant} </s><s>[INST] {user} [/INST]
      std::string system;
      std::size_t i = 0;
      if (messages[0].role == "system") system = std::string(detail::chat::trim(messages[i++].content));
      bool expect_user = true;
      for (; i < messages.size(); ++i) {
        const ChatMessage& m = messages[i];
        if (m.role == "system") throw InvalidArgument("llama-2 chat: a system message must come first");
        if ((m.role == "user") != expect_user)
          throw InvalidArgument("llama-2 chat: messages[" + std::to_string(i) + "] must be from the " +
                                (expect_user ? "user" : "assistant") + " (the roles alternate)");
        const std::string content(detail::chat::trim(m.content));
        if (expect_user) {
          out += "<s>[INST] ";
          if (!system.empty()) {
            out += "<<SYS>>\n" + system + "\n<</SYS>>\n\n";
            system.clear();
          }
          out += content + " [/INST]";
        } else {
          out += " " + content + " </s>";
        }
        expect_user = !expect_user;
      }
      if (expect_user) throw InvalidArgument("llama-2 chat: the last message must be from the user");
      break;
    }
  }
  return out;
}

// The text that ends an assistant turn in each format (a stop string when the tokenizer has
// no single token for it).
inline std::string_view chat_turn_end(ChatTemplate t) {
  switch (t) {
    case ChatTemplate::chatml: return "<|im_end|>";
    case ChatTemplate::llama2: return "</s>";
    case ChatTemplate::llama3: return "<|eot_id|>";
  }
  return "";
}

}  // namespace nnx
