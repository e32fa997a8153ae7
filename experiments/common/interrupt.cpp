#include "common/interrupt.h"

#include <unistd.h>
#include <csignal>
#include <cstdlib>

namespace stgnn::experiments {

namespace {

volatile std::sig_atomic_t g_interrupted = 0;

void on_signal(int) {
  if (g_interrupted) {
    // Second signal: the user insists. _exit is async-signal-safe.
    ::_exit(130);
  }
  g_interrupted = 1;
  const char message[] =
      "\ninterrupt: finishing the current batch, saving a checkpoint (again to quit now)\n";
  [[maybe_unused]] const ssize_t n = ::write(STDERR_FILENO, message, sizeof(message) - 1);
}

}  // namespace

void install_interrupt_handler() {
  struct sigaction action {};
  action.sa_handler = on_signal;
  sigemptyset(&action.sa_mask);
  sigaction(SIGINT, &action, nullptr);
  sigaction(SIGTERM, &action, nullptr);
}

bool interrupted() {
  return g_interrupted != 0;
}

}  // namespace stgnn::experiments
