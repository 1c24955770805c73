# choreo: the two commands of the README, plus helpers.
CARGO ?= cargo

.PHONY: build run test bench conformance clean

build:
	$(CARGO) build --release

## Build, start a server on a copy of fixtures/fabric and show it working end to end, then
## the same project served from a git repository in dynamic mode (production, rollback).
run: build
	./scripts/demo.sh target/release/choreo

## Every test: unit, property and end-to-end (the real binary on temporary sockets).
test:
	$(CARGO) test --all-targets --locked

## Benchmarks; figures go to the README's performance table.
bench: build
	$(CARGO) bench --locked

## Upstream's example projects driven through the release binary.
conformance: build
	../shared/conformance/run

clean:
	$(CARGO) clean
