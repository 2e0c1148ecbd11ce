//! W3C trace context in NATS headers: [`inject_trace`] writes `traceparent`/`tracestate` for
//! the current `tracing` span, [`extract_trace`] reads them back and [`follow_trace`] makes a
//! span a child of what was read, so one release is one trace from the CI event to the last
//! gate. [`extract_trace_with`] reads the same headers from anything else (an HTTP request).

use async_nats::HeaderMap;
use opentelemetry::Context;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt;

struct HeaderInjector<'a>(&'a mut HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key, value.as_str());
    }
}

struct HeaderExtractor<'a>(&'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(|value| value.as_str())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(name, _)| name.as_ref()).collect()
    }
}

/// Writes the current `tracing` span's OpenTelemetry context into `headers` (nothing when no
/// OpenTelemetry layer is installed or the span is disabled).
pub fn inject_trace(headers: &mut HeaderMap) {
    inject_context(&tracing::Span::current().context(), headers);
}

/// Writes `context` into `headers` as `traceparent` and `tracestate`.
pub fn inject_context(context: &Context, headers: &mut HeaderMap) {
    TraceContextPropagator::new().inject_context(context, &mut HeaderInjector(headers));
}

/// Reads the trace context from `headers`; an empty context when there is none.
pub fn extract_trace(headers: &HeaderMap) -> Context {
    TraceContextPropagator::new().extract(&HeaderExtractor(headers))
}

struct FnExtractor<'a, F>(F, std::marker::PhantomData<&'a str>);

impl<'a, F: Fn(&str) -> Option<&'a str>> Extractor for FnExtractor<'a, F> {
    fn get(&self, key: &str) -> Option<&str> {
        (self.0)(key)
    }

    fn keys(&self) -> Vec<&str> {
        ["traceparent", "tracestate"]
            .into_iter()
            .filter(|key| (self.0)(key).is_some())
            .collect()
    }
}

/// Reads `traceparent`/`tracestate` through `header` (a lookup by lowercase name, e.g. into
/// an HTTP request's headers); an empty context when there is none or it is malformed.
pub fn extract_trace_with<'a>(header: impl Fn(&str) -> Option<&'a str>) -> Context {
    TraceContextPropagator::new().extract(&FnExtractor(header, std::marker::PhantomData))
}

/// Makes `span` a child of `parent`, the trace a message or request carried. Nothing happens
/// when `parent` holds no span or no OpenTelemetry layer is installed (then there is no trace
/// to join and nothing is exported).
pub fn follow_trace(span: &tracing::Span, parent: &Context) {
    if parent.has_active_span() {
        let _ = span.set_parent(parent.clone());
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::{
        SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState,
    };

    use super::*;

    #[test]
    fn a_context_survives_headers() {
        let span = SpanContext::new(
            TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap(),
            SpanId::from_hex("00f067aa0ba902b7").unwrap(),
            TraceFlags::SAMPLED,
            true,
            TraceState::default(),
        );
        let context = Context::new().with_remote_span_context(span.clone());
        let mut headers = HeaderMap::new();
        inject_context(&context, &mut headers);
        assert_eq!(
            headers.get("traceparent").map(|value| value.as_str()),
            Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
        );
        let extracted = extract_trace(&headers);
        assert_eq!(extracted.span().span_context(), &span);
    }

    #[test]
    fn a_context_is_read_from_any_headers() {
        let extracted = extract_trace_with(|name| match name {
            "traceparent" => Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            _ => None,
        });
        assert_eq!(
            extracted.span().span_context().trace_id(),
            TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap()
        );
        let malformed = extract_trace_with(|name| (name == "traceparent").then_some("00-zz"));
        assert!(!malformed.span().span_context().is_valid());
    }

    #[test]
    fn no_headers_give_an_empty_context() {
        let extracted = extract_trace(&HeaderMap::new());
        assert!(!extracted.span().span_context().is_valid());
    }
}
