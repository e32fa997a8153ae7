# stgnn: this Makefile drives CMake (the real build lives in CMakeLists.txt).
#   make          check dependencies, configure + build into build/, link the programs to the root
#   make test     build, then run the whole doctest suite through ctest
#   make bench    build, then run every benchmark in bench/
#   make deps     install the Debian packages (needs root)
#   make clean    remove build/ and the program links
# Hardening (RELIABILITY.md):
#   make test-asan                 the whole suite under AddressSanitizer + UBSan (build-asan/)
#   make test-tsan                 the whole suite under ThreadSanitizer, clang + LLVM OpenMP
#                                  with its Archer annotations (build-tsan/)
#   make fuzz FUZZ_SECONDS=N       every libFuzzer harness for N seconds each, one after the
#                                  other, one process (build-fuzz/; FUZZ_TARGETS to pick some)
#   make crash-test                the kill -9 campaign on syncmnist_exp and keystep_exp, KILLS
#                                  kills each (scripts/crash-test.sh, scripts/kill9-campaign.sh)
BUILD_DIR ?= build
JOBS ?= $(shell nproc)
CMAKE_FLAGS ?=
EXPERIMENTS := syncmnist_exp keystep_exp video_exp
BENCH_FILTER ?= .
BENCH_ARGS ?=
ASAN_DIR ?= build-asan
TSAN_DIR ?= build-tsan
FUZZ_DIR ?= build-fuzz
FUZZ_SECONDS ?= 60
FUZZ_TARGETS ?=
FUZZ_ARGS ?=
KILLS ?= 10
SANITIZER_ENV := ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:strict_string_checks=1 \
  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  LSAN_OPTIONS=suppressions=$(CURDIR)/tests/sanitizers/lsan.supp:print_suppressions=0
TSAN_ENV := TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1:suppressions=$(CURDIR)/tests/sanitizers/tsan.supp \
  OMP_TOOL_LIBRARIES=/usr/lib/llvm-14/lib/libarcher.so ARCHER_OPTIONS=verbose=0 OPENBLAS_NUM_THREADS=1

.PHONY: all deps check-deps check-sanitizer-deps build test bench clean test-asan test-tsan \
        fuzz crash-test

all: build
	@for prog in $(EXPERIMENTS); do \
	  if [ -x $(BUILD_DIR)/$$prog ]; then ln -sf $(BUILD_DIR)/$$prog $$prog; fi; \
	done

# As root, missing packages are installed; otherwise we stop with the one command to run.
check-deps:
	@missing=$$(scripts/install-deps.sh --check) || { \
	  if [ "$$(id -u)" -eq 0 ]; then scripts/install-deps.sh; \
	  else echo "stgnn: missing Debian packages: $$missing"; \
	       echo "stgnn: install them with:  sudo scripts/install-deps.sh"; exit 1; fi; }

deps:
	scripts/install-deps.sh

# The generated Makefile (written only by a configure that succeeded) marks a usable build
# tree; configuring waits for check-deps so that `make -j` never configures against packages
# that are still being installed.
$(BUILD_DIR)/Makefile: | check-deps
	cmake -S . -B $(BUILD_DIR) -DCMAKE_BUILD_TYPE=Release $(CMAKE_FLAGS)

# Under `make -jN` the build joins our jobserver (the + prefix) instead of forcing its own -j.
PARALLEL_FLAG = $(if $(findstring jobserver,$(MAKEFLAGS)),,-j $(JOBS))

build: check-deps $(BUILD_DIR)/Makefile
	+cmake --build $(BUILD_DIR) $(PARALLEL_FLAG)

test: all
	cd $(BUILD_DIR) && ctest --output-on-failure --timeout 900

bench: all
	@for b in $(BUILD_DIR)/bench_*; do \
	  echo "== $$b"; $$b --benchmark_filter='$(BENCH_FILTER)' $(BENCH_ARGS) || exit 1; \
	done

check-sanitizer-deps:
	@missing=$$(scripts/install-deps.sh --check --sanitizers) || { \
	  if [ "$$(id -u)" -eq 0 ]; then scripts/install-deps.sh --sanitizers; \
	  else echo "stgnn: missing Debian packages: $$missing"; \
	       echo "stgnn: install them with:  sudo scripts/install-deps.sh --sanitizers"; exit 1; fi; }

test-asan: check-deps
	cmake -S . -B $(ASAN_DIR) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSTGNN_SANITIZE=address \
	  -DSTGNN_BUILD_BENCH=OFF $(CMAKE_FLAGS)
	cmake --build $(ASAN_DIR) -j $(JOBS)
	cd $(ASAN_DIR) && $(SANITIZER_ENV) ctest --output-on-failure --timeout 1800

test-tsan: check-deps check-sanitizer-deps
	CC=clang CXX=clang++ cmake -S . -B $(TSAN_DIR) -DCMAKE_BUILD_TYPE=RelWithDebInfo \
	  -DSTGNN_SANITIZE=thread -DSTGNN_OPENBLAS_VARIANT=pthread -DSTGNN_BUILD_BENCH=OFF $(CMAKE_FLAGS)
	cmake --build $(TSAN_DIR) -j $(JOBS)
	cd $(TSAN_DIR) && $(TSAN_ENV) ctest --output-on-failure --timeout 3600

fuzz: check-deps check-sanitizer-deps
	CC=clang CXX=clang++ cmake -S . -B $(FUZZ_DIR) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSTGNN_FUZZ=ON \
	  -DSTGNN_OPENBLAS_VARIANT=pthread -DSTGNN_BUILD_TESTS=OFF -DSTGNN_BUILD_BENCH=OFF $(CMAKE_FLAGS)
	cmake --build $(FUZZ_DIR) -j $(JOBS) --target fuzzers
	tests/fuzz/run.sh $(FUZZ_DIR) $(FUZZ_SECONDS) $(FUZZ_TARGETS)

crash-test: all
	scripts/crash-test.sh $(BUILD_DIR) $(KILLS)

clean:
	rm -rf $(BUILD_DIR)
	rm -f $(EXPERIMENTS)
