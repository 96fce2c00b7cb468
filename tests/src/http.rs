//! A raw HTTP/1.1 client over `TcpStream`, one request per connection, and
//! the test environment's shortcuts to otpd's HTTP listener.

use std::io::{Read, Write};
use std::net::TcpStream;

use serde_json::Value;

use crate::process::RUN_TIMEOUT;
use crate::TestEnv;

/// One HTTP response.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON, or the body text as a JSON string when it is not
    /// JSON (so assertions show what came).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|_| Value::String(self.text()))
    }

    /// A header's value (name case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Sends one request to 127.0.0.1:`port` and reads the whole answer.
pub fn http_request(
    port: u16,
    method: &str,
    path: &str,
    content_type: Option<&str>,
    body: &[u8],
) -> std::io::Result<HttpResponse> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(RUN_TIMEOUT))?;
    stream.set_write_timeout(Some(RUN_TIMEOUT))?;
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\
         Accept: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    if let Some(ct) = content_type {
        head.push_str(&format!("Content-Type: {ct}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;
    stream.flush()?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    parse_http_response(&raw)
}

pub(crate) fn bad(message: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, message)
}

fn parse_http_response(raw: &[u8]) -> std::io::Result<HttpResponse> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| {
            bad(format!(
                "no end of headers in {:?}",
                String::from_utf8_lossy(raw)
            ))
        })?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let rest = &raw[split + 4..];
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad(format!("bad status line {status_line:?}")))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let find = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    let body =
        if find("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked")) {
            dechunk(rest)?
        } else if let Some(len) = find("content-length").and_then(|v| v.parse::<usize>().ok()) {
            rest.get(..len)
                .ok_or_else(|| bad(format!("body shorter than Content-Length {len}")))?
                .to_vec()
        } else {
            rest.to_vec()
        };
    Ok(HttpResponse {
        status,
        headers,
        body,
    })
}

fn dechunk(mut data: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or_else(|| bad("unterminated chunk size".to_owned()))?;
        let size_text = String::from_utf8_lossy(&data[..line_end]);
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| bad(format!("bad chunk size {size_text:?}")))?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        let chunk = data
            .get(..size)
            .ok_or_else(|| bad("truncated chunk".to_owned()))?;
        out.extend_from_slice(chunk);
        data = data.get(size + 2..).unwrap_or_default();
    }
}

impl TestEnv {
    /// GET `path`; status and body text.
    pub fn http_get(&self, path: &str) -> (u16, String) {
        let r = http_request(self.http_port, "GET", path, None, b"")
            .unwrap_or_else(|e| panic!("GET {path}: {e}\n{}", self.otpd_log()));
        (r.status, r.text())
    }

    /// POST `body` with `content_type` to `path`; status and body text.
    pub fn http_post_raw(&self, path: &str, content_type: &str, body: &[u8]) -> (u16, String) {
        let r = http_request(self.http_port, "POST", path, Some(content_type), body)
            .unwrap_or_else(|e| panic!("POST {path}: {e}\n{}", self.otpd_log()));
        (r.status, r.text())
    }

    /// POST `json` to `path`; status and JSON body (a JSON string holding
    /// the text when the body is not JSON).
    pub fn http_post_json(&self, path: &str, json: &Value) -> (u16, Value) {
        let r = http_request(
            self.http_port,
            "POST",
            path,
            Some("application/json"),
            json.to_string().as_bytes(),
        )
        .unwrap_or_else(|e| panic!("POST {path}: {e}\n{}", self.otpd_log()));
        (r.status, r.json())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn http_parsing() {
        let r = parse_http_response(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n1\r\n!\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!((r.status, r.text().as_str()), (200, "ok!"));
        let r = parse_http_response(b"HTTP/1.1 401 Unauthorized\r\ncontent-length: 2\r\n\r\n{}")
            .unwrap();
        assert_eq!((r.status, r.json()), (401, json!({})));
    }
}
