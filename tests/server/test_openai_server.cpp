// The OpenAI-compatible server, driven over HTTP on a free loopback port: completions and
// chat, streamed and not, concurrent clients, logprobs, a client that disconnects, and the
// 400/401/404/413/429 paths. Tokens are checked against the engine's for the request alone.
#include <catch2/catch.hpp>

#include <cerrno>
#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <arpa/inet.h>
#include <httplib.h>
#include <netinet/in.h>
#include <nlohmann/json.hpp>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <nnx/engine.hpp>
#include <nnx/models.hpp>
#include <nnx/server/openai_server.hpp>
#include <nnx/text.hpp>

#include "../engine/engine_test_util.hpp"
#include "../support/byte_tokenizer.hpp"

using json = nlohmann::json;

namespace {

// A server on its own thread for one test; stopped and joined by the destructor.
struct RunningServer {
  nnx::Engine<nnx::Gpt2> engine;
  nnx::State params;
  std::shared_ptr<const nnx::text::Tokenizer> tokenizer;
  std::unique_ptr<nnx::OpenAIServer<nnx::Gpt2>> server;
  std::thread thread;
  int port = 0;

  // serve: false binds the port but accepts no connection until start().
  RunningServer(std::int64_t slots, std::size_t max_waiting, nnx::OpenAIServerOptions options = {},
                nnx::Gpt2Config config = engine_test::text_gpt2(128), bool serve = true)
      : engine(config, {.max_prefill_length = 16, .max_target_length = config.n_positions, .slots = slots}),
        params(engine.init_params(21)),
        tokenizer(std::make_shared<const nnx::text::Tokenizer>(
            nnx::text::Tokenizer::from_tokenizer_json(test_support::byte_tokenizer_json(), "byte_tokenizer"))) {
    options.port = 0;
    options.model_name = "tiny";
    if (!options.chat_template) options.chat_template = nnx::ChatTemplate::chatml;
    server = std::make_unique<nnx::OpenAIServer<nnx::Gpt2>>(nnx::Scheduler<nnx::Gpt2>(engine, params, tokenizer),
                                                            nnx::ServingLoopOptions{.max_waiting = max_waiting}, options);
    port = server->bind();
    if (serve) start();
  }
  void start() {
    thread = std::thread([this] { server->serve(); });
  }
  ~RunningServer() {
    if (!thread.joinable()) return;
    while (!server->running()) std::this_thread::yield();  // stop() before listening would be missed
    server->stop();
    thread.join();
  }
  httplib::Client client() const {
    httplib::Client c("127.0.0.1", port);
    c.set_read_timeout(60, 0);
    return c;
  }
};

json post(const RunningServer& s, const std::string& path, const json& body, int expect_status = 200) {
  auto res = s.client().Post(path.c_str(), body.dump(), "application/json");
  REQUIRE(res);
  INFO(res->body);
  CHECK(res->status == expect_status);
  return json::parse(res->body);
}

// The data lines of a server-sent event stream, [DONE] included.
std::vector<std::string> sse_data(const std::string& body) {
  std::vector<std::string> out;
  std::size_t at = 0;
  while ((at = body.find("data: ", at)) != std::string::npos) {
    const std::size_t end = body.find("\n\n", at);
    REQUIRE(end != std::string::npos);
    out.push_back(body.substr(at + 6, end - at - 6));
    at = end + 2;
  }
  return out;
}

std::vector<std::int32_t> alone(const RunningServer& s, const std::vector<std::int32_t>& prompt, std::int64_t n) {
  std::vector<std::int32_t> t = engine_test::greedy(s.engine, s.params, prompt, n);
  const auto eos = std::find(t.begin(), t.end(), test_support::kByteTokenizerEos);
  if (eos != t.end()) t.erase(eos + 1, t.end());  // the server stops at the tokenizer's EOS
  return t;
}

}  // namespace

