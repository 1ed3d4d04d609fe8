//! Object stores for the URLs a diagon `CREATE EXTERNAL TABLE` names (its
//! LOCATION and `cold_location`), built from the URL, the statement's
//! `aws.*`, `gcp.*` and `azure.*` options and the usual environment
//! variables, as datafusion-cli builds them for its own tables, and
//! registered with the session before the statement is planned.

use std::sync::Arc;

use datafusion::config::ExtensionOptions;
use datafusion::error::{DataFusionError, Result};
use datafusion::prelude::SessionContext;
use datafusion::sql::parser::CreateExternalTable;
use datafusion::sql::sqlparser::ast::Value;
use datafusion_cli::object_storage::{
    AwsOptions, GcpOptions, get_gcs_object_store_builder, get_s3_object_store_builder,
};
use object_store::azure::MicrosoftAzureBuilder;
use object_store::http::HttpBuilder;
use object_store::{ClientOptions, ObjectStore};
use url::Url;

/// Registers a store for each URL `create` names that needs one.
pub async fn register(ctx: &SessionContext, create: &CreateExternalTable) -> Result<()> {
    let options: Vec<(String, String)> = create
        .options
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), text(v)))
        .collect();
    let mut locations = create.locations.clone();
    locations.extend(
        options
            .iter()
            .filter(|(k, _)| k.strip_prefix("format.").unwrap_or(k) == "cold_location")
            .map(|(_, v)| v.clone()),
    );
    for location in locations {
        let Ok(url) = Url::parse(&location) else {
            continue; // a local path
        };
        if let Some(store) = build(&url, &options)
            .await
            .map_err(|e| DataFusionError::Plan(format!("object store for '{location}': {e}")))?
        {
            ctx.register_object_store(&url, store);
        }
    }
    Ok(())
}

/// An option's value as written.
fn text(value: &Value) -> String {
    match value {
        Value::SingleQuotedString(s) | Value::DoubleQuotedString(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The options under `prefix` (`aws.`), without it.
fn scoped<'a>(
    options: &'a [(String, String)],
    prefix: &'a str,
) -> impl Iterator<Item = (&'a str, &'a str)> {
    options.iter().filter_map(move |(k, v)| {
        let key = k.strip_prefix("format.").unwrap_or(k);
        key.strip_prefix(prefix).map(|k| (k, v.as_str()))
    })
}

/// The store for `url`, or `None` for schemes the session resolves itself
/// (local files, stores registered by whoever embeds diagon).
async fn build(url: &Url, options: &[(String, String)]) -> Result<Option<Arc<dyn ObjectStore>>> {
    let store: Arc<dyn ObjectStore> = match url.scheme() {
        "s3" | "s3a" => {
            let mut aws = AwsOptions::default();
            for (key, value) in scoped(options, "aws.") {
                aws.set(key, value)?;
            }
            Arc::new(
                get_s3_object_store_builder(url, &aws, false)
                    .await?
                    .build()?,
            )
        }
        "gs" | "gcs" => {
            let mut gcp = GcpOptions::default();
            for (key, value) in scoped(options, "gcp.") {
                gcp.set(key, value)?;
            }
            Arc::new(get_gcs_object_store_builder(url, &gcp)?.build()?)
        }
        "az" | "azure" | "abfs" | "abfss" | "adl" => {
            let mut builder = MicrosoftAzureBuilder::from_env().with_url(url.as_str());
            for (key, value) in scoped(options, "azure.") {
                let key = key.parse().map_err(|e| {
                    DataFusionError::Configuration(format!("option 'azure.{key}': {e}"))
                })?;
                builder = builder.with_config(key, value);
            }
            Arc::new(builder.build()?)
        }
        "http" | "https" => Arc::new(
            HttpBuilder::new()
                .with_client_options(ClientOptions::new().with_allow_http(true))
                .with_url(url.origin().ascii_serialization())
                .build()?,
        ),
        _ => return Ok(None),
    };
    Ok(Some(store))
}
