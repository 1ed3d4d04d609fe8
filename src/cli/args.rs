//! The command line: the same flags as `datafusion-cli`, so every habit
//! carries over.

use std::num::NonZeroUsize;
use std::path::Path;

use clap::Parser;
use datafusion_cli::object_storage::instrumented::InstrumentedObjectStoreMode;
use datafusion_cli::object_storage::is_stdin_location;
use datafusion_cli::pool_type::PoolType;
use datafusion_cli::print_format::PrintFormat;
use datafusion_cli::print_options::MaxRows;

#[derive(Debug, Parser, PartialEq)]
#[clap(author, version, about = "diagon: DataFusion's SQL CLI with diagon tables (STORED AS DIAGON)", long_about = None)]
pub struct Args {
    #[clap(
        short = 'p',
        long,
        help = "Path to your data, default to current directory",
        value_parser(parse_valid_data_dir)
    )]
    pub data_path: Option<String>,

    #[clap(
        long,
        help = "Keep tables in this directory: plain CREATE TABLE, CREATE TABLE AS, CREATE SCHEMA and DROP TABLE act on diagon tables stored there, so a restarted CLI finds them (created if missing)"
    )]
    pub data_dir: Option<std::path::PathBuf>,

    #[clap(
        short = 'b',
        long,
        help = "The batch size of each query, or use DataFusion default",
        value_parser(parse_batch_size)
    )]
    pub batch_size: Option<usize>,

    #[clap(short = 'c', long, num_args = 0.., help = "Execute the given command string(s), then exit. Commands are expected to be non empty.", value_parser(parse_command))]
    pub command: Vec<String>,

    #[clap(
        short = 'm',
        long,
        help = "The memory pool limitation (e.g. '10g'), default to None (no limit)",
        value_parser(parse_memory_limit)
    )]
    pub memory_limit: Option<usize>,

    #[clap(short, long, num_args = 0.., help = "Execute commands from file(s), then exit", value_parser(parse_valid_file))]
    pub file: Vec<String>,

    #[clap(short = 'r', long, num_args = 0.., help = "Run the provided files on startup instead of ~/.datafusionrc", value_parser(parse_valid_file), conflicts_with = "file")]
    pub rc: Option<Vec<String>>,

    #[clap(long, value_enum, default_value_t = PrintFormat::Automatic)]
    pub format: PrintFormat,

    #[clap(
        short,
        long,
        help = "Reduce printing other than the results and work quietly"
    )]
    pub quiet: bool,

    #[clap(long, help = "Specify the memory pool type 'greedy' or 'fair'", default_value_t = PoolType::Greedy)]
    pub mem_pool_type: PoolType,

    #[clap(
        long,
        help = "The number of top memory consumers to display when query fails due to memory exhaustion. To disable memory consumer tracking, set this value to 0",
        default_value = "3"
    )]
    pub top_memory_consumers: usize,

    #[clap(
        long,
        help = "The max number of rows to display for 'Table' format\n[possible values: numbers(0/10/...), inf(no limit)]",
        default_value = "40"
    )]
    pub maxrows: MaxRows,

    #[clap(long, help = "Enables console syntax highlighting")]
    pub color: bool,

    #[clap(
        short = 'd',
        long,
        help = "Available disk space for spilling queries (e.g. '10g'), default to None (uses DataFusion's default value of '100g')",
        value_parser(parse_disk_limit)
    )]
    pub disk_limit: Option<usize>,

    #[clap(long, help = "Specify the default object_store_profiling mode, defaults to 'disabled'.\n[possible values: disabled, summary, trace]", default_value_t = InstrumentedObjectStoreMode::Disabled)]
    pub object_store_profiling: InstrumentedObjectStoreMode,
}

impl Args {
    pub fn repl_mode(&self) -> bool {
        self.command.is_empty() && self.file.is_empty()
    }

    pub fn reads_sql_from_stdin(&self) -> bool {
        self.repl_mode() || self.file.iter().any(|f| is_stdin_location(f))
    }

    pub fn top_memory_consumers(&self) -> Option<NonZeroUsize> {
        NonZeroUsize::new(self.top_memory_consumers)
    }
}

fn parse_valid_file(file: &str) -> Result<String, String> {
    if Path::new(file).is_file() || is_stdin_location(file) {
        Ok(file.to_string())
    } else {
        Err(format!("Invalid file '{file}'"))
    }
}

fn parse_valid_data_dir(dir: &str) -> Result<String, String> {
    if Path::new(dir).is_dir() {
        Ok(dir.to_string())
    } else {
        Err(format!("Invalid data directory '{dir}'"))
    }
}

fn parse_batch_size(size: &str) -> Result<usize, String> {
    match size.parse::<usize>() {
        Ok(size) if size > 0 => Ok(size),
        _ => Err(format!("Invalid batch size '{size}'")),
    }
}

fn parse_command(command: &str) -> Result<String, String> {
    if command.is_empty() {
        Err("-c flag expects only non empty commands".to_string())
    } else {
        Ok(command.to_string())
    }
}

fn parse_memory_limit(size: &str) -> Result<usize, String> {
    parse_size(size, "memory pool size")
}

fn parse_disk_limit(size: &str) -> Result<usize, String> {
    parse_size(size, "disk limit")
}

/// Parses sizes such as `512`, `64k`, `10g` (binary units, as datafusion-cli).
fn parse_size(size: &str, label: &str) -> Result<usize, String> {
    let lower = size.trim().to_ascii_lowercase();
    let digits = lower
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(lower.len());
    if digits == 0 {
        return Err(format!("Invalid {label} '{size}'"));
    }
    let number: usize = lower[..digits]
        .parse()
        .map_err(|_| format!("Invalid numeric value in {label} '{size}'"))?;
    let shift = match &lower[digits..] {
        "" | "b" => 0,
        "k" | "kb" => 10,
        "m" | "mb" => 20,
        "g" | "gb" => 30,
        "t" | "tb" => 40,
        _ => return Err(format!("Invalid {label} '{size}'")),
    };
    number
        .checked_mul(1usize << shift)
        .ok_or_else(|| format!("{label} '{size}' is too large"))
}
