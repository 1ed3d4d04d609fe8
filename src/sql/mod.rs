//! The DataFusion glue: the only layer that knows about `Expr`,
//! `ExecutionPlan` and `SessionContext`.

pub mod alter;
pub mod catalog;
pub mod config;
pub mod definition;
pub mod dml;
pub mod factory;
pub mod functions;
pub mod highlight;
pub mod provider;
pub mod pruning;
pub mod scan;
pub mod search;
pub mod sidx;
pub mod sink;
pub mod skipping;
pub mod stores;
pub mod text;
pub mod topk;

use std::sync::Arc;

use datafusion::execution::SessionStateBuilder;
use datafusion::prelude::{SessionConfig, SessionContext};

pub use alter::sql;
pub use config::DiagonConfig;
pub use factory::DiagonTableFactory;
pub use provider::DiagonTableProvider;

/// diagon's errors cross into DataFusion here, at the glue, and nowhere else.
impl From<crate::error::Error> for datafusion::error::DataFusionError {
    fn from(e: crate::error::Error) -> Self {
        datafusion::error::DataFusionError::External(Box::new(e))
    }
}

/// The name after `STORED AS`.
pub const FORMAT_NAME: &str = "DIAGON";

/// Installs diagon on a session: the `STORED AS DIAGON` table factory, the
/// `diagon_parts`, `diagon_columns`, `diagon_terms`, `diagon_search`,
/// `diagon_optimize`, `diagon_move` and `diagon_alter` table functions, the text search functions `match`,
/// `bm25` and `highlight` with the analyzer rule that ties them to their
/// columns, and the `diagon.*` settings.
pub fn register(ctx: &SessionContext) {
    ctx.register_udtf(
        "diagon_parts",
        Arc::new(functions::DiagonListingFunction::parts()),
    );
    ctx.register_udtf(
        "diagon_columns",
        Arc::new(functions::DiagonListingFunction::columns()),
    );
    ctx.register_udtf(
        "diagon_optimize",
        Arc::new(functions::DiagonListingFunction::optimize()),
    );
    ctx.register_udtf(
        "diagon_move",
        Arc::new(functions::DiagonListingFunction::move_parts()),
    );
    ctx.register_udtf(
        "diagon_terms",
        Arc::new(functions::DiagonListingFunction::terms()),
    );
    ctx.register_udtf("diagon_search", Arc::new(search::DiagonSearchFunction));
    ctx.register_udtf("diagon_alter", Arc::new(alter::DiagonAlterFunction));
    ctx.register_udtf("diagon_flush", Arc::new(sidx::DiagonFlushFunction));
    ctx.register_udf(text::MatchFunction::udf().as_ref().clone());
    ctx.register_udf(text::Bm25Function::udf().as_ref().clone());
    ctx.register_udf(highlight::HighlightFunction::udf().as_ref().clone());
    use datafusion::optimizer::AnalyzerRule;
    let rule = text::TextSearchRule;
    let known = ctx
        .state()
        .analyzer()
        .rules
        .iter()
        .any(|r| r.name() == rule.name());
    if !known {
        ctx.add_analyzer_rule(Arc::new(rule));
    }
    let state = ctx.state_ref();
    let mut state = state.write();
    use datafusion::physical_optimizer::PhysicalOptimizerRule;
    let limit_rule = topk::ScoreLimitRule;
    if !state
        .physical_optimizers()
        .iter()
        .any(|r| r.name() == limit_rule.name())
    {
        let current = state.clone();
        *state = SessionStateBuilder::new_from_existing(current)
            .with_physical_optimizer_rule(Arc::new(limit_rule))
            .build();
    }
    state
        .table_factories_mut()
        .insert(FORMAT_NAME.to_string(), Arc::new(DiagonTableFactory));
    if state
        .config()
        .options()
        .extensions
        .get::<DiagonConfig>()
        .is_none()
    {
        state
            .config_mut()
            .options_mut()
            .extensions
            .insert(DiagonConfig::default());
    }
}

/// A new session with diagon installed and DataFusion's defaults.
pub fn new_context(config: SessionConfig) -> SessionContext {
    let state = SessionStateBuilder::new()
        .with_config(config)
        .with_default_features()
        .build();
    let ctx = SessionContext::new_with_state(state);
    register(&ctx);
    ctx
}

/// Makes the session's default catalog a [`catalog::DiagonCatalog`] over
/// `dir` (created if missing): plain `CREATE TABLE`, `CREATE TABLE ... AS`,
/// `CREATE SCHEMA` and `DROP TABLE` then act on diagon tables stored there.
pub fn use_data_dir(
    ctx: &SessionContext,
    dir: impl Into<std::path::PathBuf>,
) -> datafusion::error::Result<()> {
    let name = ctx.state().config_options().catalog.default_catalog.clone();
    ctx.register_catalog(name, Arc::new(catalog::DiagonCatalog::open(dir)?));
    Ok(())
}

/// Runs a future to completion from synchronous methods (a catalog's,
/// a table function's), which DataFusion calls from inside its async
/// runtime.
pub(crate) fn block_on<F>(future: F) -> F::Output
where
    F: std::future::Future + Send,
    F::Output: Send,
{
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(|| handle.block_on(future))
        }
        // A current-thread runtime (or none) cannot be blocked on from within:
        // run the future on a runtime of its own, on another thread.
        _ => std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .expect("a tokio runtime")
                        .block_on(future)
                })
                .join()
                .expect("catalog thread")
        }),
    }
}
