# Peng — top-level entry points. `make serve` and `make test` work on a fresh Debian 12 machine:
# each installs what is missing (scripts/setup.sh), builds, and fetches the default model.
BUILD_DIR ?= build
CMAKE_ARGS ?=
JOBS ?= $(shell nproc)
export CCACHE_DIR ?= $(HOME)/.cache/peng/ccache

.PHONY: setup build model test serve bench clean

setup:
	@bash scripts/setup.sh

build: setup
	@cmake -S . -B $(BUILD_DIR) -G Ninja $(CMAKE_ARGS) >/dev/null
	@cmake --build $(BUILD_DIR) -j $(JOBS)

model: setup
	@bash scripts/fetch_model.sh

test: build model
	@cd $(BUILD_DIR) && ctest --output-on-failure -j $(JOBS)
	@.venv/bin/python -m pytest -q tests/python

serve: build model
	@$(BUILD_DIR)/peng serve --config configs/default.yaml

bench: build model
	@.venv/bin/python tests/bench/run_bench.py

clean:
	@rm -rf $(BUILD_DIR)
