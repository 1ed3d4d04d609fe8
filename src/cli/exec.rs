//! Runs SQL the way datafusion-cli does, with two differences: a
//! `CREATE EXTERNAL TABLE ... STORED AS DIAGON` is planned directly, and
//! an `ALTER TABLE` (which DataFusion does not plan) runs as diagon's.
//!
//! datafusion-cli checks every CREATE's OPTIONS against the built-in file
//! formats (CSV, JSON, Parquet) and rejects the diagon options; everything
//! else is handed to datafusion-cli unchanged.

use std::io::{BufRead, BufReader};
use std::time::Instant;

use datafusion::common::plan_datafusion_err;
use datafusion::error::{DataFusionError, Result};
use datafusion::prelude::SessionContext;
use datafusion::sql::parser::{DFParser, Statement};
use datafusion::sql::sqlparser::ast::AlterTable;
use datafusion_cli::command::{Command, OutputFormat};
use datafusion_cli::helper::CliHelper;
use datafusion_cli::print_options::PrintOptions;
use rustyline::Editor;
use rustyline::error::ReadlineError;

use diagon::sql::FORMAT_NAME;

fn is_diagon_create(statement: &Statement) -> bool {
    matches!(statement, Statement::CreateExternalTable(create) if create.file_type.eq_ignore_ascii_case(FORMAT_NAME))
}

/// An ALTER TABLE, which DataFusion does not plan and diagon runs.
fn as_alter(statement: &Statement) -> Option<&AlterTable> {
    match statement {
        Statement::Statement(s) => match s.as_ref() {
            datafusion::sql::sqlparser::ast::Statement::AlterTable(alter) => Some(alter),
            _ => None,
        },
        _ => None,
    }
}

fn is_diagon_own(statement: &Statement) -> bool {
    is_diagon_create(statement) || as_alter(statement).is_some()
}

/// Executes `sql` (one or more statements) and prints the results.
pub async fn exec_sql(ctx: &SessionContext, print_options: &PrintOptions, sql: &str) -> Result<()> {
    let dialect_name = ctx.state().config().options().sql_parser.dialect;
    let dialect = datafusion::sql::sqlparser::dialect::dialect_from_str(dialect_name)
        .ok_or_else(|| plan_datafusion_err!("Unsupported SQL dialect: {dialect_name}"))?;
    let statements = DFParser::parse_sql_with_dialect(sql, dialect.as_ref())?;
    if !statements.iter().any(is_diagon_own) {
        return datafusion_cli::exec::exec_from_commands(ctx, vec![sql.to_string()], print_options)
            .await;
    }
    for statement in statements {
        if is_diagon_own(&statement) {
            let started = Instant::now();
            if let Some(alter) = as_alter(&statement) {
                diagon::sql::alter::alter_table(ctx, alter).await?;
            } else {
                let plan = ctx.state().statement_to_plan(statement).await?;
                ctx.execute_logical_plan(plan).await?.collect().await?;
            }
            if !print_options.quiet {
                println!(
                    "0 row(s) fetched. \nElapsed {:.3} seconds.\n",
                    started.elapsed().as_secs_f64()
                );
            }
        } else {
            datafusion_cli::exec::exec_from_commands(
                ctx,
                vec![statement.to_string()],
                print_options,
            )
            .await?;
        }
    }
    Ok(())
}

pub async fn exec_from_commands(
    ctx: &SessionContext,
    commands: Vec<String>,
    print_options: &PrintOptions,
) -> Result<()> {
    for command in commands {
        exec_sql(ctx, print_options, &command).await?;
    }
    Ok(())
}

/// Runs files statement by statement: `--` comment lines are skipped, a
/// statement ends with `;`. An error in a terminated statement is printed
/// and the file goes on; an error in a trailing unterminated one is returned.
pub async fn exec_from_files(
    ctx: &SessionContext,
    files: Vec<String>,
    print_options: &PrintOptions,
) -> Result<()> {
    for file in files {
        let handle = std::fs::File::open(&file)
            .map_err(|e| DataFusionError::Execution(format!("cannot open '{file}': {e}")))?;
        let mut query = String::new();
        for line in BufReader::new(handle).lines() {
            let line =
                line.map_err(|e| DataFusionError::Execution(format!("cannot read '{file}': {e}")))?;
            if line.starts_with("#!") || line.trim_start().starts_with("--") {
                continue;
            }
            let line = line.trim_end();
            query.push_str(line);
            if line.ends_with(';') {
                if let Err(e) = exec_sql(ctx, print_options, &query).await {
                    eprintln!("{e}");
                }
                query.clear();
            } else {
                query.push('\n');
            }
        }
        if !query.trim().is_empty() {
            exec_sql(ctx, print_options, &query).await?;
        }
    }
    Ok(())
}

/// The interactive loop: SQL terminated by `;`, and datafusion-cli's
/// backslash commands (`\d`, `\q`, `\pset`, ...).
pub async fn exec_from_repl(
    ctx: &SessionContext,
    print_options: &mut PrintOptions,
) -> rustyline::Result<()> {
    let dialect = ctx.state().config().options().sql_parser.dialect;
    let mut editor = Editor::new()?;
    editor.set_helper(Some(CliHelper::new(&dialect, print_options.color)));
    editor.load_history(".history").ok();
    loop {
        match editor.readline("> ") {
            Ok(line) if line.starts_with('\\') => {
                editor.add_history_entry(line.trim_end())?;
                let command = line.split_whitespace().collect::<Vec<_>>().join(" ");
                match command[1..].parse::<Command>() {
                    Ok(Command::Quit) => break,
                    Ok(Command::OutputFormat(Some(sub))) => match sub.parse::<OutputFormat>() {
                        Ok(format) => {
                            if let Err(e) = format.execute(print_options) {
                                eprintln!("{e}")
                            }
                        }
                        Err(_) => eprintln!(
                            "'\\{}' is not a valid command, you can use '\\?' to see all commands",
                            &line[1..]
                        ),
                    },
                    Ok(Command::OutputFormat(None)) => {
                        println!("Output format is {:?}.", print_options.format)
                    }
                    Ok(cmd) => {
                        if let Err(e) = cmd.execute(ctx, print_options).await {
                            eprintln!("{e}")
                        }
                    }
                    Err(_) => eprintln!(
                        "'\\{}' is not a valid command, you can use '\\?' to see all commands",
                        &line[1..]
                    ),
                }
            }
            Ok(line) => {
                editor.add_history_entry(line.trim_end())?;
                tokio::select! {
                    result = exec_sql(ctx, print_options, &line) => {
                        if let Err(e) = result {
                            eprintln!("{e}");
                        }
                    }
                    _ = tokio::signal::ctrl_c() => println!("^C"),
                }
                let dialect = ctx.state().config().options().sql_parser.dialect;
                if let Some(helper) = editor.helper_mut() {
                    helper.set_dialect(&dialect);
                }
            }
            Err(ReadlineError::Interrupted) => println!("^C"),
            Err(ReadlineError::Eof) => {
                println!("\\q");
                break;
            }
            Err(e) => {
                eprintln!("Unknown error happened {e:?}");
                break;
            }
        }
    }
    editor.save_history(".history")
}
