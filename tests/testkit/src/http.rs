//! Minimal HTTP/1.1 pieces shared by the test servers and client.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::Duration;

/// A parsed request or response head plus body.
#[derive(Debug, Clone, Default)]
pub struct Message {
    /// Request line or status line.
    pub start: String,
    /// Lowercased names, raw values.
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
}

impl Message {
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    }
    pub fn status(&self) -> u16 {
        self.start
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    }
    pub fn path(&self) -> String {
        self.start.split(' ').nth(1).unwrap_or("").to_string()
    }
}

/// Reads one message; `None` on a clean close before any byte.
pub fn read_message(r: &mut impl BufRead) -> std::io::Result<Option<Message>> {
    let mut start = Vec::new();
    if r.read_until(b'\n', &mut start)? == 0 {
        return Ok(None);
    }
    let mut m = Message {
        start: String::from_utf8_lossy(&start).trim_end().to_string(),
        ..Default::default()
    };
    loop {
        let mut line = Vec::new();
        r.read_until(b'\n', &mut line)?;
        while matches!(line.last(), Some(b'\n' | b'\r')) {
            line.pop();
        }
        if line.is_empty() {
            break;
        }
        if let Some(colon) = line.iter().position(|c| *c == b':') {
            let name = String::from_utf8_lossy(&line[..colon]).to_ascii_lowercase();
            let mut value = &line[colon + 1..];
            while value.first() == Some(&b' ') {
                value = &value[1..];
            }
            m.headers.push((name, value.to_vec()));
        }
    }
    if let Some(len) = m.header("content-length") {
        let n: usize = len.trim().parse().unwrap_or(0);
        m.body.resize(n, 0);
        r.read_exact(&mut m.body)?;
    } else if m
        .header("transfer-encoding")
        .is_some_and(|t| t.eq_ignore_ascii_case("chunked"))
    {
        loop {
            let mut size = String::new();
            r.read_line(&mut size)?;
            let n = usize::from_str_radix(size.trim().split(';').next().unwrap_or("0"), 16)
                .unwrap_or(0);
            let mut chunk = vec![0u8; n + 2];
            if n == 0 {
                // Trailers (ignored) up to the empty line.
                loop {
                    let mut l = String::new();
                    r.read_line(&mut l)?;
                    if l.trim().is_empty() {
                        break;
                    }
                }
                break;
            }
            r.read_exact(&mut chunk)?;
            m.body.extend_from_slice(&chunk[..n]);
        }
    }
    Ok(Some(m))
}

/// A keep-alive HTTP/1.1 client connection.
pub struct Client {
    reader: BufReader<TcpStream>,
    port: u16,
}

impl Client {
    pub fn connect(port: u16) -> Client {
        let s = TcpStream::connect(("127.0.0.1", port)).expect("connect to envoy");
        s.set_read_timeout(Some(Duration::from_secs(20))).ok();
        s.set_nodelay(true).ok();
        Client {
            reader: BufReader::new(s),
            port,
        }
    }

    /// Sends `GET path` with extra headers given as raw bytes.
    pub fn get(&mut self, path: &str, headers: &[(&str, &[u8])]) -> Message {
        let mut req = format!("GET {path} HTTP/1.1\r\nhost: svc.test\r\n").into_bytes();
        end_head(&mut req, headers);
        for attempt in 0..2 {
            let ok = self.reader.get_mut().write_all(&req).is_ok();
            if ok {
                if let Ok(Some(m)) = read_message(&mut self.reader) {
                    if m.header("connection").as_deref() == Some("close") {
                        *self = Client::connect(self.port);
                    }
                    return m;
                }
            }
            assert!(
                attempt == 0,
                "request to 127.0.0.1:{} failed twice",
                self.port
            );
            *self = Client::connect(self.port);
        }
        unreachable!()
    }
}

/// Appends `name: value` lines and the blank line that ends a message head.
pub fn end_head<N: AsRef<[u8]>, V: AsRef<[u8]>>(head: &mut Vec<u8>, headers: &[(N, V)]) {
    for (n, v) in headers {
        head.extend_from_slice(n.as_ref());
        head.extend_from_slice(b": ");
        head.extend_from_slice(v.as_ref());
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"\r\n");
}

/// Writes a response.
pub fn write_response(w: &mut impl Write, status: u16, headers: &[(&str, &str)], body: &[u8]) {
    let mut out = format!("HTTP/1.1 {status} X\r\ncontent-length: {}\r\n", body.len());
    for (n, v) in headers {
        out.push_str(&format!("{n}: {v}\r\n"));
    }
    out.push_str("\r\n");
    // One write: a separate body write would meet Nagle + delayed ACK (40 ms).
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(body);
    let _ = w.write_all(&bytes);
    let _ = w.flush();
}
