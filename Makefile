# Thin wrappers with the course's target names; the work is done by cargo and `cargo xtask`.
# `make help` lists them.

CARGO ?= cargo
DEMOS := $(patsubst chapters-code/src/bin/%.rs,%,$(wildcard chapters-code/src/bin/demo-*.rs))

.PHONY: help setup book test lint check compliance demo-test benchmark-cpu benchmark-gpu falsify $(DEMOS)

help:
	@echo "make setup          install toolchain components, fetch the model and texts"
	@echo "make book           build the book (runs every listing first): cargo xtask book"
	@echo "make test           cargo test (every listing, kernel and book check)"
	@echo "make lint           cargo fmt --check and clippy -D warnings"
	@echo "make check          lint + test + the book's consistency checks"
	@echo "make compliance     the course's quality gate: lint, book checks, no TODO/FIXME, coverage ≥ its threshold"
	@echo "make demo-<name>    run one demo, e.g. make demo-hardware-detect ARGS='--output json'"
	@echo "make demo-test      run every demo with --verify"
	@echo "make benchmark-cpu  measure everything and refresh the book's tables: cargo xtask bench"
	@echo "make benchmark-gpu  the CUDA probe, built with the cuda feature"
	@echo "make falsify        the book's claims and the course's 100-point scorecard: cargo xtask falsify"
	@echo "demos: $(DEMOS)"

setup:
	rustup component add rustfmt clippy
	$(CARGO) xtask fetch-model

book:
	$(CARGO) xtask book

test:
	$(CARGO) test

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

check: lint test
	$(CARGO) xtask check

# What the course ran as PMAT's quality gate, with our tools: see xtask/src/compliance.rs.
compliance: lint
	$(CARGO) xtask compliance

$(DEMOS):
	$(CARGO) run --release -q -p chapters-code --bin $@ -- $(ARGS)

demo-test:
	@set -e; for d in $(DEMOS); do \
		echo "== $$d --verify"; \
		$(CARGO) run --release -q -p chapters-code --bin $$d -- --verify --stdout > /dev/null; \
	done; echo "all demos verified"

benchmark-cpu:
	$(CARGO) xtask bench

# GPU benchmarks come with the CUDA chapters; today this reports what the CUDA probe finds.
benchmark-gpu:
	$(CARGO) run --release -q -p chapters-code --features cuda --bin demo-hardware-detect -- --output json

falsify:
	$(CARGO) xtask falsify
