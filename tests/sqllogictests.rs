//! Runs every `sql-tests/*.slt` file against a fresh session with diagon
//! registered. Files say `control substitution on` and put tables under
//! `${__TEST_DIR__}`, a fresh directory per file; each `connection NAME` is a
//! new session over the same directory (how reopening is tested).
//!
//! An S3 server on loopback (`tests/it/s3.rs`) serves every file; files
//! reach it at `${S3_ENDPOINT}` (bucket `diagon`, keys `diagon-test` /
//! `diagon-test-secret`).
//!
//! `cargo test --test sqllogictests -- NAME` runs only files whose path
//! contains NAME; `--complete` rewrites the expected results of those files
//! from what diagon returns (review the diff before committing it).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use arrow::array::{Array, ArrayRef, AsArray};
use arrow::datatypes::{DataType, Decimal128Type, DecimalType, Float32Type, Float64Type};
use arrow::util::display::{ArrayFormatter, FormatOptions};
use async_trait::async_trait;
use datafusion::error::DataFusionError;
use datafusion::prelude::{SessionConfig, SessionContext};
use sqllogictest::{AsyncDB, DBOutput, DefaultColumnType, Normalizer, Runner};

#[allow(dead_code)]
#[path = "it/s3.rs"]
mod s3;

struct Diagon {
    ctx: SessionContext,
}

impl Diagon {
    /// A session; with `data_dir`, plain tables are diagon tables stored
    /// there (every connection of a file shares it, as a restarted CLI would).
    fn new(data_dir: Option<&Path>) -> Self {
        let config = SessionConfig::new()
            .with_information_schema(true)
            .with_target_partitions(4);
        let ctx = diagon::sql::new_context(config);
        if let Some(dir) = data_dir {
            diagon::sql::use_data_dir(&ctx, dir).expect("data directory");
        }
        Diagon { ctx }
    }
}

/// How a file runs: `sql-tests/catalog/*.slt` run twice, over in-memory
/// tables (DataFusion's own answers, the oracle) and over diagon tables in
/// a data directory; the other files once.
fn modes(path: &Path) -> &'static [Mode] {
    if path.parent().is_some_and(|p| p.ends_with("catalog")) {
        &[Mode::Memory, Mode::DataDir]
    } else {
        &[Mode::Memory]
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Mode {
    Memory,
    DataDir,
}

#[async_trait]
impl AsyncDB for Diagon {
    type Error = DataFusionError;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, DataFusionError> {
        let df = diagon::sql::sql(&self.ctx, sql).await?;
        let types: Vec<_> = df
            .schema()
            .fields()
            .iter()
            .map(|f| column_type(f.data_type()))
            .collect();
        let mut rows = Vec::new();
        for batch in df.collect().await? {
            for row in 0..batch.num_rows() {
                let cells = batch
                    .columns()
                    .iter()
                    .map(|c| cell(c, row))
                    .collect::<Result<Vec<_>, _>>()?;
                rows.push(cells);
            }
        }
        if rows.is_empty() && types.is_empty() {
            Ok(DBOutput::StatementComplete(0))
        } else {
            Ok(DBOutput::Rows { types, rows })
        }
    }

    fn engine_name(&self) -> &str {
        "diagon"
    }

    async fn sleep(duration: Duration) {
        tokio::time::sleep(duration).await
    }

    async fn shutdown(&mut self) {}
}

fn column_type(data_type: &DataType) -> DefaultColumnType {
    use DataType::*;
    match data_type {
        Int8 | Int16 | Int32 | Int64 | UInt8 | UInt16 | UInt32 | UInt64 => {
            DefaultColumnType::Integer
        }
        Float16 | Float32 | Float64 | Decimal128(..) => DefaultColumnType::FloatingPoint,
        Utf8 | LargeUtf8 | Utf8View => DefaultColumnType::Text,
        _ => DefaultColumnType::Any,
    }
}

/// Formats a value as DataFusion's own sqllogictest engine does: `NULL`,
/// `(empty)` for empty strings, floats and decimals without trailing zeros.
fn cell(column: &ArrayRef, row: usize) -> Result<String, DataFusionError> {
    if column.is_null(row) {
        return Ok("NULL".into());
    }
    Ok(match column.data_type() {
        DataType::Boolean => column.as_boolean().value(row).to_string(),
        DataType::Float32 => float(
            f64::from(column.as_primitive::<Float32Type>().value(row)),
            column.as_primitive::<Float32Type>().value(row).to_string(),
        ),
        DataType::Float64 => {
            let v = column.as_primitive::<Float64Type>().value(row);
            float(v, v.to_string())
        }
        DataType::Decimal128(p, s) => trim_number(Decimal128Type::format_decimal(
            column.as_primitive::<Decimal128Type>().value(row),
            *p,
            *s,
        )),
        DataType::Utf8 => text(column.as_string::<i32>().value(row)),
        DataType::LargeUtf8 => text(column.as_string::<i64>().value(row)),
        DataType::Utf8View => text(column.as_string_view().value(row)),
        _ => ArrayFormatter::try_new(column.as_ref(), &FormatOptions::default().with_null("NULL"))?
            .value(row)
            .to_string(),
    })
}

fn float(v: f64, shown: String) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "Infinity".into()
    } else if v == f64::NEG_INFINITY {
        "-Infinity".into()
    } else {
        trim_number(shown)
    }
}

