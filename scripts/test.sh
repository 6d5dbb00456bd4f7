#!/usr/bin/env bash
# The one test command (README, .ci/run): builds Coffer and runs every test.
# Needs: the Rust toolchain, python3 (for moto's S3 server), root for a few tests, and
# faketime (Debian's package; installed here when missing) for the skewed-clock prune test.
# Unit and property tests run beside the code; end-to-end tests (tests/cli/) run the built
# binary on temporary directories. Some end-to-end tests need root (owners, device nodes, a
# small tmpfs for the full-disk test) and util-linux's setpriv/mount: both come with Debian.
set -euo pipefail
cd "$(dirname "$0")/.."

need() { command -v "$1" >/dev/null 2>&1; }
# systemd-analyze checks the units `schedule install` writes and the packaged ones; man and
# dpkg check the installed package (scripts/test-deb); fusermount3 (fuse3) mounts `coffer
# mount` in its test (/dev/fuse must exist); tmux gives the progress display a terminal.
if ! need setpriv || ! need mount || ! need faketime || ! need systemd-analyze || ! need man || ! need dpkg \
  || ! need fusermount3 || ! need tmux; then
  if [ "$(id -u)" = 0 ] && need apt-get; then
    apt-get update -qq && apt-get install -y -qq util-linux mount faketime systemd man-db dpkg fuse3 tmux >/dev/null
  else
    echo "scripts/test.sh: setpriv and mount (util-linux), faketime, systemd-analyze, man, dpkg, fusermount3 (fuse3) and tmux are needed" >&2
    exit 1
  fi
fi

# The S3 tests run against moto's S3 server on 127.0.0.1, which the tests start and stop
# themselves; it is installed here, into a venv under target/ (about 15 s, once).
venv=${COFFER_MOTO_VENV:-$PWD/target/moto-venv}
if [ ! -x "$venv/bin/moto_server" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check 'moto[s3]==5.2.5' flask flask-cors
fi
export COFFER_MOTO_SERVER="$venv/bin/moto_server"

cargo build --locked --all-targets
cargo test --locked -- --test-threads="${COFFER_TEST_THREADS:-2}"

# The package: built with cargo deb, installed, run and removed (needs root, as CI is).
if [ "$(id -u)" = 0 ]; then
  scripts/test-deb
else
  echo "scripts/test.sh: FAILED: the packaging test (scripts/test-deb) needs root" >&2
  exit 1
fi

# Fuzz smoke run: every decoder of repository bytes gets a short cargo-fuzz run (libFuzzer with
# AddressSanitizer). cargo-fuzz needs nightly flags; RUSTC_BOOTSTRAP=1 enables them on the
# stable toolchain. COFFER_FUZZ_SECONDS=0 leaves this out (it says so), longer runs find more.
fuzz_seconds=${COFFER_FUZZ_SECONDS:-6}
if [ "$fuzz_seconds" = 0 ]; then
  echo "scripts/test.sh: fuzz smoke run left out (COFFER_FUZZ_SECONDS=0)"
else
  command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked --version 0.13.2
  cd fuzz
  export RUSTC_BOOTSTRAP=1
  cargo fuzz build -O
  passed=0 failed=0
  for target in $(cargo fuzz list); do
    log=$(mktemp)
    if cargo fuzz run -O "$target" -- -max_total_time="$fuzz_seconds" >"$log" 2>&1; then
      passed=$((passed + 1))
      echo "fuzz $target: $(grep -E '^Done' "$log" | tail -n 1)"
    else
      failed=$((failed + 1))
      echo "fuzz $target FAILED:" >&2
      tail -n 40 "$log" >&2
    fi
    rm -f "$log"
  done
  echo "fuzz: $passed passed, $failed failed"
  [ "$failed" = 0 ]
fi
