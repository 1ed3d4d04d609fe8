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
