-- diagon quick start: run with `cargo run -- -f examples/quickstart.sql`.
-- Creates a table under ./target/quickstart, loads 200,000 rows, and shows
-- how the sparse primary index, min/max statistics and a skip index prune
-- granules, then deletes rows and merges parts; then searches text.
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
OPTIONS ('order_by' 'id', 'granularity' '8192', 'codec.ts' 'doubledelta,lz4',
         'skip_index.user_id' 'bloom_filter(0.01)');

INSERT INTO events
SELECT value,
       to_timestamp(1700000000 + value * 60),
       CAST((value * 7919) % 100003 AS INT),
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

-- user_id is scattered, so every granule's min/max spans all users; its
-- Bloom filter skip index finds the granules that may hold one user:
-- see granules_pruned_by_skip_index_user_id.
SELECT count(*) FROM events WHERE user_id = 42;
EXPLAIN ANALYZE SELECT count(*) FROM events WHERE user_id = 42;

-- Codecs chosen per column, and sizes.
SELECT "column", codec, compressed_bytes, uncompressed_bytes FROM diagon_columns('events');

-- Delete rows: masked at once, purged by the next merge.
DELETE FROM events WHERE kind = 'view' AND id <= 1000;
SELECT count(*) FROM events WHERE id <= 1000;

-- Merge every part into one (drops the deleted rows).
SELECT * FROM diagon_optimize('events', true);
SELECT part, rows, deleted_rows, level, layout FROM diagon_parts('events');

-- Full-text search: a text index on a column, match() as a filter answered
-- by the index inside the scan, bm25() as a score, best first.
CREATE EXTERNAL TABLE notes (id BIGINT NOT NULL, body VARCHAR)
STORED AS DIAGON
LOCATION 'target/quickstart/notes'
OPTIONS ('order_by' 'id', 'text_index' 'body', 'analyzer.body' 'english');

INSERT INTO notes
SELECT value,
       CASE value % 5
         WHEN 0 THEN 'Wireless headphones with noise cancelling'
         WHEN 1 THEN 'Wired headphones, a long cable'
         WHEN 2 THEN 'Running shoes for trail running'
         WHEN 3 THEN 'A speaker for parties'
         ELSE 'Headphone stand'
       END || ' #' || value
FROM generate_series(1, 50000);

SELECT count(*) FROM notes WHERE match(body, '+headphones -cable');
SELECT id, body, bm25(body, 'wireless headphones') AS score
FROM notes WHERE match(body, 'wireless headphones') AND id > 100
ORDER BY score DESC LIMIT 3;
EXPLAIN SELECT id, bm25(body, '"noise cancelling"') AS score
FROM notes WHERE match(body, '"noise cancelling"') ORDER BY score DESC LIMIT 3;
