//! The `diagon` binary: datafusion-cli flags, diagon tables with OPTIONS,
//! and the quick start script.

use std::path::Path;
use std::process::Command;

fn diagon(cwd: &Path, args: &[&str]) -> (bool, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_diagon"))
        .current_dir(cwd)
        .args(args)
        .output()
        .expect("run diagon");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

#[test]
fn quickstart_runs_and_shows_pruning() {
    let dir = tempfile::tempdir().unwrap();
    let script = crate::common::manifest_dir().join("examples/quickstart.sql");
    let (ok, out) = diagon(
        dir.path(),
        &["-q", "--format", "csv", "-f", script.to_str().unwrap()],
    );
    assert!(ok, "{out}");
    assert!(!out.contains("Error"), "{out}");
    assert!(
        out.contains("200000,1,200000"),
        "row count and key range: {out}"
    );
    assert!(out.contains("1001,"), "1001 rows in the key range: {out}");
    assert!(out.contains("granules_pruned_by_primary_key=24"), "{out}");
    assert!(out.contains("200000,"), "{out}");
    assert!(dir.path().join("target/quickstart/events/_log").is_dir());
}

#[test]
fn commands_and_reopen_across_processes() {
    let dir = tempfile::tempdir().unwrap();
    let create = "CREATE EXTERNAL TABLE t (a INT, b VARCHAR) STORED AS DIAGON LOCATION 'tbl' OPTIONS ('order_by' 'a', 'codec.b' 'zstd(2)')";
    let (ok, out) = diagon(
        dir.path(),
        &[
            "-q",
            "-c",
            create,
            "-c",
            "INSERT INTO t VALUES (2, 'x'), (1, 'y')",
        ],
    );
    assert!(ok, "{out}");
    let (ok, out) = diagon(
        dir.path(),
        &[
            "-q",
            "--format",
            "csv",
            "-c",
            "CREATE EXTERNAL TABLE t STORED AS DIAGON LOCATION 'tbl'",
            "-c",
            "SELECT * FROM t",
        ],
    );
    assert!(ok, "{out}");
    assert!(out.contains("a,b\n1,y\n2,x"), "{out}");
}

#[test]
fn a_bad_option_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, out) = diagon(
        dir.path(),
        &[
            "-q",
            "-c",
            "CREATE EXTERNAL TABLE t (a INT) STORED AS DIAGON LOCATION 'tbl' OPTIONS ('granularity' 'x')",
        ],
    );
    assert!(!ok, "{out}");
    assert!(out.contains("option 'granularity'"), "{out}");
}

/// With `--data-dir`, plain tables are diagon tables a restarted CLI finds
/// again, and DROP TABLE deletes them.
#[test]
fn a_data_dir_keeps_tables_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // One CLI process per call, each `-c` a statement, CSV output.
    let session = |statements: &[&str]| {
        let mut args = vec![
            "-q",
            "--format",
            "csv",
            "--data-dir",
            data.to_str().unwrap(),
        ];
        for statement in statements {
            args.extend(["-c", statement]);
        }
        diagon(dir.path(), &args)
    };
    let (ok, out) = session(&[
        "CREATE TABLE t (id INT, s VARCHAR)",
        "INSERT INTO t VALUES (1, 'a'), (2, 'b')",
        "CREATE SCHEMA s2",
        "CREATE TABLE s2.u AS SELECT id * 10 AS x FROM t",
    ]);
    assert!(ok, "{out}");
    let (ok, out) = session(&[
        "SELECT sum(id), string_agg(s, '') FROM t",
        "SELECT sum(x) FROM s2.u",
        "DROP TABLE s2.u",
        "CREATE OR REPLACE TABLE t AS SELECT id + 10 AS id, s FROM t",
    ]);
    assert!(ok, "{out}");
    assert!(out.contains("3,ab"), "rows of t after a restart: {out}");
    assert!(out.contains("30"), "rows of s2.u after a restart: {out}");
    // The replaced table's files are gone; only the new one remains.
    let incarnations: Vec<_> = std::fs::read_dir(data.join("public/t"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(incarnations.len(), 1, "{incarnations:?}");
    let (ok, out) = session(&["SELECT * FROM s2.u"]);
    assert!(
        !ok || out.contains("not found"),
        "dropped table still there: {out}"
    );
    let (ok, out) = session(&["SELECT sum(id) FROM t"]);
    assert!(ok && out.contains("23"), "t replaced by itself: {out}");
    assert!(!data.join("s2/u").exists(), "dropped table's files remain");
    // Without --data-dir the CLI is datafusion-cli: nothing persists.
    let (ok, out) = diagon(dir.path(), &["-q", "-c", "SELECT * FROM t"]);
    assert!(!ok || out.contains("not found"), "{out}");
}

/// Table names in a data directory cannot reach outside it: a quoted path
/// as a table name finds nothing and deletes nothing.
#[test]
fn data_dir_table_names_stay_inside_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let outside = dir.path().join("outside");
    std::fs::create_dir_all(outside.join("_log")).unwrap();
    let escape = format!("DROP TABLE \"{}\"", outside.display());
    let (_, out) = diagon(
        dir.path(),
        &["-q", "--data-dir", data.to_str().unwrap(), "-c", &escape],
    );
    assert!(
        outside.join("_log").exists(),
        "a directory outside was deleted: {out}"
    );
    let (_, out) = diagon(
        dir.path(),
        &[
            "-q",
            "--data-dir",
            data.to_str().unwrap(),
            "-c",
            "DROP TABLE \"../outside\"",
        ],
    );
    assert!(
        outside.join("_log").exists(),
        "a relative name escaped: {out}"
    );
    let (ok, out) = diagon(
        dir.path(),
        &[
            "-q",
            "--data-dir",
            data.to_str().unwrap(),
            "-c",
            "CREATE TABLE \"../x\" (a INT)",
        ],
    );
    assert!(!ok || out.contains("cannot be a directory name"), "{out}");
    assert!(
        !dir.path().join("x").exists(),
        "a table was created outside: {out}"
    );
}
