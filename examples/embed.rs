//! Embedding diagon in your own DataFusion engine: one call registers the
//! `STORED AS DIAGON` table factory and the `diagon.*` settings.
//!
//! `cargo run --example embed [DIR]` (default: a fresh temporary directory).

use datafusion::error::Result;
use datafusion::prelude::SessionContext;

#[tokio::main]
async fn main() -> Result<()> {
    let ctx = SessionContext::new();
    diagon::register(&ctx);

    let temp = std::env::temp_dir().join(format!("diagon-embed-{}", std::process::id()));
    let dir = std::env::args().nth(1).map(Into::into).unwrap_or(temp);
    ctx.sql(&format!(
        "CREATE EXTERNAL TABLE docs (id BIGINT NOT NULL, title VARCHAR, price DOUBLE)
         STORED AS DIAGON LOCATION '{}'
         OPTIONS ('order_by' 'id', 'granularity' '1024')",
        dir.display()
    ))
    .await?;
    ctx.sql(
        "INSERT INTO docs SELECT value, 'title ' || value, (value % 500) * 1.5
         FROM generate_series(1, 50000)",
    )
    .await?
    .collect()
    .await?;

    ctx.sql("SELECT count(*), avg(price) FROM docs WHERE id BETWEEN 1000 AND 2000")
        .await?
        .show()
        .await?;
    ctx.sql("SELECT id, title FROM docs ORDER BY id DESC LIMIT 3")
        .await?
        .show()
        .await?;
    println!("table stored in {}", dir.display());
    Ok(())
}
