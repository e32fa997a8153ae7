// The libFuzzer entry point of one harness: CMake compiles this file once per target of
// targets.h, with STGNN_FUZZ_TARGET naming the target (fuzz_npy runs stgnn::fuzz::npy, ...).
#include "fuzz/targets.h"

#ifndef STGNN_FUZZ_TARGET
#error "define STGNN_FUZZ_TARGET to a function of fuzz/targets.h"
#endif

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  stgnn::fuzz::STGNN_FUZZ_TARGET(data, size);
  return 0;
}
