#!/usr/bin/env bash
# TPC-H Q1 at SF1 through the CLI, 8 runs in one process, over diagon's
# lineitem (the 6 parts `cargo bench --bench tpch` writes) and over the same
# rows in Parquet: wall time, CPU time and CPU utilisation (CPU / wall) of
# each process, so the share of two cores each engine keeps busy compares.
#
# usage: benches/cli/q1_cpu.sh [diagon binary] [tpch data directory]
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
target=${CARGO_TARGET_DIR:-$HOME/.cache/diagon-target}
bin=${1:-$target/release/diagon}
data=${2:-$target/tmp/tpch-all-sf1}
q1=$(tr '\n' ' ' < "$root/benches/tpch/q1.sql")

run() {
  local label=$1 create=$2
  local args=(-q --format csv -c "SET datafusion.execution.target_partitions = 2;" -c "$create")
  for _ in $(seq 8); do args+=(-c "$q1"); done
  /usr/bin/time -f "%e %U %S" -o /tmp/q1_cpu.time "$bin" "${args[@]}" > /dev/null
  read -r wall user sys < /tmp/q1_cpu.time
  awk -v l="$label" -v w="$wall" -v u="$user" -v s="$sys" \
    'BEGIN { printf "%-8s wall %6.2f s  cpu %6.2f s  utilisation %5.1f%%\n", l, w, u + s, 100 * (u + s) / w }'
}

run diagon "CREATE EXTERNAL TABLE lineitem STORED AS DIAGON LOCATION '$data/diagon-lineitem';"
run parquet "CREATE EXTERNAL TABLE lineitem STORED AS PARQUET LOCATION '$data/lineitem.parquet';"
