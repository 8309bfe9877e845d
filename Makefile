# Stratavore: the two commands a newcomer needs are `make up` and `make test`.
SHELL := /bin/bash
export CARGO_TARGET_DIR ?= $(HOME)/.cache/stratavore-target
BIN := $(CARGO_TARGET_DIR)/debug
# The cargo profile `make bench` builds and measures: release by default,
# since debug figures say more about the compiler than about Stratavore;
# `make bench BENCH_PROFILE=dev` (or `debug`) measures the debug build.
# cargo puts the dev profile in debug/ and every other profile in a folder
# of its name; the bench starts the service binaries from its own folder,
# so the services it measures are always of its own profile.
BENCH_PROFILE ?= release
BENCH_CARGO_PROFILE := $(if $(filter dev debug,$(BENCH_PROFILE)),dev,$(BENCH_PROFILE))
BENCH_BIN := $(CARGO_TARGET_DIR)/$(if $(filter dev,$(BENCH_CARGO_PROFILE)),debug,$(BENCH_CARGO_PROFILE))
# Tests whose names start with serial_ kill processes, restart servers or
# shorten timings: they run after the parallel suite, one at a time, since
# two shared cores starve processes for seconds at a time.
PARALLEL := 'not test(/serial_/)'
SERIAL := 'test(/serial_/)'

.PHONY: up down status build provision test test-parallel test-serial bench bench-smoke lint fmt schemas clean-local

## Bring the whole stack up on this machine (provisions what is missing).
up: build
	$(BIN)/stratavore up

## Stop everything `make up` started, Postgres included.
down:
	@if [ -x $(BIN)/stratavore ]; then $(BIN)/stratavore down; else cargo run -q --bin stratavore -- down; fi

status:
	$(BIN)/stratavore status

build:
	cargo build --bins

provision: build
	$(BIN)/stratavore provision

## Run every test: the parallel suite, the serial one, then every
## benchmark scenario tiny (so the benchmarks cannot rot).
test: provision test-parallel test-serial bench-smoke

test-parallel:
	cargo nextest run --workspace --no-fail-fast -E $(PARALLEL)

test-serial:
	cargo nextest run --workspace --no-fail-fast -j 1 -E $(SERIAL)

## Measure Stratavore against this machine's own limits, measured in the
## same run: bench/results/latest.json and the table in docs/performance.md.
## It reports; only a scenario that cannot run at all fails it.
## Provisioned by the bench's own build, so a release run builds no debug.
bench:
	cargo build --profile $(BENCH_CARGO_PROFILE) --bins
	$(BENCH_BIN)/stratavore provision
	$(BENCH_BIN)/stratavore-bench run --out bench/results/latest.json --docs docs/performance.md

## Every scenario tiny, its results written to a temporary file and checked
## against bench/results/schema.json: that each ran, never how fast. On the
## debug build `make build` made, whatever BENCH_PROFILE says: CI compiles
## no second profile.
bench-smoke: build
	@dir=$$(mktemp -d); \
	$(BIN)/stratavore-bench run --smoke --out $$dir/results.json \
	  && $(BIN)/stratavore-bench check $$dir/results.json; \
	status=$$?; rm -rf $$dir; exit $$status

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

fmt:
	cargo fmt --all

## Regenerate schemas/ from the Rust types (a test fails when they drift).
schemas:
	STRATAVORE_UPDATE_SCHEMAS=1 cargo test -p stratavore-events --test it -- --test-threads=1
	STRATAVORE_UPDATE_SCHEMAS=1 cargo test -p stratavore-bus --test it -- --test-threads=1

## Remove downloads and local servers (stop them first with make down).
clean-local:
	rm -rf .local
