//! Bodies the SDK reads whole (error replies, listings, lifecycle rules) capped before it
//! holds them: a hostile endpoint's endless error body once grew a process to 12 GB.
//! Object reads (GetObject) stream, and [`super::S3Backend`] caps them by the file's kind.

use std::pin::Pin;
use std::task::{Context, Poll};

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

/// Caps every reply body the SDK would read whole.
#[derive(Debug)]
pub struct CapBodies;

impl Intercept for CapBodies {
    fn name(&self) -> &'static str {
        "CapBodies"
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
            true if streamed => return Ok(()),
            true => PARSED_BODY_MAX,
        };
        let body = std::mem::replace(response.body_mut(), SdkBody::taken());
        *response.body_mut() = SdkBody::from_body_1_x(Capped {
            inner: body,
            left: limit,
            limit,
        });
        Ok(())
    }
}

/// A body that fails once more than `limit` bytes came.
struct Capped {
    inner: SdkBody,
    left: u64,
    limit: u64,
}

impl http_body::Body for Capped {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
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
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e))),
            other => other.map(|_| None),
        }
    }
}
