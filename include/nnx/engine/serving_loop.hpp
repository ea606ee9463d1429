// nnx/engine/serving_loop.hpp — a Scheduler on a thread of its own, for servers: any thread
// submits and cancels requests; the loop thread runs prefill and generate steps while there is
// work and sleeps when there is none. Callbacks (RequestCallbacks) run on the loop thread.
//
//   nnx::ServingLoop<nnx::Llama> loop(nnx::Scheduler<nnx::Llama>(engine, params, tokenizer),
//                                     {.max_waiting = 64});
//   loop.submit("req-1", request, {.on_token = ..., .on_finish = ...});  // QueueFull when full
//   loop.cancel("req-1");                                                 // e.g. client gone
//
// Requests are checked on the submitting thread (Scheduler::prepare), so a bad one throws
// there and never reaches the loop. An exception from a step (an allocation failure) is
// counted and the loop goes on: the scheduler loses nothing on a throw.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "nnx/core/error.hpp"
#include "nnx/engine/scheduler.hpp"

namespace nnx {

// submit() on a full queue: the caller should retry later (HTTP 429).
class QueueFull : public Error {
 public:
  explicit QueueFull(const std::string& what) : Error(what) {}
};

struct ServingLoopOptions {
  std::size_t max_waiting = 64;  // requests queued for a slot at most; more: QueueFull
};

// A snapshot of the loop's load.
struct ServingLoad {
  std::int64_t waiting = 0;  // queued for a slot
  std::int64_t running = 0;  // holding a slot
  std::int64_t slots = 0;
  std::int64_t step_errors = 0;  // steps that threw (and were retried)
};

template <EngineModel Model>
class ServingLoop {
 public:
  ServingLoop(Scheduler<Model> scheduler, ServingLoopOptions options = {})
      : scheduler_(std::move(scheduler)), options_(options), thread_([this] { run(); }) {
    std::lock_guard lock(mutex_);
    load_.slots = scheduler_.engine().num_slots();
  }
  ServingLoop(const ServingLoop&) = delete;
  ServingLoop& operator=(const ServingLoop&) = delete;
  // Stops the loop; requests still queued or running are cancelled (their on_finish runs).
  ~ServingLoop() {
    {
      std::lock_guard lock(mutex_);
      stopping_ = true;
    }
    wake_.notify_all();
    thread_.join();
  }

  // Queues a request. Throws InvalidArgument for a bad one and QueueFull when max_waiting
  // requests already wait; nothing is queued then.
  void submit(std::string id, Request request, RequestCallbacks callbacks = {}) {
    scheduler_.prepare(request);
    {
      std::lock_guard lock(mutex_);
      if (stopping_) throw InvalidArgument("the serving loop is stopping");
      if (inbox_.size() + static_cast<std::size_t>(load_.waiting) >= options_.max_waiting)
        throw QueueFull("the request queue is full (" + std::to_string(options_.max_waiting) + " waiting)");
      inbox_.push_back(Submission{std::move(id), std::move(request), std::move(callbacks)});
    }
    wake_.notify_all();
  }

  // Cancels a request queued or running (see Scheduler::cancel), at the loop's next turn.
  void cancel(std::string id) {
    {
      std::lock_guard lock(mutex_);
      cancels_.push_back(std::move(id));
    }
    wake_.notify_all();
  }

  ServingLoad load() const {
    std::lock_guard lock(mutex_);
    ServingLoad l = load_;
    l.waiting += static_cast<std::int64_t>(inbox_.size());
    return l;
  }
  const Engine<Model>& engine() const { return scheduler_.engine(); }
  const std::shared_ptr<const text::Tokenizer>& tokenizer() const { return scheduler_.tokenizer(); }

 private:
  struct Submission {
    std::string id;
    Request request;
    RequestCallbacks callbacks;
  };

  void run() {
    for (;;) {
      std::vector<Submission> inbox;
      std::vector<std::string> cancels;
      {
        std::unique_lock lock(mutex_);
        wake_.wait(lock, [&] { return stopping_ || !inbox_.empty() || !cancels_.empty() || !scheduler_.idle(); });
        if (stopping_) break;
        inbox.swap(inbox_);
        cancels.swap(cancels_);
      }
      // Outside the lock: submit's checks ran on the caller's thread, and cancel is cheap, but
      // callbacks (on_finish of a cancelled request) must not run under the lock.
      std::int64_t errors = 0;
      try {
        for (Submission& s : inbox) scheduler_.enqueue(std::move(s.id), std::move(s.request), std::move(s.callbacks));
        for (const std::string& id : cancels) scheduler_.cancel(id);
        (void)scheduler_.step();
      } catch (const std::exception&) {
        errors = 1;  // nothing lost (Scheduler::step); the next turn retries
      }
      std::lock_guard lock(mutex_);
      load_.waiting = static_cast<std::int64_t>(scheduler_.num_waiting());
      load_.running = static_cast<std::int64_t>(scheduler_.num_running());
      load_.step_errors += errors;
    }
    // Stopping: every request still queued or running ends as cancelled.
    for (Submission& s : inbox_) scheduler_.enqueue(std::move(s.id), std::move(s.request), std::move(s.callbacks));
    inbox_.clear();
    scheduler_.cancel_all();
  }

  Scheduler<Model> scheduler_;
  ServingLoopOptions options_;
  mutable std::mutex mutex_;
  std::condition_variable wake_;
  bool stopping_ = false;
  std::vector<Submission> inbox_;
  std::vector<std::string> cancels_;
  ServingLoad load_;
  std::thread thread_;  // last: starts once every other member is built
};

}  // namespace nnx
