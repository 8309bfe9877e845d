# Stratavore: the two commands a newcomer needs are `make up` and `make test`.
SHELL := /bin/bash
export CARGO_TARGET_DIR ?= $(HOME)/.cache/stratavore-target
BIN := $(CARGO_TARGET_DIR)/debug
# Tests whose names start with serial_ kill processes, restart servers or
# shorten timings: they run after the parallel suite, one at a time, since
# two shared cores starve processes for seconds at a time.
PARALLEL := 'not test(/serial_/)'
SERIAL := 'test(/serial_/)'

.PHONY: up down status build provision test test-parallel test-serial lint fmt schemas clean-local

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

## Run every test: the parallel suite, then the serial one.
test: provision test-parallel test-serial

test-parallel:
	cargo nextest run --workspace --no-fail-fast -E $(PARALLEL)

test-serial:
	cargo nextest run --workspace --no-fail-fast -j 1 -E $(SERIAL)

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
