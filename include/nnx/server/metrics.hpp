// nnx/server/metrics.hpp — the serving counters and latency histograms a server exposes at
// GET /metrics, in Prometheus' text format (version 0.0.4). Thread-safe: request handlers and
// the serving loop record into one ServerMetrics concurrently.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <mutex>
#include <sstream>
#include <string>

#include "nnx/engine/scheduler.hpp"
#include "nnx/engine/serving_loop.hpp"

namespace nnx {

// Cumulative buckets, as Prometheus histograms are: bucket i counts observations <= bound i.
class LatencyHistogram {
 public:
  // Seconds, from 1 ms to 60 s: decode steps of small models take ~1 ms, a queued request on
  // a busy server waits tens of seconds.
  static constexpr std::array<double, 14> kBounds = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                                     0.25,  0.5,    1.0,   2.5,  5.0,   10.0, 60.0};

  void observe(double seconds) {
    for (std::size_t i = 0; i < kBounds.size(); ++i) counts_[i] += seconds <= kBounds[i];
    ++count_;
    sum_ += seconds;
  }

  void write(std::ostringstream& out, const std::string& name, const std::string& help) const {
    out << "# HELP " << name << ' ' << help << "\n# TYPE " << name << " histogram\n";
    for (std::size_t i = 0; i < kBounds.size(); ++i)
      out << name << "_bucket{le=\"" << kBounds[i] << "\"} " << counts_[i] << '\n';
    out << name << "_bucket{le=\"+Inf\"} " << count_ << '\n'
        << name << "_sum " << sum_ << '\n'
        << name << "_count " << count_ << '\n';
  }

 private:
  std::array<std::uint64_t, kBounds.size()> counts_{};
  std::uint64_t count_ = 0;
  double sum_ = 0.0;
};

class ServerMetrics {
 public:
  // An HTTP response sent, by status code.
  void response(int status) {
    std::lock_guard lock(mutex_);
    ++responses_[status];
  }
  // A request that left the scheduler.
  void completion(const Completion& c) {
    std::lock_guard lock(mutex_);
    ++finished_[std::string(finish_reason_name(c.finish))];
    prompt_tokens_ += static_cast<std::uint64_t>(c.prompt_tokens);
    generated_tokens_ += c.tokens.size();
    if (!c.tokens.empty()) ttft_.observe(c.ttft_ms() / 1000.0);
    if (c.tokens.size() > 1) tpot_.observe(c.tpot_ms() / 1000.0);
  }

  std::string prometheus(const ServingLoad& load) const {
    std::lock_guard lock(mutex_);
    std::ostringstream out;
    out << "# HELP nnx_requests_total Generation requests finished, by finish reason.\n"
           "# TYPE nnx_requests_total counter\n";
    for (const auto& [reason, n] : finished_) out << "nnx_requests_total{finish_reason=\"" << reason << "\"} " << n << '\n';
    out << "# HELP nnx_http_responses_total HTTP responses, by status code.\n"
           "# TYPE nnx_http_responses_total counter\n";
    for (const auto& [status, n] : responses_) out << "nnx_http_responses_total{code=\"" << status << "\"} " << n << '\n';
    out << "# HELP nnx_prompt_tokens_total Prompt tokens prefilled.\n# TYPE nnx_prompt_tokens_total counter\n"
        << "nnx_prompt_tokens_total " << prompt_tokens_ << '\n'
        << "# HELP nnx_generation_tokens_total Tokens generated.\n# TYPE nnx_generation_tokens_total counter\n"
        << "nnx_generation_tokens_total " << generated_tokens_ << '\n';
    ttft_.write(out, "nnx_time_to_first_token_seconds", "Time from a request's arrival to its first token.");
    tpot_.write(out, "nnx_time_per_output_token_seconds", "Time per generated token after the first.");
    out << "# HELP nnx_slots_busy Batch slots holding a request.\n# TYPE nnx_slots_busy gauge\n"
        << "nnx_slots_busy " << load.running << '\n'
        << "# HELP nnx_slots Batch slots.\n# TYPE nnx_slots gauge\n"
        << "nnx_slots " << load.slots << '\n'
        << "# HELP nnx_queue_length Requests waiting for a slot.\n# TYPE nnx_queue_length gauge\n"
        << "nnx_queue_length " << load.waiting << '\n'
        << "# HELP nnx_step_errors_total Scheduler steps that threw and were retried.\n"
           "# TYPE nnx_step_errors_total counter\n"
        << "nnx_step_errors_total " << load.step_errors << '\n';
    return out.str();
  }

 private:
  mutable std::mutex mutex_;
  std::map<std::string, std::uint64_t> finished_;
  std::map<int, std::uint64_t> responses_;
  std::uint64_t prompt_tokens_ = 0, generated_tokens_ = 0;
  LatencyHistogram ttft_, tpot_;
};

}  // namespace nnx
