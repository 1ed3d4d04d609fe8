//! An S3 server on loopback for the cold tier's tests and benchmarks:
//! `s3s-fs` serving a temporary directory in this process, behind a thin
//! service that counts requests and bytes, adds latency, and injects faults
//! (error statuses, hangs) into the requests a test names.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use object_store::aws::AmazonS3Builder;
use object_store::{BackoffConfig, ClientOptions, ObjectStore, RetryConfig};
use s3s::Body;
use s3s::auth::SimpleAuth;
use s3s::service::S3ServiceBuilder;

pub const BUCKET: &str = "diagon";
const ACCESS_KEY: &str = "diagon-test";
const SECRET_KEY: &str = "diagon-test-secret";

/// What an injected fault does to a request it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// Answer with this HTTP status (500, 503, ...) and no body.
    Status(u16),
    /// Hold the request this long before serving it (longer than the
    /// client's timeout: a hang).
    Hang(Duration),
}

/// A fault for requests whose method is `method` (any when `None`) and
/// whose path and query contain `contains`: after letting `skip` matching
/// requests through, the next `times` fail as `kind`.
#[derive(Debug, Clone)]
pub struct Fault {
    pub method: Option<&'static str>,
    pub contains: String,
    pub skip: u64,
    pub times: u64,
    pub kind: FaultKind,
}

impl Fault {
    pub fn new(method: Option<&'static str>, contains: &str, kind: FaultKind) -> Self {
        Fault {
            method,
            contains: contains.to_string(),
            skip: 0,
            times: u64::MAX,
            kind,
        }
    }

    pub fn skip(mut self, skip: u64) -> Self {
        self.skip = skip;
        self
    }

    pub fn times(mut self, times: u64) -> Self {
        self.times = times;
        self
    }
}

/// Counters of what the server served, and the knobs tests turn.
#[derive(Debug, Default)]
pub struct Control {
    pub requests: AtomicU64,
    pub gets: AtomicU64,
    pub puts: AtomicU64,
    /// Response body bytes of GETs.
    pub bytes_out: AtomicU64,
    latency_us: AtomicU64,
    faults: Mutex<Vec<Fault>>,
    /// Requests failed by a fault.
    pub failed: AtomicU64,
}

impl Control {
    /// Adds `latency` before every request is served (simulating a
    /// distant store).
    pub fn set_latency(&self, latency: Duration) {
        self.latency_us
            .store(latency.as_micros() as u64, Ordering::Relaxed);
    }

    pub fn inject(&self, fault: Fault) {
        self.faults.lock().unwrap().push(fault);
    }

    pub fn clear_faults(&self) {
        self.faults.lock().unwrap().clear();
    }

    /// (requests, GETs, GET bytes) so far.
    pub fn counts(&self) -> (u64, u64, u64) {
        (
            self.requests.load(Ordering::Relaxed),
            self.gets.load(Ordering::Relaxed),
            self.bytes_out.load(Ordering::Relaxed),
        )
    }

    fn fault_for(&self, method: &str, target: &str) -> Option<FaultKind> {
        let mut faults = self.faults.lock().unwrap();
        for fault in faults.iter_mut() {
            if fault.method.is_some_and(|m| m != method) || !target.contains(&fault.contains) {
                continue;
            }
            if fault.skip > 0 {
                fault.skip -= 1;
                continue;
            }
            if fault.times > 0 {
                fault.times -= 1;
                return Some(fault.kind);
            }
        }
        None
    }
}

