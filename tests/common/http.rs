//! A plain HTTP/1.1 GET over a std socket, for the tests of kvsd's metrics port: the status
//! code and the body of one request.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// Sends `request` (a whole head) to `addr` and reads the reply to its end (the server
/// closes): (status code, head, body).
pub fn exchange(addr: &str, request: &[u8]) -> (u16, String, String) {
    let mut stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    stream.write_all(request).unwrap();
    let mut reply = Vec::new();
    stream
        .read_to_end(&mut reply)
        .unwrap_or_else(|e| panic!("reading the reply from {addr}: {e}"));
    let text = String::from_utf8(reply).expect("a UTF-8 reply");
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no end of head in {text:?}"));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    (status, head.to_string(), body.to_string())
}

/// GET `path` from `addr`: (status code, body).
pub fn get(addr: &str, path: &str) -> (u16, String) {
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: kvs-tests\r\n\r\n");
    let (status, _, body) = exchange(addr, request.as_bytes());
    (status, body)
}

/// The value of the sample `series` (its name and labels exactly as written, e.g.
/// `kvs_requests_total{op="set",status="ok"}`) in a /metrics page; None if it is not there.
pub fn sample(page: &str, series: &str) -> Option<f64> {
    page.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            (name == series).then(|| value.parse().ok())?
        })
}
