#!/usr/bin/env bash
# The one test command (README, .ci/run): builds Coffer and runs every test.
# Unit and property tests run beside the code; end-to-end tests (tests/cli/) run the built
# binary on temporary directories. Some end-to-end tests need root (owners, device nodes, a
# small tmpfs for the full-disk test) and util-linux's setpriv/mount: both come with Debian.
set -euo pipefail
cd "$(dirname "$0")/.."

need() { command -v "$1" >/dev/null 2>&1; }
if ! need setpriv || ! need mount; then
  if [ "$(id -u)" = 0 ] && need apt-get; then
    apt-get update -qq && apt-get install -y -qq util-linux mount >/dev/null
  else
    echo "scripts/test.sh: setpriv and mount (util-linux) are needed" >&2
    exit 1
  fi
fi

cargo build --locked --all-targets
cargo test --locked -- --test-threads="${COFFER_TEST_THREADS:-2}"