TEST_CASE("server: health, models, completions streamed and not, with the engine's tokens", "[server]") {
  RunningServer s(/*slots=*/2, /*max_waiting=*/8);
  auto c = s.client();
  auto health = c.Get("/health");
  REQUIRE(health);
  CHECK(health->status == 200);
  const json models = json::parse(c.Get("/v1/models")->body);
  CHECK(models["data"][0]["id"] == "tiny");

  const std::string prompt = "The quick brown fox";
  const json body = {{"model", "tiny"}, {"prompt", prompt}, {"max_tokens", 12}, {"temperature", 0},
                     {"return_token_ids", true}};
  const json r = post(s, "/v1/completions", body);
  CHECK(r["object"] == "text_completion");
  const std::vector<std::int32_t> tokens = r["choices"][0]["token_ids"].get<std::vector<std::int32_t>>();
  CHECK(tokens == alone(s, s.tokenizer->encode(prompt), 12));
  CHECK(r["choices"][0]["text"] == s.tokenizer->decode(tokens, /*skip_special_tokens=*/true));
  CHECK(r["usage"]["prompt_tokens"] == s.tokenizer->encode(prompt).size());
  CHECK(r["usage"]["completion_tokens"] == tokens.size());

  // Streamed: the same text in pieces, a finish reason, usage, then [DONE].
  json stream_body = body;
  stream_body["stream"] = true;
  stream_body["stream_options"] = {{"include_usage", true}};
  auto res = c.Post("/v1/completions", stream_body.dump(), "application/json");
  REQUIRE(res);
  CHECK(res->status == 200);
  CHECK(res->get_header_value("Content-Type").find("text/event-stream") == 0);
  const std::vector<std::string> events = sse_data(res->body);
  REQUIRE(events.size() >= 3);
  CHECK(events.back() == "[DONE]");
  std::string text;
  std::string finish;
  for (std::size_t i = 0; i + 2 < events.size(); ++i) {
    const json e = json::parse(events[i]);
    text += e["choices"][0]["text"].get<std::string>();
    if (!e["choices"][0]["finish_reason"].is_null()) finish = e["choices"][0]["finish_reason"];
  }
  CHECK(text == r["choices"][0]["text"]);
  CHECK(finish == r["choices"][0]["finish_reason"]);
  CHECK(json::parse(events[events.size() - 2])["usage"] == r["usage"]);

  SECTION("prompt given as token ids") {
    json ids_body = body;
    ids_body["prompt"] = s.tokenizer->encode(prompt);
    CHECK(post(s, "/v1/completions", ids_body)["choices"][0]["token_ids"] == r["choices"][0]["token_ids"]);
  }
  SECTION("n choices: choice j samples with seed + j") {
    json n_body = {{"prompt", prompt}, {"max_tokens", 8}, {"n", 3}, {"seed", 40}, {"temperature", 1.0},
                   {"return_token_ids", true}};
    const json three = post(s, "/v1/completions", n_body);
    REQUIRE(three["choices"].size() == 3);
    for (int j = 0; j < 3; ++j) {
      n_body["n"] = 1;
      n_body["seed"] = 40 + j;
      CHECK(post(s, "/v1/completions", n_body)["choices"][0]["token_ids"] == three["choices"][j]["token_ids"]);
    }
  }
}

