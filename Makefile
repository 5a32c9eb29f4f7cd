# Thin wrapper over Meson: the README's commands, and nothing clever.
BUILD      ?= build
BUILD_ASAN ?= build-asan
PYTHON     ?= /usr/bin/python3

.PHONY: all deps build asan demo test unit e2e fuzz bench format format-check clean

all: build

deps:
	@scripts/install-deps.sh build

$(BUILD)/build.ninja:
	meson setup $(BUILD) --buildtype=debugoptimized

build: deps $(BUILD)/build.ninja
	ninja -C $(BUILD)

$(BUILD_ASAN)/build.ninja:
	meson setup $(BUILD_ASAN) --buildtype=debug -Db_sanitize=address,undefined -Db_lundef=false

asan: deps $(BUILD_ASAN)/build.ninja
	ninja -C $(BUILD_ASAN)

# The article from start to finish: PKI, server, the three curl checks.
demo: build
	./$(BUILD)/mtls demo

# Everything CI runs: unit, end-to-end, interop, fuzz smoke, then unit and
# end-to-end again under ASan+UBSan. The last line is "N passed, N failed".
test:
	@scripts/install-deps.sh test
	$(PYTHON) tests/run.py

unit: build
	$(PYTHON) tests/run.py --only unit

e2e: build
	$(PYTHON) tests/run.py --only e2e

fuzz:
	@scripts/install-deps.sh test
	$(PYTHON) tests/run.py --only fuzz

bench:
	@scripts/install-deps.sh bench
	bench/run.sh

format:
	clang-format -i $$(git ls-files '*.c' '*.h')

format-check:
	clang-format --dry-run --Werror $$(git ls-files '*.c' '*.h')

clean:
	rm -rf $(BUILD) $(BUILD_ASAN) build-fuzz
