# tiercache: the two commands a fresh machine needs are `make test` and `make demo`.
# Everything else is a step of those, or a tool for developers.
SHELL := /bin/bash
BUILD_DIR ?= build
BUILD_TYPE ?= RelWithDebInfo
JOBS ?= $(shell nproc)

.PHONY: all setup configure build test test-unit test-integration services-up services-down \
        services-status demo clean

all: build

setup:
	@scripts/setup.sh

configure: setup
	@cmake -S . -B $(BUILD_DIR) -G Ninja -DCMAKE_BUILD_TYPE=$(BUILD_TYPE) -DTIERCACHE_WERROR=ON >/dev/null

build: configure
	@cmake --build $(BUILD_DIR) -j $(JOBS)

# Setup, build (normal, ASan+UBSan, TSan), start the servers, run every test,
# stop the servers (also when tests fail); exits with the tests' status.
test:
	@scripts/test.sh

# Unit tests only (no server needed).
test-unit: build
	@ctest --test-dir $(BUILD_DIR) -L unit --output-on-failure -j $(JOBS)

# Integration tests against servers already started with `make services-up`.
test-integration: build
	@ctest --test-dir $(BUILD_DIR) -L integration --output-on-failure

services-up: setup
	@scripts/services.sh up

services-down:
	@scripts/services.sh down

services-status:
	@scripts/services.sh status

# `make bench-<name>` builds and runs bench/<name>.cc (servers started when it needs them).
bench-%: build
	@scripts/bench.sh $*

# The reference platform and its drills (docs/demo.md): set-up, build, servers,
# six drills with and without the cache, demo-report/index.html, RESULT lines.
demo:
	@BUILD_DIR=$(BUILD_DIR) scripts/demo.sh

clean:
	rm -rf $(BUILD_DIR) build-asan build-tsan demo-report