TEST_CASE("server: chat completions with a template, logprobs, stop strings", "[server]") {
  RunningServer s(2, 8);
  const json messages = json::array({{{"role", "system"}, {"content", "Be brief."}}, {{"role", "user"}, {"content", "Hi"}}});
  const json r = post(s, "/v1/chat/completions",
                      {{"messages", messages}, {"max_tokens", 10}, {"temperature", 0}, {"logprobs", true},
                       {"top_logprobs", 3}, {"return_token_ids", true}});
  CHECK(r["object"] == "chat.completion");
  CHECK(r["choices"][0]["message"]["role"] == "assistant");
  const auto prompt = s.tokenizer->encode(nnx::render_chat(nnx::ChatTemplate::chatml, {{"system", "Be brief."}, {"user", "Hi"}}),
                                          false);
  const auto tokens = r["choices"][0]["token_ids"].get<std::vector<std::int32_t>>();
  CHECK(tokens == alone(s, prompt, 10));
  const json& content = r["choices"][0]["logprobs"]["content"];
  REQUIRE(content.size() == tokens.size());
  for (std::size_t i = 0; i < tokens.size(); ++i) {
    CHECK(content[i]["top_logprobs"].size() == 3);
    CHECK(content[i]["logprob"].get<double>() <= 0.0);
    // greedy: the chosen token is the most likely
    CHECK(content[i]["logprob"].get<double>() == Approx(content[i]["top_logprobs"][0]["logprob"].get<double>()).margin(1e-6));
  }

  // A stop string cut from that reply's text ends a second identical request before it.
  const std::string reply = r["choices"][0]["message"]["content"];
  if (reply.size() >= 4) {
    const std::string stop = test_support::utf8_chars(reply, 2, 2);
    const json cut = post(s, "/v1/chat/completions",
                          {{"messages", messages}, {"max_tokens", 10}, {"temperature", 0}, {"stop", stop}});
    CHECK(cut["choices"][0]["message"]["content"] == reply.substr(0, reply.find(stop)));
    CHECK(cut["choices"][0]["finish_reason"] == "stop");
  }
}

TEST_CASE("server: concurrent clients each get the tokens of their request alone", "[server]") {
  RunningServer s(3, 16);
  std::vector<std::string> prompts;
  for (int i = 0; i < 6; ++i) prompts.push_back("request number " + std::to_string(i) + std::string(static_cast<std::size_t>(i * 5), 'x'));
  std::vector<json> results(prompts.size());
  std::vector<std::thread> clients;
  for (std::size_t i = 0; i < prompts.size(); ++i)
    clients.emplace_back([&, i] {
      auto c = s.client();
      const json body = {{"prompt", prompts[i]}, {"max_tokens", 10}, {"temperature", 0}, {"return_token_ids", true},
                         {"stream", i % 2 == 0}};
      auto res = c.Post("/v1/completions", body.dump(), "application/json");
      if (res) results[i] = {{"status", res->status}, {"body", res->body}, {"stream", i % 2 == 0}};
    });
  for (auto& t : clients) t.join();
  for (std::size_t i = 0; i < prompts.size(); ++i) {
    INFO("request " << i);
    REQUIRE(results[i]["status"] == 200);
    std::vector<std::int32_t> tokens;
    const std::string body = results[i]["body"];
    if (results[i]["stream"]) {
      for (const std::string& e : sse_data(body))
        if (e != "[DONE]") {
          const json j = json::parse(e);
          if (j["choices"][0].contains("token_ids")) tokens = j["choices"][0]["token_ids"].get<std::vector<std::int32_t>>();
        }
    } else {
      tokens = json::parse(body)["choices"][0]["token_ids"].get<std::vector<std::int32_t>>();
    }
    CHECK(tokens == alone(s, s.tokenizer->encode(prompts[i]), 10));
  }
}

