//! Object stores for the URLs a diagon `CREATE EXTERNAL TABLE` reaches (its
//! LOCATION, its cold location, where its parts live), built from the URL,
//! the statement's `aws.*`, `gcp.*` and `azure.*` options and the usual
//! environment variables, as datafusion-cli builds them for its own
//! tables, and registered with the session.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::catalog::Session;
use datafusion::config::ExtensionOptions;
use datafusion::error::{DataFusionError, Result};
use datafusion_cli::object_storage::{
    AwsOptions, GcpOptions, get_gcs_object_store_builder, get_s3_object_store_builder,
};
use object_store::azure::MicrosoftAzureBuilder;
use object_store::http::HttpBuilder;
use object_store::{ClientOptions, ObjectStore};
use url::Url;

/// Makes sure the session reaches `location` (a table's LOCATION or cold
/// location) through an object store. A store is built from the URL,
/// `options` (the statement's, `aws.*` and the like, with or without
/// DataFusion's `format.` prefix) and the environment, and registered for
/// the URL's bucket, when the statement states options for its scheme or
/// the session has no store for it yet. Local paths and schemes diagon
/// does not build stores for are left to the session.
pub async fn ensure(
    state: &dyn Session,
    location: &str,
    options: &HashMap<String, String>,
) -> Result<()> {
    let Ok(url) = Url::parse(location) else {
        return Ok(()); // a local path
    };
    let options: Vec<(String, String)> = options
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
        .collect();
    let stated = scheme_prefix(url.scheme()).is_some_and(|p| scoped(&options, p).next().is_some());
    let registry = &state.runtime_env().object_store_registry;
    if !stated && registry.get_store(&url).is_ok() {
        return Ok(());
    }
    let store = build(&url, &options)
        .await
        .map_err(|e| DataFusionError::Plan(format!("object store for '{location}': {e}")))?;
    if let Some(store) = store {
        state.runtime_env().register_object_store(&url, store);
    }
    Ok(())
}

/// The option namespace of a scheme's stores.
fn scheme_prefix(scheme: &str) -> Option<&'static str> {
    match scheme {
        "s3" | "s3a" => Some("aws."),
        "gs" | "gcs" => Some("gcp."),
        "az" | "azure" | "abfs" | "abfss" | "adl" => Some("azure."),
        _ => None,
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
            // Keys as datafusion-cli's options take them: `aws.region`.
            for (key, value) in scoped(options, "aws.") {
                aws.set(&format!("aws.{key}"), value)?;
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
                gcp.set(&format!("gcp.{key}"), value)?;
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
