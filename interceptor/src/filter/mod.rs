//! The filter chain. Each filter says which api keys it wants before anything is decoded and
//! returns a verdict for each request it sees. The chain is empty for now: every frame is
//! forwarded byte for byte.

use bytes::Bytes;

use crate::kafka::RequestHeader;

/// What happens to one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Forward this frame (the original bytes, or a rewritten frame) to the broker.
    Forward(Bytes),
    /// Do not forward; answer the client with this complete response frame, in order.
    Respond(Bytes),
    /// Do not forward and send nothing (a request that has no response, acks=0 Produce).
    Drop,
    /// Close the connection; the reason goes to the log and the audit trail.
    Close(String),
}

pub trait RequestFilter: Send + Sync {
    /// Whether this filter looks at requests with this api key at all.
    fn wants(&self, api_key: i16) -> bool;
    /// Decides one request. `frame` includes its length prefix.
    fn on_request(&self, header: &RequestHeader, frame: Bytes) -> Verdict;
}

#[derive(Default)]
pub struct FilterChain {
    filters: Vec<Box<dyn RequestFilter>>,
}

impl FilterChain {
    pub fn new(filters: Vec<Box<dyn RequestFilter>>) -> Self {
        Self { filters }
    }

    /// Runs the filters that want this api key, in order, until one does not forward.
    pub fn on_request(&self, header: &RequestHeader, frame: Bytes) -> Verdict {
        let mut frame = frame;
        for filter in self.filters.iter().filter(|f| f.wants(header.api_key)) {
            match filter.on_request(header, frame) {
                Verdict::Forward(next) => frame = next,
                other => return other,
            }
        }
        Verdict::Forward(frame)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct DenyKey(i16);
    impl RequestFilter for DenyKey {
        fn wants(&self, api_key: i16) -> bool {
            api_key == self.0
        }
        fn on_request(&self, _: &RequestHeader, _: Bytes) -> Verdict {
            Verdict::Close(format!("api key {} refused", self.0))
        }
    }

    fn header(api_key: i16) -> RequestHeader {
        RequestHeader {
            api_key,
            api_version: 0,
            correlation_id: 1,
            client_id: None,
            body_offset: 14,
        }
    }

    #[test]
    fn an_empty_chain_forwards_the_same_bytes() {
        let frame = Bytes::from_static(b"\0\0\0\x0aabcdefghij");
        let Verdict::Forward(out) = FilterChain::default().on_request(&header(0), frame.clone())
        else {
            panic!("forwarded")
        };
        assert_eq!(out.as_ptr(), frame.as_ptr(), "zero-copy: the same buffer");
    }

    #[test]
    fn only_filters_that_want_the_key_see_it() {
        let chain = FilterChain::new(vec![Box::new(DenyKey(3))]);
        let frame = Bytes::from_static(b"\0\0\0\0");
        assert!(matches!(
            chain.on_request(&header(0), frame.clone()),
            Verdict::Forward(_)
        ));
        assert_eq!(
            chain.on_request(&header(3), frame),
            Verdict::Close("api key 3 refused".into())
        );
    }
}