TEST_CASE("server: errors are OpenAI error objects and never disturb other requests", "[server]") {
  nnx::OpenAIServerOptions options;
  options.api_key = "sekrit";
  options.max_body_bytes = 4096;
  RunningServer s(1, 1, options);
  httplib::Headers auth = {{"Authorization", "Bearer sekrit"}};
  auto c = s.client();

  const auto expect_error = [](const httplib::Result& res, int status, const std::string& needle) {
    REQUIRE(res);
    INFO(res->body);
    CHECK(res->status == status);
    const json e = json::parse(res->body);
    CHECK(e["error"]["message"].get<std::string>().find(needle) != std::string::npos);
    CHECK(e["error"].contains("type"));
  };
  expect_error(c.Post("/v1/completions", R"({"prompt": "hi"})", "application/json"), 401, "API key");
  expect_error(c.Post("/v1/completions", {{"Authorization", "Bearer wrong"}}, "{}", "application/json"), 401, "API key");
  expect_error(c.Post("/v1/completions", auth, "{\"prompt\": ", "application/json"), 400, "not valid JSON");
  expect_error(c.Post("/v1/completions", auth, R"({"prompt": "hi", "max_tokens": -1})", "application/json"), 400,
               "max_tokens");
  expect_error(c.Post("/v1/completions", auth, R"({"prompt": "hi", "temperature": "hot"})", "application/json"), 400,
               "temperature");
  expect_error(c.Post("/v1/completions", auth, R"({"prompt": [1, 100000]})", "application/json"), 400, "vocabulary");
  expect_error(c.Post("/v1/completions", auth, R"({"prompt": "hi", "model": "gpt-4"})", "application/json"), 404,
               "gpt-4");
  expect_error(c.Post("/v1/completions", auth, json{{"prompt", std::string(5000, 'a')}}.dump(), "application/json"),
               413, "larger");
  expect_error(c.Get("/v1/nothing", auth), 404, "no route");
  CHECK(c.Get("/health")->status == 200);  // open without the key

  // A full queue answers 429 (ServingLoop's bound is tested in tests/engine/test_scheduler.cpp;
  // here a server whose queue holds nothing).
  {
    RunningServer full(1, 0);
    auto fc = full.client();
    expect_error(fc.Post("/v1/completions", R"({"prompt": "c", "max_tokens": 2})", "application/json"), 429, "full");
    expect_error(fc.Post("/v1/completions", R"({"prompt": "c", "stream": true})", "application/json"), 429, "full");
  }
  auto ok = c.Post("/v1/completions", auth, R"({"prompt": "c", "max_tokens": 2, "temperature": 0})", "application/json");
  REQUIRE(ok);
  CHECK(ok->status == 200);
  const std::string metrics = c.Get("/metrics")->body;
  CHECK(metrics.find("nnx_http_responses_total{code=\"401\"} 2") != std::string::npos);
}

