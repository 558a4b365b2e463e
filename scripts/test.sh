#!/usr/bin/env bash
# The test command: installs what the end-to-end tests need, then runs every test.
# Safe to run again: each step skips what is already in place.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/ducktrace/target}"
started=$SECONDS
step() { printf '\n== [%4ds] %s\n' "$((SECONDS - started))" "$*"; }

# Debian packages the tests drive: a program and the package that provides it.
missing=()
for need in psql:postgresql-client chromium:chromium nats-server:nats-server; do
    command -v "${need%%:*}" >/dev/null || missing+=("${need#*:}")
done
if [ ${#missing[@]} -gt 0 ]; then
    step "Debian packages: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi

step "Python OpenTelemetry SDK clients in tests/.venv"
if [ ! -x tests/.venv/bin/python ]; then
    python3 -m venv tests/.venv
fi
tests/.venv/bin/pip install --quiet --disable-pip-version-check -r tests/clients/requirements.txt

step "Node OpenTelemetry SDK clients in tests/clients/node_modules"
if ! (cd tests/clients && npm ls --omit=dev >/dev/null 2>&1); then
    (cd tests/clients && npm ci --no-audit --no-fund --loglevel=error)
fi

step "cargo fmt --check"
cargo fmt --all --check

# The same arguments as `make run`, so both share one build of the bundled DuckDB.
build_args=${CARGO_BUILD_ARGS:---release --locked --workspace --all-targets}
step "cargo clippy"
# shellcheck disable=SC2086
cargo clippy $build_args -- -D warnings

# The end-to-end tests start the other binaries of the workspace (ducktrace-bench, the demo
# services), which `cargo test` alone does not build.
step "cargo build (every binary the tests start)"
# shellcheck disable=SC2086
cargo build $build_args

step "build and run all tests (cargo test $build_args, target dir $CARGO_TARGET_DIR)"
log=$(mktemp)
# shellcheck disable=SC2086
cargo test $build_args 2>&1 | tee "$log"

step "done"
# One closing line for all test binaries together (cargo prints one per binary).
awk '/^test result:/ { passed += $4; failed += $6 } END { printf "%d passed, %d failed\n", passed, failed }' "$log"
