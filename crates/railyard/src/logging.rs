//! Structured logs and traces. Logs: `RUST_LOG` filters (default `info`, `warn` for the
//! chatty-free demo and dry runs), `--log-format text|json`; every line carries the fields of
//! the spans it is in (`release`, `step`, `service`...). Traces: when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set, Railyard's
//! spans are exported over OTLP/HTTP (protobuf) in batches, filtered by
//! `RAILYARD_TRACE_FILTER` (default `railyard=debug`); otherwise nothing is exported and no
//! trace context is sent along.
//!
//! Both go through the redaction layer ([`railyard_core::redact`]): every log line is masked
//! as it is written, and every exported span's name, attributes, events and status before
//! it is queued, so a secret the process holds never leaves it in a log or a trace.

use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use anyhow::Context;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry::{Array, KeyValue, StringValue, Value};
use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{BatchSpanProcessor, SdkTracerProvider, SpanData, SpanProcessor};
use railyard_core::redact::redact;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, with the current span and the list of spans it is in.
    Json,
}

/// The environment variables that turn trace export on.
const ENDPOINT_VARS: [&str; 2] = [
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
];
/// Which spans are exported when `RAILYARD_TRACE_FILTER` is not set.
const DEFAULT_TRACE_FILTER: &str = "railyard=debug";
/// How long the exit waits for the last spans to be exported.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// What must be flushed before the process exits: call [`Telemetry::shutdown`].
#[derive(Debug)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Exports the spans still buffered and stops the exporter (a no-op without one).
    pub fn shutdown(self) {
        if let Some(provider) = self.provider {
            if let Err(error) = provider.shutdown_with_timeout(EXPORT_TIMEOUT) {
                eprintln!("warning: the last traces could not be exported: {error}");
            }
        }
    }
}

/// Installs the global subscriber, writing logs to stderr (`default_filter` applies when
/// `RUST_LOG` is not set) and, when an OTLP endpoint is configured, exporting spans as
/// `service` (unless `OTEL_SERVICE_NAME` names it). Call it before any runtime starts.
pub fn init(format: LogFormat, default_filter: &str, service: &str) -> anyhow::Result<Telemetry> {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let logs: Box<dyn Layer<Registry> + Send + Sync> = match format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(RedactedStderr)
            // Colours only on a terminal: a file, a pipe or CI gets plain lines.
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_filter(filter)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(true)
            .with_writer(RedactedStderr)
            .with_filter(filter)
            .boxed(),
    };
    let provider = tracer_provider(service)?;
    let traces = match &provider {
        Some(provider) => {
            let filter = match std::env::var("RAILYARD_TRACE_FILTER") {
                Ok(directives) => EnvFilter::try_new(&directives)
                    .with_context(|| format!("RAILYARD_TRACE_FILTER={directives:?}"))?,
                Err(_) => EnvFilter::new(DEFAULT_TRACE_FILTER),
            };
            Some(
                tracing_opentelemetry::layer()
                    .with_tracer(provider.tracer("railyard"))
                    .with_filter(filter)
                    .boxed(),
            )
        }
        None => None,
    };
    tracing_subscriber::registry()
        .with(logs)
        .with(traces)
        .try_init()
        .map_err(|error| anyhow::anyhow!(error))?;
    Ok(Telemetry { provider })
}

/// The OTLP exporter, when an endpoint is configured.
fn tracer_provider(service: &str) -> anyhow::Result<Option<SdkTracerProvider>> {
    let configured = ENDPOINT_VARS
        .iter()
        .any(|name| std::env::var(name).is_ok_and(|value| !value.trim().is_empty()));
    if !configured {
        return Ok(None);
    }
    let client = reqwest::blocking::Client::builder()
        .timeout(EXPORT_TIMEOUT)
        .build()
        .context("cannot build the HTTP client for trace export")?;
    // The endpoint, headers, timeout and protocol come from the OTEL_EXPORTER_OTLP_*
    // variables; only HTTP with protobuf is built in.
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
        .with_http_client(BlockingClient(client))
        .build()
        .context(
            "cannot set up trace export from OTEL_EXPORTER_OTLP_ENDPOINT (expected an http:// \
             URL of an OTLP/HTTP collector, e.g. http://127.0.0.1:4318)",
        )?;
    let mut resource = Resource::builder();
    if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name(service.to_owned());
    }
    Ok(Some(
        SdkTracerProvider::builder()
            .with_span_processor(Redacted(BatchSpanProcessor::builder(exporter).build()))
            .with_resource(resource.build())
            .build(),
    ))
}

