//! The data-dir catalog across restarts: dropped schemas stay dropped, a
//! CREATE TABLE AS that a crash interrupted leaves no table, and one still
//! running in another process is left alone.

use datafusion::prelude::SessionContext;

fn session(dir: &std::path::Path) -> SessionContext {
    let ctx = SessionContext::new();
    diagon::sql::use_data_dir(&ctx, dir).unwrap();
    ctx
}

#[tokio::test]
async fn a_dropped_schema_stays_dropped() {
    let dir = tempfile::tempdir().unwrap();
    {
        let ctx = session(dir.path());
        crate::common::query(&ctx, "CREATE SCHEMA s").await;
        crate::common::query(&ctx, "CREATE TABLE s.t AS VALUES (1), (2)").await;
        crate::common::query(&ctx, "CREATE TABLE kept AS VALUES (3)").await;
        crate::common::query(&ctx, "DROP SCHEMA s CASCADE").await;
        assert!(ctx.sql("SELECT * FROM s.t").await.is_err());
    }
    let ctx = session(dir.path());
    let catalog = ctx.catalog("datafusion").unwrap();
    assert_eq!(catalog.schema_names(), vec!["public".to_string()]);
    assert!(
        !dir.path().join("s").exists(),
        "the schema's files are gone"
    );
    assert!(
        crate::common::query(&ctx, "SELECT * FROM kept")
            .await
            .contains("| 3 ")
    );
    // The name can be used again.
    crate::common::query(&ctx, "CREATE SCHEMA s").await;
    crate::common::query(&ctx, "CREATE TABLE s.t AS VALUES (4)").await;
    let ctx = session(dir.path());
    assert!(
        crate::common::query(&ctx, "SELECT * FROM s.t")
            .await
            .contains("| 4 ")
    );
}

/// An incarnation marked as being created: a crash left it (its marker is
/// old) or another process is still filling it (its marker is recent).
async fn half_created(dir: &std::path::Path, name: &str, began_ms: i64) {
    let home = dir.join("public").join(name);
    let id = "0000000000000001deadbeef";
    let log = home.join(id).join("_log");
    std::fs::create_dir_all(&log).unwrap();
    // A committed version 0, as `persist` writes before the rows.
    let source = tempfile::tempdir().unwrap();
    let ctx = session(source.path());
    crate::common::query(&ctx, "CREATE TABLE x AS VALUES (1)").await;
    let incarnation = std::fs::read_dir(source.path().join("public/x"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.is_dir())
        .unwrap();
    std::fs::copy(
        incarnation.join("_log/00000000000000000000.commit"),
        log.join("00000000000000000000.commit"),
    )
    .unwrap();
    std::fs::write(home.join(format!("{id}.creating")), began_ms.to_le_bytes()).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_create_table_as_leaves_no_table() {
    let dir = tempfile::tempdir().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    half_created(dir.path(), "crashed", now - 3_600_000).await;
    half_created(dir.path(), "running", now).await;
    let ctx = session(dir.path());
    assert!(ctx.sql("SELECT * FROM crashed").await.is_err());
    assert!(ctx.sql("SELECT * FROM running").await.is_err());
    assert!(
        !dir.path().join("public/crashed").exists(),
        "a crashed creation is swept"
    );
    assert!(
        dir.path().join("public/running").exists(),
        "a creation still under way is left alone"
    );
    // The name is free for a new table.
    crate::common::query(&ctx, "CREATE TABLE crashed AS VALUES (5)").await;
    assert!(
        crate::common::query(&ctx, "SELECT * FROM crashed")
            .await
            .contains("| 5 ")
    );
}

/// ALTER TABLE in the data-dir catalog: the altering session and a new one
/// see the new columns, and so does a session that had the table open
/// before (the catalog reopens a table whose columns changed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_altered_table_is_seen_by_every_session() {
    let dir = tempfile::tempdir().unwrap();
    let a = session(dir.path());
    crate::common::query(&a, "CREATE TABLE t (id BIGINT, name VARCHAR)").await;
    crate::common::query(&a, "INSERT INTO t VALUES (1, 'x'), (2, NULL)").await;
    let b = session(dir.path());
    crate::common::query(&b, "SELECT * FROM t").await;

    let alter = "ALTER TABLE t ADD COLUMN n INT DEFAULT 3, RENAME COLUMN name TO label";
    diagon::sql::sql(&a, alter).await.unwrap();
    crate::common::query(&a, "INSERT INTO t (id) VALUES (3)").await;
    let want = "+----+-------+---+\n\
                | id | label | n |\n\
                +----+-------+---+\n\
                | 1  | x     | 3 |\n\
                | 2  |       | 3 |\n\
                | 3  |       | 3 |\n\
                +----+-------+---+";
    for ctx in [&a, &b, &session(dir.path())] {
        assert_eq!(
            crate::common::query(ctx, "SELECT * FROM t ORDER BY id").await,
            want
        );
    }
    // A new default is what every session's inserts write.
    diagon::sql::sql(&a, "ALTER TABLE t ALTER COLUMN n SET DEFAULT 9")
        .await
        .unwrap();
    crate::common::query(&b, "INSERT INTO t (id) VALUES (4)").await;
    let row = crate::common::query(&a, "SELECT n FROM t WHERE id = 4").await;
    assert!(row.contains("| 9 |"), "{row}");
}

/// An external table altered by another session: a session holding the
/// old columns is refused, for reads and writes, rather than reading or
/// writing the wrong columns; recreating the table picks the change up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_with_the_old_columns_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let create = format!(
        "CREATE EXTERNAL TABLE t (id BIGINT, a INT) STORED AS DIAGON LOCATION '{}'",
        dir.path().join("t").display()
    );
    let a = crate::common::context(2);
    crate::common::query(&a, &create).await;
    crate::common::query(&a, "INSERT INTO t VALUES (1, 10)").await;
    let b = crate::common::context(2);
    let reopen = format!(
        "CREATE EXTERNAL TABLE t STORED AS DIAGON LOCATION '{}'",
        dir.path().join("t").display()
    );
    crate::common::query(&b, &reopen).await;

    diagon::sql::sql(&a, "ALTER TABLE t DROP COLUMN a, ADD COLUMN b INT")
        .await
        .unwrap();
    for sql in [
        "SELECT * FROM t",
        "INSERT INTO t VALUES (2, 20)",
        "DELETE FROM t WHERE a = 10",
    ] {
        let error = match b.sql(sql).await {
            Ok(df) => df.collect().await.unwrap_err(),
            Err(e) => e,
        };
        assert!(error.to_string().contains("altered"), "{sql}: {error}");
    }
    crate::common::query(&a, "SELECT * FROM t").await;
    let rows = crate::common::query(&a, "SELECT count(*) AS n, count(b) AS b FROM t").await;
    assert!(rows.contains("| 1 | 0 |"), "{rows}");
    crate::common::query(&b, "DROP TABLE t").await;
    crate::common::query(&b, &reopen).await;
    let rows = crate::common::query(&b, "SELECT * FROM t").await;
    assert!(rows.contains("| id | b |"), "{rows}");
}
