//! The in-flight map: what each response on a connection answers.
//!
//! Kafka responses are FIFO per connection and clients check the order as well as the
//! correlation id, so the map is a bounded queue in request order. An entry is either a request
//! forwarded upstream (its response will come from the broker) or a response the interceptor
//! made itself, which must be sent to the client in its place in that order. acks=0 Produce
//! requests have no response in Kafka; they leave an `Unanswered` marker, because some
//! Kafka-protocol brokers (tansu 0.6) answer them anyway, and such an answer must be recognised
//! and dropped (the client expects nothing) rather than taken for the next request's.
//!
//! The request direction pushes, the response direction pops; the bound is the per-connection
//! limit of requests awaiting a response, and a full queue stops the request direction (the
//! client is not read) until responses drain it.

use bytes::Bytes;
use thiserror::Error;
use tokio::sync::mpsc;

use super::{
    authz::{AuthzError, ResponseRewrite},
    header::{response_correlation_id, HeaderError},
};

/// A request forwarded upstream whose response is expected next in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expected {
    pub correlation_id: i32,
    pub api_key: i16,
    pub api_version: i16,
}

#[derive(Debug, PartialEq)]
pub enum Pending {
    Upstream(Expected),
    /// A request forwarded upstream whose response is changed before the client sees it
    /// (merged with the interceptor's errors for a refused part, or filtered).
    Rewritten(Expected, ResponseFilter),
    /// A complete response frame (length prefix included) made by the interceptor.
    Local(Bytes),
    /// An acks=0 Produce with this correlation id: no response is due, but a broker may send
    /// one anyway.
    Unanswered(i32),
}

/// Rewrites a response with work that waits (vault lookups for masking): gets the frame as
/// the synchronous rewrite left it.
pub type AsyncRewrite = Box<
    dyn FnOnce(
            Bytes,
        ) -> std::pin::Pin<
            Box<dyn std::future::Future<Output = Result<Bytes, AuthzError>> + Send>,
        > + Send,
>;

/// The change to make to a response: the policy layer's merge or filter first, then the
/// masking of its records. Two are never equal (tests compare queues without them).
pub struct ResponseFilter {
    pub rewrite: Option<ResponseRewrite>,
    pub then: Option<AsyncRewrite>,
}

impl ResponseFilter {
    pub fn new(rewrite: Option<ResponseRewrite>, then: Option<AsyncRewrite>) -> Option<Self> {
        (rewrite.is_some() || then.is_some()).then_some(Self { rewrite, then })
    }

    pub async fn apply(self, frame: Bytes) -> Result<Bytes, AuthzError> {
        let frame = match self.rewrite {
            Some(rewrite) => rewrite(frame)?,
            None => frame,
        };
        match self.then {
            Some(then) => then(frame).await,
            None => Ok(frame),
        }
    }
}

impl std::fmt::Debug for ResponseFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ResponseFilter")
    }
}

impl PartialEq for ResponseFilter {
    fn eq(&self, _: &Self) -> bool {
        false
    }
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum InFlightError {
    #[error(
        "response with correlation id {got} where {expected} was due (responses out of order)"
    )]
    OutOfOrder { expected: i32, got: i32 },
    #[error("response with correlation id {0} but no request awaits one")]
    Unsolicited(i32),
    #[error("undecodable response header: {0}")]
    Header(#[from] HeaderError),
}

/// Creates the two ends of one connection's in-flight queue.
pub fn in_flight(limit: usize) -> (InFlightTx, InFlightRx) {
    let (tx, rx) = mpsc::channel(limit);
    (InFlightTx(tx), InFlightRx(rx))
}

pub struct InFlightTx(mpsc::Sender<Pending>);

impl InFlightTx {
    /// Records the next response due; waits while the queue is full. `Err` when the response
    /// direction is gone (the connection is closing).
    pub async fn push(&self, pending: Pending) -> Result<(), Pending> {
        self.0.send(pending).await.map_err(|e| e.0)
    }

    /// Records the next response due without waiting: `Err(Full)` hands the entry back so the
    /// caller can first flush what it has batched (whose responses free the queue).
    pub fn try_push(&self, pending: Pending) -> Result<(), TryPushError> {
        self.0.try_send(pending).map_err(|e| match e {
            mpsc::error::TrySendError::Full(p) => TryPushError::Full(p),
            mpsc::error::TrySendError::Closed(p) => TryPushError::Closed(p),
        })
    }
}

