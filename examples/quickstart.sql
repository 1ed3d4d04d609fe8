-- diagon quick start: run with `cargo run -- -f examples/quickstart.sql`.
-- Creates a table under ./target/quickstart, loads 200,000 rows, and shows
-- how the sparse primary index and min/max statistics prune granules.
-- Running it again appends another copy; delete ./target/quickstart to reset.

CREATE EXTERNAL TABLE events (
  id BIGINT NOT NULL,
  ts TIMESTAMP,
  user_id INT,
  kind VARCHAR,
  amount DOUBLE
)
STORED AS DIAGON
LOCATION 'target/quickstart/events'
OPTIONS ('order_by' 'id', 'granularity' '8192', 'codec.kind' 'zstd(3)');

INSERT INTO events
SELECT value,
       to_timestamp(1700000000 + value * 60),
       CAST(value % 1000 AS INT),
       CASE value % 4 WHEN 0 THEN 'click' WHEN 1 THEN 'view' WHEN 2 THEN 'cart' ELSE 'buy' END,
       (value % 997) * 0.25
FROM generate_series(1, 200000);

-- The table: parts and rows.
SELECT count(*) AS rows, min(id), max(id), min(ts), max(ts) FROM events;

-- A key range reads one granule of 25: see granules_pruned_by_primary_key.
SELECT count(*), sum(amount) FROM events WHERE id BETWEEN 100000 AND 101000;
EXPLAIN ANALYZE SELECT count(*), sum(amount) FROM events WHERE id BETWEEN 100000 AND 101000;

-- ts grows with id, so its min/max statistics prune too: granules_pruned_by_minmax.
SELECT kind, count(*), round(avg(amount), 2) FROM events
WHERE ts >= '2024-02-01' AND ts < '2024-02-03' GROUP BY kind ORDER BY kind;
EXPLAIN ANALYZE SELECT count(*) FROM events WHERE ts >= '2024-02-01' AND ts < '2024-02-03';

-- The newest rows: read backwards from the last granule, no sort.
SELECT * FROM events ORDER BY id DESC LIMIT 5;
EXPLAIN ANALYZE SELECT * FROM events ORDER BY id DESC LIMIT 5;
