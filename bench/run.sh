#!/usr/bin/env bash
# pgkeep's benchmark in one command: builds the release binary, then runs bench/bench.py
# (PostgreSQL cluster + Garage + the benchmark database + every command, best of N rounds).
#
#   bench/run.sh                 # ~460 MB database, 3 rounds
#   bench/run.sh --quick         # a small database, 1 round: tries the whole thing in a minute
#   bench/run.sh --ten-x         # also the memory check against a 10x larger database (slow)
#   bench/run.sh --compression zstd        # the jobs in zstd (any `compression =` value)
#   bench/run.sh --compression gzip,zstd   # both codecs side by side, in the same rounds
#   bench/run.sh --workdir /var/tmp/pgkeep-bench --keep   # keep the databases for the next run
#
# Needs: PostgreSQL server + client binaries, GNU time (/usr/bin/time), python3, and Garage
# (`cargo install garage --locked --version 2.5.0`, or PGKEEP_GARAGE_BIN / --garage).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

if [ ! -x /usr/bin/time ]; then
    echo "installing GNU time for peak-RSS measurements" >&2
    apt-get install -y time >/dev/null
fi
cargo build --release --manifest-path "$here/../Cargo.toml" --bin pgkeep >&2
target_dir="$(cargo metadata --format-version 1 --no-deps --manifest-path "$here/../Cargo.toml" \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
args=(--pgkeep "$target_dir/release/pgkeep")
if [ -n "${PGKEEP_GARAGE_BIN:-}" ]; then
    args+=(--garage "$PGKEEP_GARAGE_BIN")
fi
exec python3 "$here/bench.py" "${args[@]}" "$@"
