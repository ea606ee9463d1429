// nnx/server/openai_server.hpp — an HTTP server speaking OpenAI's completions API over a
// ServingLoop, on cpp-httplib (Debian's libcpp-httplib-dev; link the CMake target
// nnxcpp::server). examples/server is a command line around it.
//
//   nnx::OpenAIServer<nnx::Gpt2> server(nnx::Scheduler<nnx::Gpt2>(engine, params, tokenizer),
//                                       {.max_waiting = 64}, {.port = 8080, .model_name = "gpt2"});
//   server.bind();    // throws if the address is taken
//   server.serve();   // until stop()
//
// Endpoints: POST /v1/completions, POST /v1/chat/completions (both with "stream": true as
// server-sent events ending with "data: [DONE]"), GET /v1/models, GET /health, GET /metrics
// (Prometheus text). Request fields: model, prompt (a string, one string in an array, or token
// ids) or messages, max_tokens (max_completion_tokens), temperature (default 1), top_p, top_k,
// seed, stop (a string or up to 16), logprobs (completions: 0-20 alternatives; chat: true, with
// top_logprobs), n (choice j uses seed + j), stream, stream_options.include_usage; and as
// extensions return_token_ids (each choice gets "token_ids"), stop_token_ids and ignore_eos.
// Unknown fields are ignored. A request without a seed draws one at random (its response
// carries no way to replay it; pass a seed for reproducible sampling).
//
// Errors are OpenAI error objects ({"error": {"message", "type", "param", "code"}}): 400 for
// malformed JSON or a bad field (naming it), 401 without the API key, 404 for an unknown route
// or model, 413 for a body over the limit, 429 when the queue is full. A bad request never
// disturbs the others. A client that disconnects cancels its request, freeing its slot at the
// loop's next step (streams notice at the next token; non-streamed responses write a space,
// which JSON allows, every second while they wait, and notice then).
//
// A request's tokens are the engine's for it alone: the same through this server, through
// examples/serve_batch and through Engine calls, at any slot count.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cerrno>
#include <csignal>
#include <cstdint>
#include <cstring>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include <httplib.h>
#include <nlohmann/json.hpp>
#include <sys/socket.h>

#include "nnx/core/error.hpp"
#include "nnx/engine/request.hpp"
#include "nnx/engine/scheduler.hpp"
#include "nnx/engine/serving_loop.hpp"
#include "nnx/io/json.hpp"
#include "nnx/server/chat_template.hpp"
#include "nnx/server/metrics.hpp"
#include "nnx/text/tokenizer.hpp"