TEST_CASE("server: a client that disconnects cancels its request and frees its slot", "[server]") {
  // Wide and long enough that the 2000 tokens take far longer than noticing the disconnect.
  nnx::Gpt2Config big = engine_test::text_gpt2(128);
  big.n_embd = 256;
  big.n_layer = 4;
  big.n_positions = 2048;
  RunningServer s(1, 4, {}, big);
  {
    httplib::Client c("127.0.0.1", s.port);
    int events = 0;
    const json body = {{"prompt", "go on"}, {"max_tokens", 2000}, {"ignore_eos", true}, {"stream", true}};
    // Reads three chunks, then aborts: httplib closes the connection.
    httplib::Request req;
    req.method = "POST";
    req.path = "/v1/completions";
    req.body = body.dump();
    req.set_header("Content-Type", "application/json");
    req.content_receiver = [&](const char*, std::size_t, std::uint64_t, std::uint64_t) { return ++events < 3; };
    (void)c.send(req);
    CHECK(events == 3);
  }
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (s.server->load().running > 0 && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  CHECK(s.server->load().running == 0);
  const std::string metrics = s.client().Get("/metrics")->body;
  CHECK(metrics.find("nnx_requests_total{finish_reason=\"cancelled\"} 1") != std::string::npos);
  CHECK(metrics.find("nnx_slots_busy 0") != std::string::npos);
}

TEST_CASE("server: a non-streamed client that hangs up cancels its request", "[server]") {
  nnx::Gpt2Config big = engine_test::text_gpt2(128);
  big.n_embd = 256;
  big.n_layer = 4;
  big.n_positions = 2048;
  RunningServer s(1, 4, {}, big);
  {
    // Hangs up at the first byte: the whitespace the server writes while the response is not
    // ready, long before 2000 tokens are done.
    httplib::Client c("127.0.0.1", s.port);
    httplib::Request req;
    req.method = "POST";
    req.path = "/v1/completions";
    req.body = json({{"prompt", "go on"}, {"max_tokens", 2000}, {"ignore_eos", true}}).dump();
    req.set_header("Content-Type", "application/json");
    std::string received;
    req.content_receiver = [&](const char* data, std::size_t n, std::uint64_t, std::uint64_t) {
      received.append(data, n);
      return false;
    };
    (void)c.send(req);
    CHECK(received == " ");
  }
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (s.server->load().running > 0 && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  CHECK(s.server->load().running == 0);
  CHECK(s.client().Get("/metrics")->body.find("nnx_requests_total{finish_reason=\"cancelled\"} 1") != std::string::npos);
}

TEST_CASE("server: completions logprobs, streamed and not, with text offsets from the prompt's start", "[server]") {
  RunningServer s(2, 8);
  const std::string prompt = "Once upon a";
  const json body = {{"prompt", prompt}, {"max_tokens", 6}, {"temperature", 0}, {"logprobs", 2},
                     {"return_token_ids", true}, {"ignore_eos", true}};
  const json r = post(s, "/v1/completions", body);
  const auto ids = r["choices"][0]["token_ids"].get<std::vector<std::int32_t>>();
  const json& lp = r["choices"][0]["logprobs"];
  REQUIRE(ids.size() == 6);
  REQUIRE(lp["text_offset"].size() == 6);
  std::int64_t offset = static_cast<std::int64_t>(prompt.size());
  for (std::size_t i = 0; i < ids.size(); ++i) {
    CHECK(lp["text_offset"][i] == offset);
    offset += static_cast<std::int64_t>(s.tokenizer->token_bytes(ids[i]).size());
    // Greedy: the chosen token is the most likely, so its logprob is the largest alternative's.
    double best = -1e300;
    for (const auto& [token, logprob] : lp["top_logprobs"][i].items()) best = std::max(best, logprob.get<double>());
    CHECK(lp["token_logprobs"][i].get<double>() == Approx(best).margin(1e-6));
  }

  json stream_body = body;
  stream_body["stream"] = true;
  auto res = s.client().Post("/v1/completions", stream_body.dump(), "application/json");
  REQUIRE(res);
  json offsets = json::array(), logprobs = json::array();
  for (const std::string& e : sse_data(res->body)) {
    if (e == "[DONE]") continue;
    const json event = json::parse(e);
    const json& c = event["choices"][0];
    if (c["logprobs"].is_null()) continue;
    for (const json& o : c["logprobs"]["text_offset"]) offsets.push_back(o);
    for (const json& l : c["logprobs"]["token_logprobs"]) logprobs.push_back(l);
  }
  CHECK(offsets == lp["text_offset"]);
  CHECK(logprobs == lp["token_logprobs"]);
}

TEST_CASE("server: a burst of connections is queued at once, and a taken port is refused", "[server]") {
  RunningServer s(1, 4, {}, engine_test::text_gpt2(128), /*serve=*/false);
  // Nothing accepts yet: every connection must wait in the listen backlog (httplib's own is 5,
  // and a connection over it has its SYN dropped and retried a second later).
  constexpr int kConnections = 32;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<std::uint16_t>(s.port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  std::vector<pollfd> fds;
  for (int i = 0; i < kConnections; ++i) {
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    REQUIRE(fd >= 0);
    const int rc = ::connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr));
    CHECK((rc == 0 || errno == EINPROGRESS));
    fds.push_back({fd, POLLOUT, 0});
  }
  // Loopback handshakes complete in microseconds; 500 ms is far below the 1 s SYN retry.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(500);
  int connected = 0;
  for (pollfd& p : fds) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (::poll(&p, 1, static_cast<int>(std::max<std::int64_t>(left.count(), 0))) == 1) {
      int err = -1;
      socklen_t len = sizeof(err);
      ::getsockopt(p.fd, SOL_SOCKET, SO_ERROR, &err, &len);
      connected += err == 0;
    }
  }
  CHECK(connected == kConnections);
  for (const pollfd& p : fds) ::close(p.fd);

  nnx::OpenAIServerOptions same_port;
  same_port.port = s.port;
  nnx::OpenAIServer<nnx::Gpt2> second(nnx::Scheduler<nnx::Gpt2>(s.engine, s.params, s.tokenizer), {}, same_port);
  CHECK_THROWS_WITH(second.bind(), Catch::Contains("cannot listen on 127.0.0.1:" + std::to_string(s.port)));

  s.start();
  auto health = s.client().Get("/health");
  REQUIRE(health);
  CHECK(health->status == 200);
}
