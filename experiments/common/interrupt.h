// Ctrl-C handling for training loops: the first SIGINT / SIGTERM only raises a flag, which
// the loop checks after each batch to save a checkpoint and exit with code 130; a second
// signal ends the process at once.
#pragma once

namespace stgnn::experiments {

void install_interrupt_handler();
bool interrupted();

}  // namespace stgnn::experiments
