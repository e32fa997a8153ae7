# stgnn: this Makefile drives CMake (the real build lives in CMakeLists.txt).
#   make          check dependencies, configure + build into build/, link the programs to the root
#   make test     build, then run the whole doctest suite through ctest
#   make bench    build, then run every benchmark in bench/
#   make deps     install the Debian packages (needs root)
#   make clean    remove build/ and the program links
BUILD_DIR ?= build
JOBS ?= $(shell nproc)
CMAKE_FLAGS ?=
EXPERIMENTS := syncmnist_exp keystep_exp video_exp
BENCH_FILTER ?= .
BENCH_ARGS ?=

.PHONY: all deps check-deps build test bench clean

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

$(BUILD_DIR)/CMakeCache.txt:
	cmake -S . -B $(BUILD_DIR) -DCMAKE_BUILD_TYPE=Release $(CMAKE_FLAGS)

build: check-deps $(BUILD_DIR)/CMakeCache.txt
	cmake --build $(BUILD_DIR) -j $(JOBS)

test: all
	cd $(BUILD_DIR) && ctest --output-on-failure --timeout 900

bench: all
	@for b in $(BUILD_DIR)/bench_*; do \
	  echo "== $$b"; $$b --benchmark_filter='$(BENCH_FILTER)' $(BENCH_ARGS) || exit 1; \
	done

clean:
	rm -rf $(BUILD_DIR)
	rm -f $(EXPERIMENTS)
