//! A connection's bytes, as the gateway watches them: what arrives feeds the
//! connection's deadlines, and hyper's own bare error answers leave in the
//! gateway's error shape.
//!
//! hyper answers some requests itself, before any service sees them: a
//! request line or header it cannot parse (a control character or NUL
//! byte, a bad name, conflicting or invalid `Content-Length` and
//! `Transfer-Encoding`) gets `400`, a target over 64 KiB `414`, a head over
//! its limits `431` — each with an empty body (`proto/h1/role.rs`,
//! `on_error`), which an SDK reports as an error with no message. There is
//! no hook for them, so [`ConnectionIo`] recognises them on their way out
//! and writes the OpenAI error JSON instead (Anthropic's when the request
//! line named `/v1/messages`), with the same status, then lets hyper close
//! the connection as it meant to.
//!
//! Recognising them is exact enough to be safe: such an answer is written
//! by HTTP/1 only, in one write, while no call is in flight on the
//! connection (the service's [`Activity`] says so), and it is a bare head —
//! the status 400, 414 or 431 and no header but `content-length: 0`, `date`
//! and `connection`. Every answer of the gateway's own carries a JSON
//! content type or `x-rllm-trace-id`, and a relayed body is written while
//! its call is in flight. These requests never reach the proxy, so they
//! are not recorded.
//!
//! The read side keeps the start of each request's first line (the bytes
//! after an answer was written), which names the path, and notices an
//! HTTP/2 connection by its preface, after which nothing is rewritten.

use super::deadline::Activity;
use crate::error::GatewayError;
use crate::protocol::{CallPath, Protocol};
use crate::record::ErrorKind;
use bytes::{Buf, Bytes};
use http::Method;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// How much of a request's first line is kept: enough for its path.
const LINE_KEPT: usize = 256;

/// The longest bare answer hyper writes (a status line and two headers).
const BARE_HEAD_MAX: usize = 512;

/// The start of the HTTP/2 connection preface.
pub(super) const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0";

/// A connection's stream, watched (see the module documentation).
pub struct ConnectionIo<T> {
    inner: T,
    activity: Arc<Activity>,
    /// The start of the first line of the request being read.
    line: Vec<u8>,
    /// Whether the next bytes read start a request (nothing read since the
    /// last write).
    at_request_start: bool,
    /// Whether the first request line is still being read.
    first_request: bool,
    /// Whether the connection speaks HTTP/2 (nothing is rewritten then).
    http2: bool,
    /// The gateway's answer being written in place of one of hyper's.
    replacing: Option<Replacement>,
}

/// An error answer written in place of hyper's bare one.
struct Replacement {
    /// What is left to write.
    bytes: Bytes,
    /// How many bytes of hyper's answer it stands for.
    stands_for: usize,
}

impl<T> ConnectionIo<T> {
    /// Watches `inner`, feeding `activity`.
    pub fn new(inner: T, activity: Arc<Activity>) -> ConnectionIo<T> {
        ConnectionIo {
            inner,
            activity,
            line: Vec::new(),
            at_request_start: true,
            first_request: true,
            http2: false,
            replacing: None,
        }
    }

    /// Notes bytes that arrived.
    fn arrived(&mut self, bytes: &[u8]) {
        self.activity.bytes_arrived();
        if self.at_request_start {
            self.at_request_start = false;
            self.line.clear();
        }
        if self.line.len() < LINE_KEPT && !self.line.contains(&b'\n') {
            let room = LINE_KEPT - self.line.len();
            self.line.extend_from_slice(&bytes[..bytes.len().min(room)]);
        }
        let line_known = self.line.len() >= H2_PREFACE.len() || self.line.contains(&b'\n');
        if self.first_request && line_known {
            self.first_request = false;
            self.http2 = self.line.starts_with(H2_PREFACE);
        }
    }

    /// The gateway's answer for `written`, when it is one of hyper's bare
    /// error answers.
    fn replacement_for(&self, written: &[u8]) -> Option<Replacement> {
        if self.http2 || written.len() > BARE_HEAD_MAX || !written.starts_with(b"HTTP/1.") {
            return None;
        }
        let bare = BareAnswer::parse(written)?;
        if self.activity.is_busy() {
            return None;
        }
        let protocol = protocol_of_line(&self.line);
        Some(Replacement {
            bytes: bare.in_gateway_shape(protocol),
            stands_for: written.len(),
        })
    }
}

impl<T: AsyncWrite + Unpin> ConnectionIo<T> {
    /// Writes the replacement, if there is one; hyper is told its own
    /// answer was written once all of the replacement is.
    fn poll_replacement(&mut self, cx: &mut Context<'_>) -> Option<Poll<io::Result<usize>>> {
        let replacing = self.replacing.as_mut()?;
        let written = match replacing.poll_write_to(&mut self.inner, cx) {
            Poll::Pending => return Some(Poll::Pending),
            Poll::Ready(written) => written,
        };
        self.replacing = None;
        Some(Poll::Ready(written))
    }
}