/// Standard error, through the redaction layer. The fmt layers write each formatted line
/// with one `write_all`, so a secret is never split between two writes.
#[derive(Debug, Clone, Copy)]
pub struct RedactedStderr;

impl<'a> MakeWriter<'a> for RedactedStderr {
    type Writer = RedactedWriter<std::io::Stderr>;

    fn make_writer(&'a self) -> Self::Writer {
        RedactedWriter(std::io::stderr())
    }
}

/// A writer that masks every registered secret in what goes through it.
#[derive(Debug)]
pub struct RedactedWriter<W>(pub W);

impl<W: std::io::Write> std::io::Write for RedactedWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        self.0.write_all(redact(&text).as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

/// A span processor that masks secrets in each finished span before `P` (the batch
/// exporter) sees it.
#[derive(Debug)]
struct Redacted<P>(P);

impl<P: SpanProcessor> SpanProcessor for Redacted<P> {
    fn on_start(&self, span: &mut opentelemetry_sdk::trace::Span, cx: &opentelemetry::Context) {
        self.0.on_start(span, cx);
    }

    fn on_end(&self, mut span: SpanData) {
        redact_span(&mut span);
        self.0.on_end(span);
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.0.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.0.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.0.set_resource(resource);
    }
}

/// Masks secrets in a span's name, attributes, events and error description.
fn redact_span(span: &mut SpanData) {
    redact_cow(&mut span.name);
    span.attributes.iter_mut().for_each(redact_attribute);
    for event in &mut span.events.events {
        redact_cow(&mut event.name);
        event.attributes.iter_mut().for_each(redact_attribute);
    }
    if let opentelemetry::trace::Status::Error { description } = &mut span.status {
        redact_cow(description);
    }
}

fn redact_cow(text: &mut Cow<'static, str>) {
    if let Cow::Owned(masked) = redact(text) {
        *text = Cow::Owned(masked);
    }
}

fn redact_attribute(attribute: &mut KeyValue) {
    let masked = |value: &StringValue| match redact(value.as_str()) {
        Cow::Owned(masked) => Some(StringValue::from(masked)),
        Cow::Borrowed(_) => None,
    };
    match &mut attribute.value {
        Value::String(value) => {
            if let Some(masked) = masked(value) {
                *value = masked;
            }
        }
        Value::Array(Array::String(values)) => {
            for value in values.iter_mut() {
                if let Some(masked) = masked(value) {
                    *value = masked;
                }
            }
        }
        _ => {}
    }
}

/// reqwest's blocking client as the exporter's transport. The batch exporter calls it from
/// its own thread, outside any async runtime, which is what a blocking client needs; using
/// the workspace's reqwest keeps a second reqwest (the one opentelemetry-http ships an
/// adapter for) out of the build.
#[derive(Debug)]
struct BlockingClient(reqwest::blocking::Client);

impl HttpClient for BlockingClient {
    fn send_bytes<'life0, 'async_trait>(
        &'life0 self,
        request: Request<Bytes>,
    ) -> Pin<Box<dyn Future<Output = Result<Response<Bytes>, HttpError>> + Send + 'async_trait>>
    where
        'life0: 'async_trait,
        Self: 'async_trait,
    {
        Box::pin(async move { self.send(request) })
    }
}

impl BlockingClient {
    fn send(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let (parts, body) = request.into_parts();
        let mut outgoing = self
            .0
            .request(parts.method, parts.uri.to_string())
            .body(body.to_vec());
        for (name, value) in &parts.headers {
            outgoing = outgoing.header(name, value);
        }
        let response = outgoing.send()?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.bytes()?;
        let mut answer = Response::builder().status(status).body(body)?;
        *answer.headers_mut() = headers;
        Ok(answer)
    }
}
