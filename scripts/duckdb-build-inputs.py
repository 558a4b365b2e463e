#!/usr/bin/env python3
"""Prints a fingerprint of everything the bundled DuckDB's build depends on (the libduckdb-sys
and duckdb units of cargo's unit graph, with the features and profiles of all their
dependencies). If it changes, the next build recompiles DuckDB's C++ (30 minutes on two cores):
run it before and after changing dependencies.

    python3 scripts/duckdb-build-inputs.py

Uses `cargo build --unit-graph` (a nightly flag, enabled with RUSTC_BOOTSTRAP=1); nothing is
built, and a scratch target directory is used so no build lock is taken.
"""
import hashlib
import json
import os
import subprocess
import tempfile

with tempfile.TemporaryDirectory() as scratch:
    env = dict(os.environ, RUSTC_BOOTSTRAP="1", CARGO_TARGET_DIR=scratch)
    graph = json.loads(subprocess.run(
        ["cargo", "build", "--release", "--workspace", "--all-targets", "--unit-graph", "-Z", "unstable-options"],
        env=env, check=True, capture_output=True, text=True).stdout)
units = graph["units"]
memo = {}


def signature(index):
    if index not in memo:
        unit = units[index]
        own = json.dumps([unit["pkg_id"], unit["target"]["name"], unit["mode"], sorted(unit["features"]),
                          unit["profile"], unit.get("platform")], sort_keys=True)
        deps = "|".join(sorted(signature(d["index"]) for d in unit["dependencies"]))
        memo[index] = hashlib.sha256((own + deps).encode()).hexdigest()[:16]
    return memo[index]


for index, unit in enumerate(units):
    if "libduckdb-sys" in unit["pkg_id"] or "#duckdb@" in unit["pkg_id"]:
        print(signature(index), unit["pkg_id"].split("#")[-1], unit["target"]["name"], unit["mode"])
