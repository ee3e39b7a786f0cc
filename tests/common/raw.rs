//! Raw HTTP/1 over TCP, for what an HTTP client library will not do: send a
//! head one byte at a time, send bytes a parser must refuse, hold a
//! connection open without a request, or notice when the gateway closes it.

use super::http::Gateway;
use serde_json::Value;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A TCP connection to a gateway, spoken to by hand.
pub struct RawConnection {
    stream: TcpStream,
    /// Bytes read and not yet used by a response.
    pending: Vec<u8>,
}

/// A response read by hand.
#[derive(Debug)]
pub struct RawResponse {
    /// The status code.
    pub status: u16,
    /// The headers, names in lower case, in order.
    pub headers: Vec<(String, String)>,
    /// The body (framed by `content-length`).
    pub body: Vec<u8>,
}

impl RawResponse {
    /// The first value of header `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON (fails the test when it is not).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            let text = String::from_utf8_lossy(&self.body);
            panic!(
                "{} is not JSON ({e}): {text:?} {:?}",
                self.status, self.headers
            )
        })
    }
}

impl RawConnection {
    /// Opens a connection to `gateway`.
    pub async fn open(gateway: &impl Gateway) -> RawConnection {
        let url = gateway.at("");
        let address = url.trim_start_matches("http://").trim_end_matches('/');
        RawConnection {
            stream: TcpStream::connect(address).await.unwrap(),
            pending: Vec::new(),
        }
    }

    /// Sends `bytes`.
    pub async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    /// Reads one response (its body framed by `content-length`), within the
    /// hang guard. Cancelling it loses nothing: what was read is kept.
    pub async fn response(&mut self) -> RawResponse {
        super::within("a response", self.read_response()).await
    }

    async fn read_response(&mut self) -> RawResponse {
        let head_end = loop {
            if let Some(at) = find(&self.pending, b"\r\n\r\n") {
                break at;
            }
            self.read_more().await;
        };
        let head = String::from_utf8_lossy(&self.pending[..head_end]).into_owned();
        let mut lines = head.split("\r\n");
        let status = lines
            .next()
            .unwrap()
            .split(' ')
            .nth(1)
            .unwrap()
            .parse()
            .unwrap();
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let length: usize = headers
            .iter()
            .find(|(n, _)| n == "content-length")
            .map_or(0, |(_, v)| v.parse().unwrap());
        let body_start = head_end + 4;
        while self.pending.len() < body_start + length {
            self.read_more().await;
        }
        let body = self.pending[body_start..body_start + length].to_vec();
        self.pending.drain(..body_start + length);
        RawResponse {
            status,
            headers,
            body,
        }
    }

    async fn read_more(&mut self) {
        let mut buf = [0u8; 8192];
        let n = self.stream.read(&mut buf).await.unwrap();
        assert!(
            n > 0,
            "the gateway closed the connection: {:?}",
            self.pending
        );
        self.pending.extend_from_slice(&buf[..n]);
    }

    /// Waits (within the hang guard) until the gateway closes the
    /// connection, and returns how long that took.
    pub async fn closed(mut self) -> Duration {
        let start = Instant::now();
        super::within("the gateway closing the connection", async {
            let mut buf = [0u8; 8192];
            while matches!(self.stream.read(&mut buf).await, Ok(n) if n > 0) {}
        })
        .await;
        start.elapsed()
    }

    /// Sends `head` one byte every `every` until the gateway closes the
    /// connection (within the hang guard, whether or not all of `head` was
    /// sent); returns how many bytes it sent and how long it took.
    pub async fn trickle_until_closed(self, head: &[u8], every: Duration) -> (usize, Duration) {
        let start = Instant::now();
        let (mut reader, mut writer) = self.stream.into_split();
        let mut sent = 0;
        super::within("the gateway cutting a slow head", async {
            let mut buf = [0u8; 8192];
            let mut ticks = tokio::time::interval(every);
            loop {
                tokio::select! {
                    read = reader.read(&mut buf) => match read {
                        Ok(n) if n > 0 => panic!("answered a head that never ended: {:?}",
                            String::from_utf8_lossy(&buf[..n])),
                        _ => return,
                    },
                    _ = ticks.tick(), if sent < head.len() => {
                        if writer.write_all(&head[sent..sent + 1]).await.is_err() {
                            return;
                        }
                        sent += 1;
                    }
                }
            }
        })
        .await;
        (sent, start.elapsed())
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
