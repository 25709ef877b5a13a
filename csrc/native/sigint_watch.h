// Ctrl-C for solves that run in the caller's thread (pyode_options.stop_on_sigint).
//
// Python delivers SIGINT by a C handler that only records it; the KeyboardInterrupt is raised when the main
// thread next runs Python code, which it does not while it sits in a long C call. So while such a solve runs,
// SIGINT goes first to a handler here that counts it (the loop stops every row at its next step when the count
// moves) and then calls the handler it replaced, so Python still raises KeyboardInterrupt once the call returns.
// The handler is installed by the first concurrent solve that asks and restored by the last (a mutex and a
// user count), so solves in several threads do not restore each other's handler; the cost is two sigaction
// calls per solve, about a microsecond. Only a function handler is wrapped: with SIG_IGN a Ctrl-C is meant to be
// ignored, and with SIG_DFL it ends the process anyway.
#pragma once

#include <cstdint>
#include <mutex>

#if defined(__unix__) || defined(__APPLE__)
#include <signal.h>
#define PYODE_HAVE_SIGACTION 1
#endif

namespace pyode::native {

// Incremented by the handler (a lock-free atomic add: async-signal-safe); read by the loop (LoopOptions).
inline uint64_t g_interrupts = 0;

#ifdef PYODE_HAVE_SIGACTION

inline std::mutex g_sigint_mutex;
inline int g_sigint_users = 0;
inline bool g_sigint_installed = false;
inline struct sigaction g_sigint_previous;

inline void on_sigint(int sig, siginfo_t* info, void* context) {
  __atomic_fetch_add(&g_interrupts, 1, __ATOMIC_RELAXED);
  const struct sigaction& prev = g_sigint_previous;
  if (prev.sa_flags & SA_SIGINFO) prev.sa_sigaction(sig, info, context);
  else if (prev.sa_handler != SIG_DFL && prev.sa_handler != SIG_IGN) prev.sa_handler(sig);
}

// Scope of one solve: installs the handler if asked (and not yet there), restores the previous one when the
// last user leaves. `counter()` is the counter to watch, or nullptr when nothing was installed.
class SigintWatch {
 public:
  explicit SigintWatch(bool wanted) {
    if (!wanted) return;
    start_ = __atomic_load_n(&g_interrupts, __ATOMIC_RELAXED);  // before installing: no SIGINT slips between
    std::lock_guard<std::mutex> lock(g_sigint_mutex);
    if (g_sigint_users == 0) {
      struct sigaction current;
      if (sigaction(SIGINT, nullptr, &current) != 0) return;
      const bool is_function = (current.sa_flags & SA_SIGINFO) ||
                               (current.sa_handler != SIG_DFL && current.sa_handler != SIG_IGN);
      if (!is_function) return;
      g_sigint_previous = current;
      struct sigaction ours = current;  // the same mask and SA_RESTART behaviour as the handler it wraps
      ours.sa_flags |= SA_SIGINFO;
      ours.sa_sigaction = on_sigint;
      if (sigaction(SIGINT, &ours, nullptr) != 0) return;
      g_sigint_installed = true;
    }
    if (!g_sigint_installed) return;
    ++g_sigint_users;
    active_ = true;
  }
  ~SigintWatch() {
    if (!active_) return;
    std::lock_guard<std::mutex> lock(g_sigint_mutex);
    if (--g_sigint_users > 0) return;
    struct sigaction current;
    // Put the previous handler back unless someone replaced ours meanwhile (then theirs stays).
    if (sigaction(SIGINT, nullptr, &current) == 0 && (current.sa_flags & SA_SIGINFO) &&
        current.sa_sigaction == on_sigint)
      sigaction(SIGINT, &g_sigint_previous, nullptr);
    g_sigint_installed = false;
  }
  SigintWatch(const SigintWatch&) = delete;
  SigintWatch& operator=(const SigintWatch&) = delete;
  const uint64_t* counter() const { return active_ ? &g_interrupts : nullptr; }
  uint64_t start() const { return start_; }

 private:
  bool active_ = false;
  uint64_t start_ = 0;
};

#else  // no POSIX signals: stop_on_sigint does nothing (the cancel flag still works)

class SigintWatch {
 public:
  explicit SigintWatch(bool) {}
  const uint64_t* counter() const { return nullptr; }
  uint64_t start() const { return 0; }
};

#endif

}  // namespace pyode::native