/// A running server; stopped when dropped.
pub struct S3Server {
    pub endpoint: String,
    pub root: tempfile::TempDir,
    pub control: Arc<Control>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl S3Server {
    /// Starts a server on 127.0.0.1 (a free port) with bucket [`BUCKET`],
    /// on the current tokio runtime.
    pub async fn start() -> S3Server {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join(BUCKET)).unwrap();
        let fs = s3s_fs::FileSystem::new(root.path()).unwrap();
        let mut builder = S3ServiceBuilder::new(fs);
        builder.set_auth(SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY));
        let s3 = builder.build();
        let control = Arc::new(Control::default());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let ctl = control.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let (s3, ctl) = (s3.clone(), ctl.clone());
                let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let (s3, ctl) = (s3.clone(), ctl.clone());
                    async move { serve(&s3, &ctl, req).await }
                });
                tokio::spawn(async move {
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        S3Server {
            endpoint,
            root,
            control,
            task,
        }
    }

    /// `s3://diagon/<prefix>`.
    pub fn url(&self, prefix: &str) -> String {
        format!("s3://{BUCKET}/{prefix}")
    }

    /// A client of this server that retries `retries` times with short
    /// backoff and gives up on a request after `timeout`.
    pub fn store_with(&self, retries: usize, timeout: Duration) -> Arc<dyn ObjectStore> {
        let retry = RetryConfig {
            backoff: BackoffConfig {
                init_backoff: Duration::from_millis(10),
                max_backoff: Duration::from_millis(100),
                base: 2.0,
            },
            max_retries: retries,
            retry_timeout: Duration::from_secs(10),
        };
        let client = ClientOptions::new()
            .with_allow_http(true)
            .with_timeout(timeout)
            .with_connect_timeout(Duration::from_secs(5));
        Arc::new(
            AmazonS3Builder::new()
                .with_bucket_name(BUCKET)
                .with_region("us-east-1")
                .with_endpoint(&self.endpoint)
                .with_allow_http(true)
                .with_virtual_hosted_style_request(false)
                .with_access_key_id(ACCESS_KEY)
                .with_secret_access_key(SECRET_KEY)
                .with_retry(retry)
                .with_client_options(client)
                .build()
                .unwrap(),
        )
    }

    /// A client with a few quick retries and a 10 s timeout.
    pub fn store(&self) -> Arc<dyn ObjectStore> {
        self.store_with(3, Duration::from_secs(10))
    }

    /// The files the server holds under `prefix` of the bucket, relative to
    /// it, sorted (unfinished multipart uploads are not listed).
    pub fn files(&self, prefix: &str) -> Vec<String> {
        let base = self.root.path().join(BUCKET);
        let mut out = Vec::new();
        let mut stack = vec![base.join(prefix)];
        while let Some(dir) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                if path.is_dir() {
                    stack.push(path);
                } else if let Ok(rel) = path.strip_prefix(&base) {
                    let rel = rel.to_string_lossy().to_string();
                    if !rel.contains(".upload_id") && !rel.contains(".tmp") {
                        out.push(rel);
                    }
                }
            }
        }
        out.sort();
        out
    }

    /// Unfinished multipart uploads the server still holds.
    pub fn pending_uploads(&self) -> Vec<PathBuf> {
        walk(self.root.path())
            .into_iter()
            .filter(|p| p.to_string_lossy().contains(".upload_id"))
            .collect()
    }
}

fn walk(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                out.extend(walk(&path));
            }
            out.push(path);
        }
    }
    out
}

async fn serve(
    s3: &s3s::service::S3Service,
    control: &Control,
    req: http::Request<hyper::body::Incoming>,
) -> Result<http::Response<Body>, s3s::HttpError> {
    control.requests.fetch_add(1, Ordering::Relaxed);
    let method = req.method().as_str().to_string();
    let target = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    let latency = control.latency_us.load(Ordering::Relaxed);
    if latency > 0 {
        tokio::time::sleep(Duration::from_micros(latency)).await;
    }
    match control.fault_for(&method, &target) {
        Some(FaultKind::Status(code)) => {
            control.failed.fetch_add(1, Ordering::Relaxed);
            return Ok(http::Response::builder()
                .status(code)
                .body(Body::from(format!("injected fault {code}")))
                .expect("a valid response"));
        }
        Some(FaultKind::Hang(hold)) => {
            control.failed.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(hold).await;
        }
        None => {}
    }
    match method.as_str() {
        "GET" => control.gets.fetch_add(1, Ordering::Relaxed),
        "PUT" | "POST" => control.puts.fetch_add(1, Ordering::Relaxed),
        _ => 0,
    };
    let response = s3.call(req.map(Body::from)).await?;
    if method == "GET"
        && let Some(len) = response
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
    {
        control.bytes_out.fetch_add(len, Ordering::Relaxed);
    }
    Ok(response)
}