namespace nnx {

struct OpenAIServerOptions {
  std::string host = "127.0.0.1";
  int port = 8080;  // 0: any free port (bind() returns it)
  std::string model_name = "nnxcpp";  // what /v1/models lists and responses echo
  std::string api_key;                // non-empty: /v1/* need "Authorization: Bearer <key>"
  std::size_t max_body_bytes = 1 << 20;
  std::optional<ChatTemplate> chat_template;  // none: /v1/chat/completions answers 400
  std::int64_t max_n = 8;                     // choices per request at most
  std::size_t http_threads = 0;  // connections served at once; 0: slots + max_waiting + 8
};

namespace detail::server {

using json = nlohmann::json;

// JSON text of `j`; invalid UTF-8 (a token's bytes may be half a character) becomes U+FFFD.
inline std::string dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

inline json error_body(const std::string& message, const char* type, const json& param = nullptr,
                       const json& code = nullptr) {
  return json{{"error", {{"message", message}, {"type", type}, {"param", param}, {"code", code}}}};
}

inline const char* error_type(int status) {
  switch (status) {
    case 401: return "authentication_error";
    case 404: return "not_found_error";
    case 429: return "rate_limit_error";
    default: return status >= 500 ? "server_error" : "invalid_request_error";
  }
}

inline void send_error(httplib::Response& res, int status, const std::string& message) {
  res.status = status;
  res.set_content(dump(error_body(message, error_type(status))), "application/json");
}

inline const char* finish_reason(FinishReason r) {
  switch (r) {
    case FinishReason::stop_token:
    case FinishReason::stop_string: return "stop";
    case FinishReason::max_new_tokens: return "length";
    case FinishReason::cancelled: return "cancelled";
    default: return "error";
  }
}

inline std::int64_t get_int(const json& body, const char* key, std::int64_t min, std::int64_t max,
                            const char* expected) {
  return nnx::detail::request::integer(body.at(key), std::string("\"") + key + "\"", min, max, expected);
}

inline double get_number(const json& body, const char* key) {
  const json& v = body.at(key);
  if (!v.is_number()) throw InvalidArgument(std::string("\"") + key + "\" must be a number, got " + v.dump());
  return v.get<double>();
}

inline bool get_bool(const json& body, const char* key) {
  const json& v = body.at(key);
  if (!v.is_boolean()) throw InvalidArgument(std::string("\"") + key + "\" must be true or false, got " + v.dump());
  return v.get<bool>();
}

inline bool has(const json& body, const char* key) { return body.contains(key) && !body.at(key).is_null(); }

}  // namespace detail::server

template <EngineModel Model>
class OpenAIServer {
 public:
  OpenAIServer(Scheduler<Model> scheduler, ServingLoopOptions loop_options, OpenAIServerOptions options)
      : options_(std::move(options)), loop_(std::move(scheduler), loop_options) {
    if (!loop_.tokenizer()) throw InvalidArgument("the OpenAI server needs a tokenizer");
    // A client that closes its connection makes the next write raise SIGPIPE, which would end
    // the process: the write must fail instead (and cancel that client's request).
    std::signal(SIGPIPE, SIG_IGN);
    const std::size_t threads = options_.http_threads
                                    ? options_.http_threads
                                    : static_cast<std::size_t>(loop_.engine().num_slots()) + loop_options.max_waiting + 8;
    http_.new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
    // httplib's default options set SO_REUSEPORT, which lets a second server bind the same port
    // and silently share its connections; SO_REUSEADDR alone allows a quick restart. The socket
    // is kept so bind() can raise its listen backlog.
    http_.set_socket_options([this](::socket_t sock) {
      int yes = 1;
      ::setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
      listen_socket_ = sock;
    });
    // A client library's connection pool may reuse a connection for many requests.
    http_.set_keep_alive_max_count(std::size_t{1} << 20);
    // Each streamed token goes out as it is written: with Nagle's algorithm an event written
    // while the previous one is unacknowledged waits for the client's delayed ACK (~40 ms).
    http_.set_tcp_nodelay(true);
    routes();
  }
  // Stops listening; a thread running serve() must be joined before the server is destroyed.
  ~OpenAIServer() { stop(); }
  OpenAIServer(const OpenAIServer&) = delete;
  OpenAIServer& operator=(const OpenAIServer&) = delete;

  // Binds options().host:port; returns the port (the one chosen when port is 0). Throws
  // InvalidArgument when the address cannot be bound.
  int bind() {
    const int port = options_.port == 0 ? http_.bind_to_any_port(options_.host)
                                        : (http_.bind_to_port(options_.host, options_.port) ? options_.port : -1);
    if (port < 0)
      throw InvalidArgument("cannot listen on " + options_.host + ":" + std::to_string(options_.port) +
                            " (address in use, or not an address of this machine)");
    // Debian's httplib listens with a backlog of 5: a burst of more connections than that had
    // its SYNs dropped and waited a second for the retransmission. listen() again on the bound
    // socket only raises the backlog.
    if (::listen(listen_socket_, SOMAXCONN) != 0)
      throw InvalidArgument("cannot listen on " + options_.host + ":" + std::to_string(port) + ": " +
                            std::strerror(errno));
    port_ = port;
    return port;
  }
  // Serves until stop() (bind() first).
  void serve() { http_.listen_after_bind(); }
  void stop() { http_.stop(); }
  bool running() const { return http_.is_running(); }
  int port() const { return port_; }
  const OpenAIServerOptions& options() const { return options_; }
  ServingLoad load() const { return loop_.load(); }

 private:
  using json = nlohmann::json;

