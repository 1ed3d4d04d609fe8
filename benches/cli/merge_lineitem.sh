#!/usr/bin/env bash
# Merging TPC-H lineitem SF1 from 20 parts into one through the CLI, as a
# new user would: `diagon_optimize('lineitem', true)` over 20 parts that
# each hold every 20th order (so each spans the whole key range). Prints the
# peak RSS and wall time of the process that runs the merge.
#
# usage: benches/cli/merge_lineitem.sh [diagon binary] [lineitem.parquet]
# The parquet file is the one `cargo bench --bench tpch` writes.
set -euo pipefail
target=${CARGO_TARGET_DIR:-$HOME/.cache/diagon-target}
bin=${1:-$target/release/diagon}
parquet=${2:-$target/tmp/tpch-all-sf1/lineitem.parquet}
work=$(mktemp -d "${TMPDIR:-/tmp}/merge-lineitem.XXXXXX")
trap 'rm -rf "$work"' EXIT

create="CREATE EXTERNAL TABLE lineitem (l_orderkey BIGINT NOT NULL, l_partkey BIGINT NOT NULL,
  l_suppkey BIGINT NOT NULL, l_linenumber INT NOT NULL, l_quantity DECIMAL(15,2) NOT NULL,
  l_extendedprice DECIMAL(15,2) NOT NULL, l_discount DECIMAL(15,2) NOT NULL,
  l_tax DECIMAL(15,2) NOT NULL, l_returnflag VARCHAR NOT NULL, l_linestatus VARCHAR NOT NULL,
  l_shipdate DATE NOT NULL, l_commitdate DATE NOT NULL, l_receiptdate DATE NOT NULL,
  l_shipinstruct VARCHAR NOT NULL, l_shipmode VARCHAR NOT NULL, l_comment VARCHAR NOT NULL)
  STORED AS DIAGON LOCATION '$work/lineitem'
  OPTIONS ('order_by' 'l_orderkey', 'merge.background' 'false');"
{
  echo "CREATE EXTERNAL TABLE src STORED AS PARQUET LOCATION '$parquet';"
  echo "$create"
  for i in $(seq 0 19); do
    echo "INSERT INTO lineitem SELECT * FROM src WHERE l_orderkey % 20 = $i;"
  done
} > "$work/load.sql"
"$bin" -q -f "$work/load.sql" > /dev/null
echo "parts before: $("$bin" -q --format csv -c "CREATE EXTERNAL TABLE lineitem STORED AS DIAGON LOCATION '$work/lineitem';" -c "SELECT count(*) FROM diagon_parts('lineitem');" | tail -1)"

/usr/bin/time -v "$bin" -q \
  -c "CREATE EXTERNAL TABLE lineitem STORED AS DIAGON LOCATION '$work/lineitem';" \
  -c "SELECT * FROM diagon_optimize('lineitem', true);" \
  > "$work/out.txt" 2> "$work/time.txt"
cat "$work/out.txt"
grep -E "Elapsed|Maximum resident|User time|System time" "$work/time.txt"
echo "rows after: $("$bin" -q --format csv -c "CREATE EXTERNAL TABLE lineitem STORED AS DIAGON LOCATION '$work/lineitem';" -c "SELECT count(*) FROM lineitem;" | tail -1)"
