//! The upstream's HTTP response headers, for `integration.response.header.NAME` in
//! integration responses (`x-amzn-RequestId`, for instance). An SDK interceptor copies the
//! headers of each response into a task-local slot when the caller opened one with
//! [`capturing`] (calls the gateway signs itself copy theirs with [`record`]); elsewhere
//! (batch flushes run in their own tasks) nothing is copied.

use std::cell::RefCell;

use aws_sdk_kinesis::config::interceptors::BeforeDeserializationInterceptorContextRef;
use aws_sdk_kinesis::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_kinesis::error::BoxError;

/// Header names (lower-case) and values of the last upstream response.
pub type Headers = Vec<(String, String)>;

tokio::task_local! {
    static CAPTURED: RefCell<Headers>;
}

/// Copies each upstream response's headers into the caller's slot, if it opened one.
#[derive(Debug)]
pub struct CaptureHeaders;

impl Intercept for CaptureHeaders {
    fn name(&self) -> &'static str {
        "CaptureHeaders"
    }

    fn read_after_transmit(
        &self,
        context: &BeforeDeserializationInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let _ = CAPTURED.try_with(|slot| {
            *slot.borrow_mut() = context
                .response()
                .headers()
                .iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), v.to_string()))
                .collect();
        });
        Ok(())
    }
}

/// Copies `headers` into the caller's slot, if it opened one (calls made without an SDK).
pub fn record(headers: &http::HeaderMap) {
    let _ = CAPTURED.try_with(|slot| {
        *slot.borrow_mut() = headers
            .iter()
            .map(|(k, v)| {
                let v = String::from_utf8_lossy(v.as_bytes()).into_owned();
                (k.as_str().to_string(), v)
            })
            .collect();
    });
}

/// Runs `work` with a slot open; returns its output and the last response's headers.
pub async fn capturing<F: Future>(work: F) -> (F::Output, Headers) {
    CAPTURED
        .scope(RefCell::new(Vec::new()), async move {
            let out = work.await;
            let headers = CAPTURED.with(|slot| slot.take());
            (out, headers)
        })
        .await
}