  // One HTTP generation request: its n choices run as n scheduler requests whose callbacks (on
  // the loop thread) queue response text for the HTTP thread.
  struct Call {
    std::mutex mutex;
    std::condition_variable ready;
    std::deque<std::string> chunks;  // server-sent events to write (streaming)
    std::vector<std::optional<Completion>> results;
    std::size_t pending = 0;  // choices not finished
    std::vector<std::int64_t> text_offsets;  // streaming: each choice's next text_offset (loop thread only)
  };

  // A parsed generation request.
  struct Generation {
    bool chat = false, stream = false, include_usage = false, return_token_ids = false;
    std::int64_t n = 1;
    std::int64_t prompt_bytes = 0;  // the prompt's text length: where completions' text_offset starts
    Request request;  // prompt ids, sampling, seed of choice 0, stops, logprobs
  };

  void routes() {
    namespace d = detail::server;
    http_.set_payload_max_length(options_.max_body_bytes);
    http_.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
      if (options_.api_key.empty() || req.path.rfind("/v1/", 0) != 0) return httplib::Server::HandlerResponse::Unhandled;
      if (req.get_header_value("Authorization") == "Bearer " + options_.api_key)
        return httplib::Server::HandlerResponse::Unhandled;
      d::send_error(res, 401, "a valid API key is required (Authorization: Bearer <key>)");
      return httplib::Server::HandlerResponse::Handled;
    });
    // Statuses httplib sets itself (404 route, 413 body too large, 400 bad HTTP) get an error
    // object too.
    http_.set_error_handler([](const httplib::Request& req, httplib::Response& res) {
      if (!res.body.empty()) return;
      std::string message = res.status == 404   ? "no route " + req.method + " " + req.path
                            : res.status == 413 ? "the request body is larger than the server's limit"
                                                : "HTTP " + std::to_string(res.status);
      d::send_error(res, res.status, message);
    });
    http_.set_exception_handler([](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
      std::string what = "internal error";
      try {
        std::rethrow_exception(ep);
      } catch (const std::exception& e) {
        what = e.what();
      } catch (...) {
      }
      d::send_error(res, 500, what);
    });
    http_.set_logger([this](const httplib::Request&, const httplib::Response& res) { metrics_.response(res.status); });

