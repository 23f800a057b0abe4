//! Reply bodies capped and paced before the SDK or a read holds them.
//!
//! Capped: bodies the SDK reads whole (error replies, listings, lifecycle rules) fail past a
//! sane size: a hostile endpoint's endless error body once grew a process to 12 GB. Object
//! reads (GetObject) stream, and [`super::S3Backend`] caps them by the file's kind.
//!
//! Paced: every body, streamed or not, must bring [`FLOOR_PER_SEC`] in each window of the
//! time-out; one that stops (or trickles a byte now and then) fails as [`Stalled`] after one
//! window, not when the connection is dropped. The SDK's own stalled-stream protection asks
//! for 1 byte per second only, which a trickle passes.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use aws_sdk_s3::config::interceptors::BeforeDeserializationInterceptorContextMut;
use aws_sdk_s3::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_types::body::SdkBody;
use bytes::Bytes;
use http_body::Frame;

/// An error reply's body, at most: S3's are a few hundred bytes of XML.
pub const ERROR_BODY_MAX: u64 = 64 << 10;
/// A reply the SDK parses whole (a listing page of 1,000 names, lifecycle rules), at most.
pub const PARSED_BODY_MAX: u64 = 16 << 20;
/// The slowest a body may flow, averaged over each window of the time-out: 8 kbit/s, under
/// any working link even when six reads share it.
pub const FLOOR_PER_SEC: u64 = 1024;

/// A body that brought less than the floor in a window of the time-out.
#[derive(Debug, thiserror::Error)]
#[error(
    "{got} bytes of the reply came in {}s (less than {} KiB/s)",
    window.as_secs_f64(), FLOOR_PER_SEC / 1024
)]
pub struct Stalled {
    /// Bytes that came in the window.
    pub got: u64,
    /// The window: the time-out.
    pub window: Duration,
}

/// Caps the bodies the SDK reads whole, and paces every body.
#[derive(Debug)]
pub struct GuardBodies {
    /// The window of the pace: the S3 time-out.
    pub window: Duration,
}

impl Intercept for GuardBodies {
    fn name(&self) -> &'static str {
        "GuardBodies"
    }

    fn modify_before_deserialization(
        &self,
        context: &mut BeforeDeserializationInterceptorContextMut<'_>,
        _: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let response = context.response_mut();
        let streamed = cfg
            .load::<Metadata>()
            .is_some_and(|m| m.name() == "GetObject");
        let limit = match response.status().is_success() {
            false => ERROR_BODY_MAX,
            true if streamed => u64::MAX,
            true => PARSED_BODY_MAX,
        };
        let body = std::mem::replace(response.body_mut(), SdkBody::taken());
        *response.body_mut() = SdkBody::from_body_1_x(Guarded {
            inner: body,
            left: limit,
            limit,
            pace: Pace::new(self.window),
        });
        Ok(())
    }
}

/// The bytes of the current window, and when it ends.
struct Pace {
    window: Duration,
    got: u64,
    ends: Pin<Box<tokio::time::Sleep>>,
}

impl Pace {
    fn new(window: Duration) -> Self {
        Pace {
            window,
            got: 0,
            ends: Box::pin(tokio::time::sleep(window)),
        }
    }

    /// At the end of a window: a stall if too little came, else the next window (whose
    /// timer is then registered with `cx`).
    fn check(&mut self, cx: &mut Context<'_>) -> Result<(), Stalled> {
        while self.ends.as_mut().poll(cx).is_ready() {
            let need = FLOOR_PER_SEC.saturating_mul(self.window.as_secs().max(1));
            if self.got < need {
                return Err(Stalled {
                    got: self.got,
                    window: self.window,
                });
            }
            self.got = 0;
            let next = self.ends.deadline() + self.window;
            self.ends.as_mut().reset(next);
        }
        Ok(())
    }
}

/// A body that fails once more than `limit` bytes came, or when it flows below the floor.
struct Guarded {
    inner: SdkBody,
    left: u64,
    limit: u64,
    pace: Pace,
}

impl http_body::Body for Guarded {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            let len = frame.data_ref().map_or(0, |d| d.len() as u64);
            if len > this.left {
                return Poll::Ready(Some(Err(format!(
                    "the endpoint's reply is larger than {} bytes, more than such a reply \
                     can be",
                    this.limit
                )
                .into())));
            }
            this.left -= len;
            this.pace.got = this.pace.got.saturating_add(len);
        }
        // The end of a body is never late; anything else is judged at each window's end.
        if !matches!(polled, Poll::Ready(None) | Poll::Ready(Some(Err(_)))) {
            if let Err(stalled) = this.pace.check(cx) {
                return Poll::Ready(Some(Err(stalled.into())));
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