/// `17.50` → `17.5`, `3.0` → `3`.
fn trim_number(s: String) -> String {
    if s.contains('.') && !s.contains('e') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

fn text(s: &str) -> String {
    if s.is_empty() {
        "(empty)".into()
    } else {
        s.trim_end_matches('\n').into()
    }
}

#[allow(clippy::ptr_arg)] // the signature sqllogictest's Normalizer requires
fn normalizer(s: &String) -> String {
    s.trim_end().to_string()
}

fn validator(normalizer: Normalizer, actual: &[Vec<String>], expected: &[String]) -> bool {
    let expected: Vec<String> = expected.iter().map(normalizer).collect();
    // A multi-line cell (an EXPLAIN plan) is compared line by line.
    let actual: Vec<String> = actual
        .iter()
        .flat_map(|r| {
            r.join(" ")
                .lines()
                .map(|l| l.trim_end().to_string())
                .collect::<Vec<_>>()
        })
        .collect();
    actual == expected
}

fn slt_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = Vec::new();
    for path in std::fs::read_dir(dir)
        .expect("sql-tests directory")
        .filter_map(|e| e.ok().map(|e| e.path()))
    {
        if path.is_dir() {
            files.extend(slt_files(&path));
        } else if path.extension().is_some_and(|x| x == "slt") {
            files.push(path);
        }
    }
    files.sort();
    files
}

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let complete = args.iter().any(|a| a == "--complete");
    let filters: Vec<String> = args.into_iter().filter(|a| !a.starts_with('-')).collect();
    // The runtime variable, not `env!`: a shared target directory may hold a
    // binary built from another checkout of the same sources.
    let root = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into());
    let dir = root.join("sql-tests");
    let server = s3::S3Server::start().await;
    let (mut passed, mut failed) = (0, 0);
    for path in slt_files(&dir) {
        let name = path.to_string_lossy().to_string();
        if !filters.is_empty() && !filters.iter().any(|f| name.contains(f)) {
            continue;
        }
        for &mode in modes(&path) {
            let data_dir = tempfile::tempdir().expect("temporary directory");
            let dir = (mode == Mode::DataDir).then(|| data_dir.path().to_path_buf());
            let mut runner = Runner::new(move || {
                let dir = dir.clone();
                async move { Ok(Diagon::new(dir.as_deref())) }
            });
            runner.set_var("S3_ENDPOINT".into(), server.endpoint.clone());
            runner.with_normalizer(normalizer);
            runner.with_validator(validator);
            let label = match mode {
                Mode::Memory => String::new(),
                Mode::DataDir => " (diagon data dir)".to_string(),
            };
            if complete && mode == Mode::Memory {
                let result = runner
                    .update_test_file(
                        &path,
                        " ",
                        validator,
                        normalizer,
                        sqllogictest::default_column_validator,
                    )
                    .await;
                match result {
                    Ok(()) => println!("completed {}", path.display()),
                    Err(e) => {
                        failed += 1;
                        println!("FAILED to complete {}: {e}", path.display());
                    }
                }
                continue;
            }
            if complete {
                continue;
            }
            match runner.run_file_async(&path).await {
                Ok(()) => {
                    passed += 1;
                    println!("ok     {}{label}", path.display());
                }
                Err(e) => {
                    failed += 1;
                    println!("FAILED {}{label}\n{}", path.display(), e.display(false));
                }
            }
            runner.shutdown_async().await;
        }
    }
    println!("{passed} passed, {failed} failed");
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
