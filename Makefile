# The two commands (see README.md):
#   make run    build and start ducktrace (collector, store and UI) on this machine
#   make test   install what the tests need (Python and Node SDK clients) and run every test
#
# Both build into one persistent target directory with one profile and the same cargo
# arguments, so both resolve the same features (dev-dependencies included) and the bundled
# DuckDB (about half an hour of C++ on two cores) is compiled once per machine.

export CARGO_TARGET_DIR ?= $(HOME)/.cache/ducktrace/target
# Arguments for `make run`, e.g. make run ARGS="serve --data-dir /var/lib/ducktrace"
ARGS ?= serve

.PHONY: run test
CARGO_BUILD_ARGS = --release --locked --workspace --all-targets

run:
	cargo build $(CARGO_BUILD_ARGS)
	$(CARGO_TARGET_DIR)/release/ducktrace $(ARGS)

test:
	CARGO_BUILD_ARGS="$(CARGO_BUILD_ARGS)" bash scripts/test.sh
