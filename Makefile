# Tessera's entry points. Every target installs missing Debian packages first (a fast no-op when
# all are present), configures CMake with Ninja once, and builds only what changed.
#   make demo       run the local cluster demo
#   make test       build and run every test (what CI runs)
#   make bench      build and run the benchmarks
#   make lint       clang-format check + clang-tidy on our code
#   make format     clang-format our code in place
#   make tla        model-check the TLA+ specs with TLC (needs TLA2TOOLS=/path/to/tla2tools.jar)
#   make test-asan  build with AddressSanitizer + UBSan and run the tests
#   make fuzz       build the libFuzzer targets with clang and fuzz the engine for FUZZ_SECONDS

BUILD ?= build
ASAN_BUILD ?= build-asan
FUZZ_BUILD ?= build-fuzz
FUZZ_SECONDS ?= 60
JOBS ?= $(shell nproc)
CMAKE_FLAGS ?=
CTEST_FLAGS ?=

SOURCES = $(shell git ls-files '*.cc' '*.h' 2>/dev/null | grep -v '^tests/install/consumer/')

.PHONY: all deps build demo test bench lint format tla test-asan fuzz clean

all: build

deps:
	@bash tools/install-deps.sh

$(BUILD)/build.ninja:
	cmake -S . -B $(BUILD) -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo $(CMAKE_FLAGS)

build: deps $(BUILD)/build.ninja
	cmake --build $(BUILD) -j $(JOBS)

demo: build
	$(BUILD)/tools/tessera demo

test: build
	ctest --test-dir $(BUILD) --output-on-failure -j $(JOBS) -LE 'soak|manual' $(CTEST_FLAGS)

bench: build
	bash tools/run-bench.sh $(BUILD)

lint: deps $(BUILD)/build.ninja
	@echo "clang-format: checking $(words $(SOURCES)) files"
	@clang-format --dry-run -Werror $(SOURCES)
	@echo "clang-tidy: checking our sources"
	@run-clang-tidy -quiet -p $(BUILD) -j $(JOBS) '^$(CURDIR)/(common|vmem|engine|erasure|orchestrator|raft|tools)/.*\.cc$$' >$(BUILD)/clang-tidy.log 2>&1 \
	  || { grep -E 'warning:|error:' $(BUILD)/clang-tidy.log | sort -u; exit 1; }
	@echo "lint: clean"

format:
	clang-format -i $(SOURCES)

tla:
	@bash tla/run-tlc.sh

$(ASAN_BUILD)/build.ninja:
	cmake -S . -B $(ASAN_BUILD) -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DTESSERA_SANITIZE=ON \
	  -DTESSERA_BUILD_BENCH=OFF $(CMAKE_FLAGS)

test-asan: deps $(ASAN_BUILD)/build.ninja
	cmake --build $(ASAN_BUILD) -j $(JOBS)
	# python: an uninstrumented interpreter cannot load ASan-built libraries; install: ditto
	# for the out-of-tree consumer. Both run in the normal `make test`.
	ctest --test-dir $(ASAN_BUILD) --output-on-failure -j $(JOBS) -LE 'soak|manual|install|python' \
	  $(CTEST_FLAGS)

$(FUZZ_BUILD)/build.ninja:
	CC=clang CXX=clang++ cmake -S . -B $(FUZZ_BUILD) -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
	  -DTESSERA_FUZZ=ON -DTESSERA_SANITIZE=ON -DTESSERA_BUILD_BENCH=OFF $(CMAKE_FLAGS)

fuzz: deps $(FUZZ_BUILD)/build.ninja
	cmake --build $(FUZZ_BUILD) -j $(JOBS) --target engine_fuzz
	mkdir -p $(FUZZ_BUILD)/corpus
	$(FUZZ_BUILD)/tests/fuzz/engine_fuzz -max_total_time=$(FUZZ_SECONDS) $(FUZZ_BUILD)/corpus

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) $(FUZZ_BUILD)
