# Tailgate: the two commands of the README, and their helpers.
#   make run    build and run the proxy on its built-in default configuration
#   make test   run the whole test suite: Swift unit tests, Python end-to-end, fault and deploy tests, a 60 s soak,
#               a short libFuzzer run of the byte parsers, and a performance smoke against nginx (release build)
#   make bench  hot-path benchmarks in a release build

SWIFT ?= swift
VENV := .venv
PY := $(VENV)/bin/python
APT_PACKAGES := libxxhash-dev zlib1g-dev libdeflate-dev libgoogle-perftools-dev pkg-config python3-venv prometheus nghttp2-client nginx

.PHONY: run test unit e2e soak fuzz perf-smoke bench deps venv build

# System libraries the build links (libxxhash, zlib, libdeflate, tcmalloc); installed only when missing.
deps:
	@if ! pkg-config --exists libxxhash zlib libdeflate libtcmalloc_minimal 2>/dev/null || ! python3 -c 'import venv, ensurepip' 2>/dev/null || ! command -v promtool >/dev/null || ! command -v h2load >/dev/null || ! command -v nginx >/dev/null; then \
		echo "installing $(APT_PACKAGES)"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $(APT_PACKAGES); \
	fi

# Python environment for the end-to-end tests (real OpenTelemetry SDK, grpcio, opentelemetry-proto).
$(VENV)/.installed: Tests/EndToEnd/requirements.txt Tests/Deploy/requirements.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r Tests/EndToEnd/requirements.txt -r Tests/Deploy/requirements.txt
	touch $@

venv: $(VENV)/.installed

build: deps
	$(SWIFT) build --product tailgate

run: deps
	TAILGATE_COMMIT=$$(git rev-parse --short HEAD 2>/dev/null || echo unknown) $(SWIFT) build -c release --product tailgate
	.build/release/tailgate serve $(ARGS)

unit: deps
	$(SWIFT) test

e2e: build venv
	$(PY) -m pytest -q -p no:cacheprovider Tests/EndToEnd Tests/Faults Tests/Deploy

# The soak scaled to CI: 60 s at 20k spans/s on the debug build, a flaky downstream, reloads (loadtest/soak.sh).
soak: build
	TAILGATE_BIN=.build/debug/tailgate loadtest/soak.sh 60 20000

# libFuzzer, 20 s per target over the committed corpora (Fuzz/README.md); its own scratch path.
fuzz: deps
	Fuzz/run.sh 20

# Performance smoke: the release build's CPU per span against nginx grpc_pass in one run; fails on a gross regression.
perf-smoke: deps
	SMOKE_MAX_RATIO=16 loadtest/smoke-bench.sh 5 20000

test: unit e2e soak fuzz perf-smoke

bench: deps
	$(SWIFT) run -c release tailgate-bench