#[derive(Debug)]
pub enum TryPushError {
    Full(Pending),
    Closed(Pending),
}

pub struct InFlightRx(mpsc::Receiver<Pending>);

impl InFlightRx {
    /// The next response due, waiting for one; `None` once the request direction has ended and
    /// everything it pushed was taken.
    pub async fn next(&mut self) -> Option<Pending> {
        self.0.recv().await
    }

    /// The next response due if one was pushed already.
    pub fn try_next(&mut self) -> Option<Pending> {
        self.0.try_recv().ok()
    }
}

/// Checks that `frame` (length prefix included) is the response to `expected`.
pub fn match_response(expected: &Expected, frame: &[u8]) -> Result<(), InFlightError> {
    let got = response_correlation_id(frame)?;
    if got == expected.correlation_id {
        Ok(())
    } else {
        Err(InFlightError::OutOfOrder {
            expected: expected.correlation_id,
            got,
        })
    }
}

/// The error for a response frame that arrived while nothing was in flight.
pub fn unsolicited(frame: &[u8]) -> InFlightError {
    match response_correlation_id(frame) {
        Ok(id) => InFlightError::Unsolicited(id),
        Err(e) => e.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A response frame: length prefix, correlation id, then an arbitrary body.
    fn response(correlation_id: i32) -> Vec<u8> {
        let mut f = Vec::new();
        f.extend_from_slice(&8i32.to_be_bytes()); // length: correlation id + 4 body bytes
        f.extend_from_slice(&correlation_id.to_be_bytes());
        f.extend_from_slice(&[0, 0, 0, 0]); // body
        f
    }

    fn expected(correlation_id: i32) -> Expected {
        Expected {
            correlation_id,
            api_key: 3,
            api_version: 12,
        }
    }

    #[tokio::test]
    async fn responses_match_in_request_order_with_local_ones_in_place() {
        let (tx, mut rx) = in_flight(8);
        tx.push(Pending::Upstream(expected(7))).await.unwrap();
        tx.push(Pending::Local(Bytes::from(response(8))))
            .await
            .unwrap();
        tx.push(Pending::Upstream(expected(9))).await.unwrap();

        let Some(Pending::Upstream(first)) = rx.next().await else {
            panic!("first entry is the forwarded request")
        };
        match_response(&first, &response(7)).unwrap();
        assert_eq!(
            rx.next().await,
            Some(Pending::Local(Bytes::from(response(8))))
        );
        let Some(Pending::Upstream(third)) = rx.next().await else {
            panic!("third entry is the forwarded request")
        };
        match_response(&third, &response(9)).unwrap();
        assert_eq!(rx.try_next(), None);
    }

    #[test]
    fn a_response_out_of_order_is_refused() {
        assert_eq!(
            match_response(&expected(1), &response(2)),
            Err(InFlightError::OutOfOrder {
                expected: 1,
                got: 2
            })
        );
    }

    #[test]
    fn an_unsolicited_response_names_its_id() {
        assert_eq!(unsolicited(&response(42)), InFlightError::Unsolicited(42));
    }

    #[test]
    fn a_truncated_response_header_is_an_error_not_a_panic() {
        let frame = [0, 0, 0, 2, 0, 1];
        assert!(matches!(
            match_response(&expected(1), &frame),
            Err(InFlightError::Header(_))
        ));
    }

    #[tokio::test]
    async fn a_full_queue_makes_the_request_side_wait() {
        let (tx, mut rx) = in_flight(1);
        tx.push(Pending::Upstream(expected(1))).await.unwrap();
        let second = tx.push(Pending::Upstream(expected(2)));
        tokio::pin!(second);
        assert!(
            tokio::time::timeout(std::time::Duration::from_millis(50), &mut second)
                .await
                .is_err(),
            "push must wait while the queue is full"
        );
        rx.next().await.unwrap();
        second.await.unwrap();
    }

    #[test]
    fn try_push_hands_back_the_entry_when_full() {
        let (tx, _rx) = in_flight(1);
        tx.try_push(Pending::Upstream(expected(1))).unwrap();
        assert!(matches!(
            tx.try_push(Pending::Upstream(expected(2))),
            Err(TryPushError::Full(Pending::Upstream(e))) if e.correlation_id == 2
        ));
    }

    #[tokio::test]
    async fn push_fails_once_the_response_side_is_gone() {
        let (tx, rx) = in_flight(1);
        drop(rx);
        assert!(tx.push(Pending::Upstream(expected(1))).await.is_err());
    }
}
