//! A response body made of several shared buffers sent one after the other, with its exact
//! length known (so hyper sends `Content-Length`, not chunks). `/metrics` with 10,000 label
//! sets is 13 MB, nearly all of it text kept between scrapes: sent from those buffers, nothing
//! is copied.
use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

#[derive(Debug, Default)]
pub struct Segments {
    left: VecDeque<Bytes>,
    len: u64,
}

impl Segments {
    pub fn new(parts: Vec<Bytes>) -> Self {
        let left: VecDeque<Bytes> = parts.into_iter().filter(|b| !b.is_empty()).collect();
        let len = left.iter().map(|b| b.len() as u64).sum();
        Segments { left, len }
    }
}

impl Body for Segments {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let next = self.left.pop_front();
        if let Some(b) = &next {
            self.len -= b.len() as u64;
        }
        Poll::Ready(next.map(|b| Ok(Frame::data(b))))
    }

    fn is_end_stream(&self) -> bool {
        self.left.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_every_part_in_order_with_the_exact_length() {
        let parts = vec![Bytes::from("a\n"), Bytes::new(), Bytes::from("bc\n")];
        let mut body = Segments::new(parts);
        assert_eq!(body.size_hint().exact(), Some(5));
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        let mut got = Vec::new();
        while let Poll::Ready(Some(Ok(f))) = Pin::new(&mut body).poll_frame(&mut cx) {
            got.extend_from_slice(f.data_ref().unwrap());
            assert_eq!(body.size_hint().exact(), Some(5 - got.len() as u64));
        }
        assert_eq!(got, b"a\nbc\n");
        assert!(body.is_end_stream());
    }
}
