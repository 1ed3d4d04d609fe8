//! `diagon`: the DataFusion SQL CLI with diagon tables built in.

mod cli;

use std::env;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use datafusion::common::config_err;
use datafusion::config::ConfigOptions;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::memory_pool::{
    FairSpillPool, GreedyMemoryPool, MemoryPool, TrackConsumersPool,
};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::logical_expr::ExplainFormat;
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion_cli::catalog::DynamicObjectStoreCatalog;
use datafusion_cli::functions::{
    ListFilesCacheFunc, MetadataCacheFunc, ParquetMetadataFunc, StatisticsCacheFunc,
};
use datafusion_cli::object_storage::StdinCarriesCommands;
use datafusion_cli::object_storage::instrumented::InstrumentedObjectStoreRegistry;
use datafusion_cli::pool_type::PoolType;
use datafusion_cli::print_options::PrintOptions;

use cli::args::Args;
use cli::exec;

/// The allocator datafusion-cli uses: decoding allocates a buffer per
/// granule and column, which the system allocator serves from fresh pages.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let result = main_inner().await;
    // Secondary indexes keep INSERTed rows in memory until flushed: a
    // session that ends persists them.
    let flushed = diagon::sidx::flush_all().await;
    if let Err(e) = result {
        println!("Error: {e}");
        return ExitCode::FAILURE;
    }
    if let Err(e) = flushed {
        println!("Error: {e}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

async fn main_inner() -> Result<()> {
    env_logger::init();
    let args = Args::parse();
    if !args.quiet {
        println!(
            "diagon v{} (DataFusion CLI v{})",
            env!("CARGO_PKG_VERSION"),
            datafusion_cli::DATAFUSION_CLI_VERSION
        );
    }
    if let Some(path) = &args.data_path {
        env::set_current_dir(Path::new(path))
            .map_err(|e| DataFusionError::Execution(format!("cannot enter '{path}': {e}")))?;
    }
    let (ctx, registry) = session_context(&args).await?;
    let mut print_options = PrintOptions {
        format: args.format,
        quiet: args.quiet,
        maxrows: args.maxrows,
        color: args.color,
        instrumented_registry: registry,
    };

    let rc = match &args.rc {
        Some(files) => files.clone(),
        None => env::home_dir()
            .map(|home| home.join(".datafusionrc"))
            .filter(|rc| rc.is_file())
            .map(|rc| vec![rc.to_string_lossy().into_owned()])
            .unwrap_or_default(),
    };
    if args.repl_mode() {
        if !rc.is_empty() {
            exec::exec_from_files(&ctx, rc, &print_options).await?;
        }
        return exec::exec_from_repl(&ctx, &mut print_options)
            .await
            .map_err(|e| DataFusionError::External(Box::new(e)));
    }
    if !args.file.is_empty() {
        exec::exec_from_files(&ctx, args.file.clone(), &print_options).await?;
    }
    if !args.command.is_empty() {
        exec::exec_from_commands(&ctx, args.command.clone(), &print_options).await?;
    }
    Ok(())
}

fn session_config(args: &Args) -> Result<SessionConfig> {
    let mut options = ConfigOptions::from_env()?;
    if let Some(batch_size) = args.batch_size {
        if batch_size == 0 {
            return config_err!("batch_size must be greater than 0");
        }
        options.execution.batch_size =
            datafusion::common::config::ConfigNonZeroUsize::try_new(batch_size)?;
    }
    if env::var_os("DATAFUSION_EXPLAIN_FORMAT").is_none() {
        options.explain.format = ExplainFormat::Tree;
    }
    if env::var_os("DATAFUSION_FORMAT_NULL").is_none() {
        options.format.null = String::from("NULL");
    }
    let mut config = SessionConfig::from(options).with_information_schema(true);
    if args.reads_sql_from_stdin() {
        config = config.with_extension(Arc::new(StdinCarriesCommands));
    }
    Ok(config)
}

/// The session datafusion-cli would build, with diagon registered; also
/// returns the object-store registry that `--object-store-profiling` reads.
async fn session_context(
    args: &Args,
) -> Result<(SessionContext, Arc<InstrumentedObjectStoreRegistry>)> {
    let mut runtime = RuntimeEnvBuilder::new();
    if let Some(limit) = args.memory_limit {
        let pool: Arc<dyn MemoryPool> = match (&args.mem_pool_type, args.top_memory_consumers()) {
            (PoolType::Fair, None) => Arc::new(FairSpillPool::new(limit)),
            (PoolType::Fair, Some(top)) => {
                Arc::new(TrackConsumersPool::new(FairSpillPool::new(limit), top))
            }
            (PoolType::Greedy, None) => Arc::new(GreedyMemoryPool::new(limit)),
            (PoolType::Greedy, Some(top)) => {
                Arc::new(TrackConsumersPool::new(GreedyMemoryPool::new(limit), top))
            }
        };
        runtime = runtime.with_memory_pool(pool);
    }
    if let Some(limit) = args.disk_limit {
        let disk = DiskManagerBuilder::default()
            .with_mode(DiskManagerMode::OsTmpDirectory)
            .with_max_temp_directory_size(limit as u64);
        runtime = runtime.with_disk_manager_builder(disk);
    }
    let registry = Arc::new(
        InstrumentedObjectStoreRegistry::new().with_profile_mode(args.object_store_profiling),
    );
    let runtime = runtime
        .with_object_store_registry(registry.clone())
        .build_arc()?;
    let ctx = SessionContext::new_with_config_rt(session_config(args)?, runtime).enable_url_table();
    ctx.refresh_catalogs().await?;
    if let Some(dir) = &args.data_dir {
        diagon::sql::use_data_dir(&ctx, dir)?;
    }
    ctx.register_catalog_list(Arc::new(DynamicObjectStoreCatalog::new(
        ctx.state().catalog_list().clone(),
        ctx.state_weak_ref(),
    )));
    let cache = ctx.task_ctx().runtime_env().cache_manager.clone();
    ctx.register_udtf("parquet_metadata", Arc::new(ParquetMetadataFunc {}));
    ctx.register_udtf(
        "metadata_cache",
        Arc::new(MetadataCacheFunc::new(cache.clone())),
    );
    ctx.register_udtf(
        "statistics_cache",
        Arc::new(StatisticsCacheFunc::new(cache.clone())),
    );
    ctx.register_udtf("list_files_cache", Arc::new(ListFilesCacheFunc::new(cache)));
    diagon::register(&ctx);
    Ok((ctx, registry))
}
