#!/usr/bin/env bash
# The whole understudy test suite: unit, scenario, and end-to-end tests with
# real processes. Installs its prerequisites first (see prereqs.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
deploy/prereqs.sh
# End-to-end tests start the real binaries from this target directory.
cargo build --workspace --bins
cargo test --workspace "$@"