    http_.Get("/health", [](const httplib::Request&, httplib::Response& res) {
      res.set_content(R"({"status":"ok"})", "application/json");
    });
    http_.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
      res.set_content(metrics_.prometheus(loop_.load()), "text/plain; version=0.0.4");
    });
    http_.Get("/v1/models", [this](const httplib::Request&, httplib::Response& res) {
      const json model = {{"id", options_.model_name}, {"object", "model"}, {"created", created_}, {"owned_by", "nnxcpp"},
                          {"max_model_len", loop_.engine().max_target_length()}};
      res.set_content(d::dump(json{{"object", "list"}, {"data", json::array({model})}}), "application/json");
    });
    http_.Post("/v1/completions",
               [this](const httplib::Request& req, httplib::Response& res) { generate(req, res, /*chat=*/false); });
    http_.Post("/v1/chat/completions",
               [this](const httplib::Request& req, httplib::Response& res) { generate(req, res, /*chat=*/true); });
  }

  void generate(const httplib::Request& req, httplib::Response& res, bool chat) {
    namespace d = detail::server;
    std::shared_ptr<const Generation> gen;
    try {
      json body;
      try {
        body = io::parse_json_strict(req.body);
      } catch (const InvalidArgument& e) {
        throw InvalidArgument(std::string("the body is not valid JSON: ") + e.what());
      }
      if (!body.is_object()) throw InvalidArgument(std::string("the body must be a JSON object, got ") + body.type_name());
      if (d::has(body, "model") &&
          (!body["model"].is_string() || body["model"].get_ref<const std::string&>() != options_.model_name))
        return d::send_error(res, 404, "the model " + body["model"].dump() + " does not exist; this server serves \"" +
                                           options_.model_name + "\"");
      gen = std::make_shared<const Generation>(parse(body, chat));
    } catch (const InvalidArgument& e) {
      return d::send_error(res, 400, e.what());
    }

    const Generation& g = *gen;
    auto call = std::make_shared<Call>();
    call->results.resize(static_cast<std::size_t>(g.n));
    call->pending = static_cast<std::size_t>(g.n);
    call->text_offsets.assign(static_cast<std::size_t>(g.n), g.prompt_bytes);
    const std::string id = (chat ? "chatcmpl-" : "cmpl-") + std::to_string(next_id_++);
    std::vector<std::string> submitted;
    try {
      for (std::int64_t j = 0; j < g.n; ++j) {
        Request r = g.request;
        r.seed += static_cast<std::uint64_t>(j);
        std::string rid = id + "-" + std::to_string(j);
        loop_.submit(rid, std::move(r), callbacks(call, gen, id, j));
        submitted.push_back(std::move(rid));
      }
    } catch (const Error& e) {
      for (std::string& rid : submitted) loop_.cancel(std::move(rid));
      return d::send_error(res, dynamic_cast<const QueueFull*>(&e) ? 429 : 400, e.what());
    }

    const auto cancel_all = [this, submitted] {
      for (const std::string& rid : submitted) loop_.cancel(rid);
    };
    if (g.stream) {
      res.set_header("Cache-Control", "no-cache");
      res.set_chunked_content_provider(
          "text/event-stream",
          [call, cancel_all](std::size_t, httplib::DataSink& sink) {
            std::unique_lock lock(call->mutex);
            call->ready.wait_for(lock, std::chrono::seconds(1), [&] { return !call->chunks.empty(); });
            std::deque<std::string> chunks;
            chunks.swap(call->chunks);
            const bool finished = call->pending == 0;
            lock.unlock();
            // An SSE comment keeps an idle stream (a queued request) probing its connection.
            if (chunks.empty() && !finished) chunks.push_back(": waiting\n\n");
            for (const std::string& c : chunks)
              if (!sink.write(c.data(), c.size())) {
                cancel_all();
                return false;
              }
            if (finished) sink.done();  // the last choice queued [DONE] with its final chunk
            return true;
          },
          [cancel_all](bool success) {
            if (!success) cancel_all();
          });
    } else {
      res.set_chunked_content_provider(
          "application/json",
          [this, call, gen, id, cancel_all](std::size_t, httplib::DataSink& sink) {
            std::unique_lock lock(call->mutex);
            // A write to a closed connection fails only at the second probe (the first draws the
            // peer's reset), so probing every half second notices a disconnect within a second.
            if (!call->ready.wait_for(lock, std::chrono::milliseconds(500), [&] { return call->pending == 0; })) {
              lock.unlock();
              if (!sink.write(" ", 1)) {  // JSON may begin with whitespace: this only probes the client
                cancel_all();
                return false;
              }
              return true;
            }
            const std::string body = detail::server::dump(response(*call, *gen, id));
            lock.unlock();
            if (!sink.write(body.data(), body.size())) return false;
            sink.done();
            return true;
          },
          [cancel_all](bool success) {
            if (!success) cancel_all();
          });
    }
  }

  // ---- parsing ----

  Generation parse(const json& body, bool chat) const {
    namespace d = detail::server;
    const text::Tokenizer& tok = *loop_.tokenizer();
    constexpr std::int64_t i64_max = std::numeric_limits<std::int64_t>::max();
    Generation g;
    g.chat = chat;
    Request& r = g.request;
    if (chat) {
      if (!options_.chat_template)
        throw InvalidArgument("this server has no chat template (start it with --chat-template chatml|llama-2|llama-3)");
      if (!d::has(body, "messages")) throw InvalidArgument("missing \"messages\"");
      const json& m = body["messages"];
      if (!m.is_array()) throw InvalidArgument("\"messages\" must be an array, got " + m.dump());
      std::vector<ChatMessage> messages;
      for (std::size_t i = 0; i < m.size(); ++i) messages.push_back(message(m[i], i));
      r.prompt = tok.encode(render_chat(*options_.chat_template, messages), /*add_special_tokens=*/false);
      const std::string_view turn_end = chat_turn_end(*options_.chat_template);
      if (auto id = tok.token_id(turn_end))
        r.stop.stop_ids.push_back(*id);
      else
        r.stop_strings.emplace_back(turn_end);
    } else {
      if (!d::has(body, "prompt")) throw InvalidArgument("missing \"prompt\"");
      const json& p = body["prompt"];
      r.prompt = prompt(p, tok);
      const json& text = p.is_array() && p.size() == 1 ? p[0] : p;
      g.prompt_bytes = static_cast<std::int64_t>(text.is_string() ? text.get_ref<const std::string&>().size()
                                                                  : tok.decode(r.prompt).size());
    }
    if (r.prompt.empty()) throw InvalidArgument("the prompt encodes to no tokens");

    const char* max_key = chat && d::has(body, "max_completion_tokens") ? "max_completion_tokens" : "max_tokens";
    if (d::has(body, max_key))
      r.stop.max_new_tokens = d::get_int(body, max_key, 1, i64_max, "an integer >= 1");
    else if (!chat)
      r.stop.max_new_tokens = 16;  // OpenAI's default for completions; chat runs to the context's end
    if (r.stop.max_new_tokens) {  // OpenAI cuts max_tokens at the context instead of failing
      const std::int64_t room = loop_.engine().max_target_length() - static_cast<std::int64_t>(r.prompt.size());
      if (room >= 1) r.stop.max_new_tokens = std::min(*r.stop.max_new_tokens, room);
    }
    r.sampling.temperature = d::has(body, "temperature") ? d::get_number(body, "temperature") : 1.0;
    if (d::has(body, "top_p")) r.sampling.top_p = d::get_number(body, "top_p");
    if (d::has(body, "top_k")) r.sampling.top_k = d::get_int(body, "top_k", 0, i64_max, "an integer >= 0");
    r.seed = d::has(body, "seed") ? static_cast<std::uint64_t>(d::get_int(body, "seed", std::numeric_limits<std::int64_t>::min(),
                                                                           i64_max, "an integer"))
                                  : random_seed();
    if (d::has(body, "stop"))
      for (std::string& s : nnx::detail::request::stop_strings(body["stop"])) r.stop_strings.push_back(std::move(s));
    if (d::has(body, "stop_token_ids"))
      for (std::int32_t id : nnx::detail::request::token_ids(body["stop_token_ids"], "stop_token_ids", false))
        r.stop.stop_ids.push_back(id);
    if (!(d::has(body, "ignore_eos") && d::get_bool(body, "ignore_eos")))
      if (auto eos = tok.eos_id()) r.stop.stop_ids.push_back(*eos);
    if (chat) {
      if (d::has(body, "logprobs") && d::get_bool(body, "logprobs"))
        r.logprobs = d::has(body, "top_logprobs")
                         ? static_cast<std::int32_t>(d::get_int(body, "top_logprobs", 0, kMaxTopLogprobs, "in [0, 20]"))
                         : 0;
    } else if (d::has(body, "logprobs")) {
      r.logprobs = static_cast<std::int32_t>(d::get_int(body, "logprobs", 0, kMaxTopLogprobs, "an integer in [0, 20]"));
    }
    if (d::has(body, "n")) g.n = d::get_int(body, "n", 1, options_.max_n, "an integer in [1, max_n]");
    if (d::has(body, "stream")) g.stream = d::get_bool(body, "stream");
    if (d::has(body, "stream_options")) {
      const json& so = body["stream_options"];
      if (!so.is_object()) throw InvalidArgument("\"stream_options\" must be an object, got " + so.dump());
      if (d::has(so, "include_usage")) g.include_usage = d::get_bool(so, "include_usage");
    }
    if (d::has(body, "return_token_ids")) g.return_token_ids = d::get_bool(body, "return_token_ids");
    return g;
  }

  static std::vector<std::int32_t> prompt(const json& p, const text::Tokenizer& tok) {
    if (p.is_string()) return tok.encode(p.get_ref<const std::string&>());
    if (p.is_array() && p.size() == 1 && (p[0].is_string() || p[0].is_array())) return prompt(p[0], tok);
    if (p.is_array() && !p.empty() && p[0].is_number()) return nnx::detail::request::token_ids(p, "prompt", true);
    throw InvalidArgument("\"prompt\" must be a string, an array of one string, or an array of token ids, got " +
                          detail::server::dump(p).substr(0, 200));
  }

  static ChatMessage message(const json& m, std::size_t i) {
    const std::string where = "messages[" + std::to_string(i) + "]";
    if (!m.is_object() || !m.contains("role") || !m["role"].is_string())
      throw InvalidArgument(where + " must be an object with a string \"role\"");
    ChatMessage out{m["role"].get<std::string>(), ""};
    const json& c = m.contains("content") ? m["content"] : json();
    if (c.is_string()) {
      out.content = c.get<std::string>();
    } else if (c.is_array()) {  // [{"type": "text", "text": ...}, ...]
      for (const json& part : c) {
        if (!part.is_object() || part.value("type", "") != "text" || !part.contains("text") || !part["text"].is_string())
          throw InvalidArgument(where + ".content: only parts {\"type\": \"text\", \"text\": ...} are supported");
        out.content += part["text"].get<std::string>();
      }
    } else if (!c.is_null()) {
      throw InvalidArgument(where + ".content must be a string or an array of text parts");
    }
    return out;
  }

  std::uint64_t random_seed() const {
    std::lock_guard lock(seed_mutex_);
    return seed_engine_();
  }

  // ---- responses ----

  RequestCallbacks callbacks(const std::shared_ptr<Call>& call, const std::shared_ptr<const Generation>& gen,
                             const std::string& id, std::int64_t choice) {
    RequestCallbacks cb;
    if (gen->stream)
      cb.on_token = [this, call, gen, id, choice](const TokenEvent& e) {
        const Generation& g = *gen;
        if (e.text.empty() && !g.request.logprobs && !(g.chat && e.index == 0)) return;
        json delta = g.chat ? json{{"content", std::string(e.text)}} : json();
        if (g.chat && e.index == 0) delta["role"] = "assistant";
        json c = choice_json(g, choice, std::string(e.text), delta);
        if (g.request.logprobs) {
          std::int64_t& offset = call->text_offsets[static_cast<std::size_t>(choice)];
          const TokenLogprobs token{e.token, e.log_prob, {e.top_logprobs.begin(), e.top_logprobs.end()}};
          c["logprobs"] = logprobs_json(g, {token}, offset);
          offset += static_cast<std::int64_t>(loop_.tokenizer()->token_bytes(e.token).size());
        }
        push(*call, chunk(g, id, json::array({c})));
      };
    cb.on_finish = [this, call, gen, id, choice](const Completion& c) {
      const Generation& g = *gen;
      metrics_.completion(c);
      std::lock_guard lock(call->mutex);
      call->results[static_cast<std::size_t>(choice)] = c;
      if (g.stream) {
        json ch = choice_json(g, choice, "", g.chat ? json::object() : json());
        ch["finish_reason"] = detail::server::finish_reason(c.finish);
        if (g.return_token_ids) ch["token_ids"] = c.tokens;
        call->chunks.push_back(chunk(g, id, json::array({ch})));
      }
      if (--call->pending == 0 && g.stream) {
        if (g.include_usage) call->chunks.push_back(sse(usage_chunk(*call, g, id)));
        call->chunks.push_back("data: [DONE]\n\n");
      }
      call->ready.notify_all();
    };
    return cb;
  }

  static void push(Call& call, std::string event) {
    {
      std::lock_guard lock(call.mutex);
      call.chunks.push_back(std::move(event));
    }
    call.ready.notify_all();
  }

  static std::string sse(const json& j) { return "data: " + detail::server::dump(j) + "\n\n"; }

  json envelope(const Generation& g, const std::string& id, bool chunked) const {
    return json{{"id", id},
                {"object", g.chat ? (chunked ? "chat.completion.chunk" : "chat.completion") : "text_completion"},
                {"created", now_seconds()},
                {"model", options_.model_name}};
  }

  std::string chunk(const Generation& g, const std::string& id, json choices) const {
    json j = envelope(g, id, true);
    j["choices"] = std::move(choices);
    return sse(j);
  }

  static json choice_json(const Generation& g, std::int64_t choice, const std::string& text, json delta) {
    json c = {{"index", choice}, {"logprobs", nullptr}, {"finish_reason", nullptr}};
    if (g.chat)
      c["delta"] = std::move(delta);
    else
      c["text"] = text;
    return c;
  }

  json usage(const Call& call) const {
    std::int64_t completion = 0, prompt = 0;
    for (const auto& r : call.results)
      if (r) {
        completion += static_cast<std::int64_t>(r->tokens.size());
        prompt = r->prompt_tokens;
      }
    return json{{"prompt_tokens", prompt}, {"completion_tokens", completion}, {"total_tokens", prompt + completion}};
  }

  json usage_chunk(const Call& call, const Generation& g, const std::string& id) const {
    json j = envelope(g, id, true);
    j["choices"] = json::array();
    j["usage"] = usage(call);
    return j;
  }

  // The whole response of a non-streamed request (call's results all present).
  json response(const Call& call, const Generation& g, const std::string& id) const {
    json j = envelope(g, id, false);
    json choices = json::array();
    for (std::size_t k = 0; k < call.results.size(); ++k) {
      const Completion& c = *call.results[k];
      json ch = {{"index", k}, {"finish_reason", detail::server::finish_reason(c.finish)}, {"logprobs", nullptr}};
      if (g.chat)
        ch["message"] = {{"role", "assistant"}, {"content", c.text}};
      else
        ch["text"] = c.text;
      if (g.request.logprobs) ch["logprobs"] = logprobs_json(g, c.logprobs, g.prompt_bytes);
      if (g.return_token_ids) ch["token_ids"] = c.tokens;
      if (!c.error.empty()) ch["error"] = c.error;
      choices.push_back(std::move(ch));
    }
    j["choices"] = std::move(choices);
    j["usage"] = usage(call);
    return j;
  }

  // OpenAI's two logprobs shapes: chat {"content": [{token, logprob, bytes, top_logprobs}]},
  // completions {"tokens", "token_logprobs", "top_logprobs": [{token: logprob}], "text_offset"}.
  // text_offset counts from the start of the prompt, as OpenAI's does, in bytes (a token may be
  // part of a character); `offset` is the first token's.
  json logprobs_json(const Generation& g, const std::vector<TokenLogprobs>& tokens, std::int64_t offset) const {
    const text::Tokenizer& tok = *loop_.tokenizer();
    const auto bytes = [](const std::string& s) {
      json b = json::array();
      for (unsigned char ch : s) b.push_back(static_cast<int>(ch));
      return b;
    };
    if (g.chat) {
      json content = json::array();
      for (const TokenLogprobs& t : tokens) {
        const std::string s = tok.token_bytes(t.token);
        json top = json::array();
        for (const TokenLogprob& a : t.top) {
          const std::string as = tok.token_bytes(a.token);
          top.push_back({{"token", as}, {"logprob", a.log_prob}, {"bytes", bytes(as)}});
        }
        content.push_back({{"token", s}, {"logprob", t.log_prob}, {"bytes", bytes(s)}, {"top_logprobs", top}});
      }
      return json{{"content", content}};
    }
    json toks = json::array(), lps = json::array(), tops = json::array(), offsets = json::array();
    for (const TokenLogprobs& t : tokens) {
      const std::string s = tok.token_bytes(t.token);
      toks.push_back(s);
      lps.push_back(t.log_prob);
      json top = json::object();
      for (const TokenLogprob& a : t.top) top[tok.token_bytes(a.token)] = a.log_prob;
      tops.push_back(std::move(top));
      offsets.push_back(offset);
      offset += static_cast<std::int64_t>(s.size());
    }
    return json{{"tokens", toks}, {"token_logprobs", lps}, {"top_logprobs", tops}, {"text_offset", offsets}};
  }

  static std::int64_t now_seconds() {
    return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
  }

  OpenAIServerOptions options_;
  ServerMetrics metrics_;
  ServingLoop<Model> loop_;
  httplib::Server http_;
  int port_ = -1;
  ::socket_t listen_socket_ = -1;
  std::atomic<std::uint64_t> next_id_{1};
  std::int64_t created_ = now_seconds();
  mutable std::mutex seed_mutex_;
  mutable std::mt19937_64 seed_engine_{std::random_device{}()};
};

}  // namespace nnx