impl Replacement {
    fn poll_write_to<T: AsyncWrite + Unpin>(
        &mut self,
        inner: &mut T,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<usize>> {
        while !self.bytes.is_empty() {
            let n = ready!(Pin::new(&mut *inner).poll_write(cx, &self.bytes))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.bytes.advance(n);
        }
        Poll::Ready(Ok(self.stands_for))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for ConnectionIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        let arrived = &buf.filled()[before..];
        if !arrived.is_empty() {
            this.arrived(arrived);
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for ConnectionIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.at_request_start = true;
        if this.replacing.is_none() {
            this.replacing = this.replacement_for(buf);
        }
        if let Some(polled) = this.poll_replacement(cx) {
            return polled;
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.at_request_start = true;
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        let starts_like_a_head = bufs.first().is_some_and(|b| b.starts_with(b"HTTP/1."));
        if this.replacing.is_none() && starts_like_a_head && total <= BARE_HEAD_MAX {
            let joined: Vec<u8> = bufs.iter().flat_map(|b| b.iter().copied()).collect();
            this.replacing = this.replacement_for(&joined);
        }
        if let Some(polled) = this.poll_replacement(cx) {
            return polled;
        }
        Pin::new(&mut this.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// One of hyper's bare error answers, as written.
#[derive(Debug, PartialEq, Eq)]
struct BareAnswer<'a> {
    /// `HTTP/1.1 400 Bad Request`.
    status_line: &'a str,
    /// What the answer stands for.
    kind: ErrorKind,
    /// Its `date` header, kept.
    date: Option<&'a str>,
}

impl<'a> BareAnswer<'a> {
    /// Reads `head` when it is exactly a bare answer: a status line with
    /// 400, 414 or 431, only `content-length: 0`, `date` and `connection`
    /// headers, and nothing after the head.
    fn parse(head: &'a [u8]) -> Option<BareAnswer<'a>> {
        let text = std::str::from_utf8(head).ok()?.strip_suffix("\r\n\r\n")?;
        let mut lines = text.split("\r\n");
        let status_line = lines.next()?;
        let kind = match status_line.split(' ').nth(1)? {
            "400" => ErrorKind::BadRequest,
            "414" => ErrorKind::UriTooLong,
            "431" => ErrorKind::HeadersTooLarge,
            _ => return None,
        };
        let mut date = None;
        for line in lines {
            let (name, value) = line.split_once(':')?;
            let value = value.trim();
            match name.to_ascii_lowercase().as_str() {
                "content-length" if value == "0" => {}
                "date" => date = Some(value),
                "connection" => {}
                _ => return None,
            }
        }
        Some(BareAnswer {
            status_line,
            kind,
            date,
        })
    }

    /// The same answer with the gateway's error body, in `protocol`'s shape.
    fn in_gateway_shape(&self, protocol: Protocol) -> Bytes {
        let message = match self.kind {
            ErrorKind::UriTooLong => "the request target is longer than the gateway can parse",
            ErrorKind::HeadersTooLarge => {
                "the request's head is larger than the gateway can parse (see server.max_headers \
                 and server.max_header_bytes)"
            }
            _ => {
                "the gateway could not parse the request's head: a malformed request line or \
                 header (a control character or NUL byte, an invalid name, or a bad or \
                 conflicting Content-Length or Transfer-Encoding)"
            }
        };
        let body = GatewayError::new(self.kind, message)
            .body_for(protocol)
            .to_string();
        let date = self
            .date
            .map(|d| format!("date: {d}\r\n"))
            .unwrap_or_default();
        Bytes::from(format!(
            "{}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n{date}\r\n{body}",
            self.status_line,
            body.len(),
        ))
    }
}

/// The protocol of the request whose first line starts with `line`
/// (OpenAI's unless it names an Anthropic path).
fn protocol_of_line(line: &[u8]) -> Protocol {
    let line = String::from_utf8_lossy(line);
    let Some(target) = line.split(' ').nth(1) else {
        return Protocol::Openai;
    };
    // An absolute-form target (`http://host/v1/messages`) names its path
    // after the authority.
    let target = match target.split_once("://") {
        Some((_, rest)) => rest.find('/').map_or("/", |at| &rest[at..]),
        None => target,
    };
    let path = target.split(['?', '#']).next().unwrap_or(target);
    CallPath::protocol_of(&Method::POST, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BARE: &[u8] =
        b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\ndate: Sun, 06 Nov 1994 08:49:37 GMT\r\n\r\n";

    #[test]
    fn only_bare_error_heads_are_recognised() {
        let bare = BareAnswer::parse(BARE).unwrap();
        assert_eq!(bare.kind, ErrorKind::HeadersTooLarge);
        assert_eq!(bare.date, Some("Sun, 06 Nov 1994 08:49:37 GMT"));
        for not_bare in [
            &b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: 0\r\n\r\n"[..],
            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 2\r\n\r\n",
            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n{}",
            b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n",
            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n",
        ] {
            assert_eq!(BareAnswer::parse(not_bare), None, "{not_bare:?}");
        }
    }

    #[test]
    fn the_replacement_keeps_the_status_and_date_and_carries_the_json() {
        let bare = BareAnswer::parse(BARE).unwrap();
        let answer = bare.in_gateway_shape(Protocol::Anthropic);
        let text = std::str::from_utf8(&answer).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"));
        assert!(head.contains("\r\ndate: Sun, 06 Nov 1994 08:49:37 GMT"));
        assert!(head.contains(&format!("content-length: {}", body.len())));
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(json["type"], "error");
        assert_eq!(json["error"]["type"], "invalid_request_error");
    }

    #[test]
    fn the_request_line_names_the_protocol() {
        assert_eq!(
            protocol_of_line(b"POST /v1/messages HTTP/1.1\r\n"),
            Protocol::Anthropic
        );
        assert_eq!(
            protocol_of_line(b"POST /sessions/s/v1/messages?beta=true HTTP/1.1"),
            Protocol::Anthropic
        );
        assert_eq!(
            protocol_of_line(b"POST http://gw:9090/v1/messages HTTP/1.1"),
            Protocol::Anthropic
        );
        assert_eq!(
            protocol_of_line(b"POST /v1/chat/completions HTTP/1.1"),
            Protocol::Openai
        );
        assert_eq!(protocol_of_line(b"garbage"), Protocol::Openai);
    }
}
