//! A plain blocking client of the protocol, shared by kvsctl, the tests and the tools.
//!
//! It owns one `std::net::TcpStream` and the buffers around it; the bytes on the wire are
//! `protocol`'s business (this module encodes and decodes only through it). Nothing a server
//! sends can make it panic or allocate more than `frame_bytes_max` for one reply.
//!
//! Two levels: `send`/`flush`/`recv` pipeline requests and hand back raw responses; `call`
//! and the typed helpers (`get`, `set`, ...) do one request at a time and turn the reply into
//! a value or a `ClientError`.

pub mod cluster;
mod error;
mod ext;
#[cfg(test)]
mod tests;

use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use bytes::{Bytes, BytesMut};

pub use error::{status_name, ClientError};
pub use ext::{Event, EventKind, KeyMeta, TxnOutcome, Watch, Written};

use crate::auth::Secret;
use crate::limits;
use crate::protocol::frame;
use crate::protocol::request::{Request, SecretBytes};
use crate::protocol::response::{self, Response, Status};

/// How long `connect` tries each address the name resolves to.
pub const CONNECT_TIMEOUT_MS_DEFAULT: u64 = 5_000;
/// How long one read or write may block before it fails with `ClientError::Timeout`.
pub const IO_TIMEOUT_MS_DEFAULT: u64 = 30_000;
/// Bytes asked of the kernel per read.
const READ_BYTES: usize = 64 * 1024;
/// `send` writes the buffered requests out once they reach this size, so a long pipeline
/// does not pile up in memory.
const SEND_BUFFER_BYTES_MAX: usize = 256 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientOptions {
    pub connect_timeout: Duration,
    /// `None`: reads block for as long as the server takes.
    pub read_timeout: Option<Duration>,
    pub write_timeout: Option<Duration>,
    /// The largest reply frame (its `len` field) this client reads; a larger one is an error.
    pub frame_bytes_max: u32,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            connect_timeout: Duration::from_millis(CONNECT_TIMEOUT_MS_DEFAULT),
            read_timeout: Some(Duration::from_millis(IO_TIMEOUT_MS_DEFAULT)),
            write_timeout: Some(Duration::from_millis(IO_TIMEOUT_MS_DEFAULT)),
            frame_bytes_max: limits::FRAME_BYTES_MAX_CEILING,
        }
    }
}

/// One connection to a kvs server.
pub struct Client {
    stream: TcpStream,
    addr: String,
    options: ClientOptions,
    read_buf: BytesMut,
    write_buf: BytesMut,
    /// The id of the next request; 0 is never used, it is the server's id for "your frame
    /// was unreadable".
    next_id: u64,
    /// Requests sent whose replies have not been read.
    pending: usize,
    /// Set once an error has left the stream out of step with the server.
    broken: bool,
    /// The secret this connection authenticated with, sent again on a connection made for it
    /// (`follow_leader`).
    secret: Option<Secret>,
}

impl std::fmt::Debug for Client {
    // Not the buffers: they may hold megabytes of values.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("addr", &self.addr)
            .field("pending", &self.pending)
            .field("broken", &self.broken)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Connects with the default options.
    pub fn connect(addr: &str) -> Result<Client, ClientError> {
        Client::connect_with(addr, ClientOptions::default())
    }

    /// Connects to `addr` (`host:port`), trying each address the host resolves to.
    pub fn connect_with(addr: &str, options: ClientOptions) -> Result<Client, ClientError> {
        let connect_error = |source| ClientError::Connect {
            addr: addr.to_string(),
            source,
        };
        let mut last_error = io::Error::new(io::ErrorKind::NotFound, "the name has no address");
        let mut connected = None;
        for socket_addr in addr.to_socket_addrs().map_err(connect_error)? {
            match TcpStream::connect_timeout(&socket_addr, options.connect_timeout) {
                Ok(stream) => {
                    connected = Some(stream);
                    break;
                }
                Err(error) => last_error = error,
            }
        }
        let stream = connected.ok_or_else(|| connect_error(last_error))?;
        let setup = || -> io::Result<()> {
            stream.set_nodelay(true)?;
            stream.set_read_timeout(options.read_timeout)?;
            stream.set_write_timeout(options.write_timeout)
        };
        setup().map_err(connect_error)?;
        Ok(Client {
            stream,
            addr: addr.to_string(),
            options,
            read_buf: BytesMut::new(),
            write_buf: BytesMut::new(),
            next_id: 1,
            pending: 0,
            broken: false,
            secret: None,
        })
    }

    /// Connects, then sends AUTH with `secret` if there is one (see `authenticate`).
    pub fn connect_auth(
        addr: &str,
        options: ClientOptions,
        secret: Option<&Secret>,
    ) -> Result<Client, ClientError> {
        let mut client = Client::connect_with(addr, options)?;
        if let Some(secret) = secret {
            client.authenticate(secret)?;
        }
        Ok(client)
    }

    /// Sends AUTH with `secret` (`--auth-file` on the server); an error if the server refuses
    /// it. A server without `--auth-file` answers OK.
    pub fn authenticate(&mut self, secret: &Secret) -> Result<(), ClientError> {
        let response = self.call(&Request::Auth {
            secret: SecretBytes(Bytes::copy_from_slice(secret.bytes())),
        })?;
        if response.status != Status::Ok {
            return Err(refusal("AUTH", &response));
        }
        self.secret = Some(secret.clone());
        Ok(())
    }

    /// The address this client was asked to connect to.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    pub fn options(&self) -> ClientOptions {
        self.options
    }

    /// True once an error has left the connection unusable; every later call fails with
    /// `ClientError::Broken`, and the owner should connect again.
    pub fn is_broken(&self) -> bool {
        self.broken
    }

    /// Requests sent whose replies have not been read yet.
    pub fn pending(&self) -> usize {
        self.pending
    }

    pub fn set_read_timeout(&mut self, timeout: Option<Duration>) -> Result<(), ClientError> {
        self.stream
            .set_read_timeout(timeout)
            .map_err(ClientError::Io)?;
        self.options.read_timeout = timeout;
        Ok(())
    }

    pub fn set_write_timeout(&mut self, timeout: Option<Duration>) -> Result<(), ClientError> {
        self.stream
            .set_write_timeout(timeout)
            .map_err(ClientError::Io)?;
        self.options.write_timeout = timeout;
        Ok(())
    }

    pub fn set_frame_bytes_max(&mut self, frame_bytes_max: u32) {
        self.options.frame_bytes_max = frame_bytes_max;
    }

    /// Buffers `request` with a fresh id and returns the id. It goes out on `flush`, on
    /// `recv`, or once the buffer is large.
    pub fn send(&mut self, request: &Request) -> Result<u64, ClientError> {
        self.usable()?;
        let id = self.next_id;
        self.next_id = self.next_id.checked_add(1).unwrap_or(1);
        request.encode(id, &mut self.write_buf);
        self.pending += 1;
        if self.write_buf.len() >= SEND_BUFFER_BYTES_MAX {
            self.flush()?;
        }
        Ok(id)
    }

    /// Writes every buffered request to the server.
    pub fn flush(&mut self) -> Result<(), ClientError> {
        self.usable()?;
        if self.write_buf.is_empty() {
            return Ok(());
        }
        let result = self.stream.write_all(&self.write_buf);
        self.write_buf.clear();
        let timeout = self.options.write_timeout;
        result.map_err(|error| self.fail_io(error, "sending a request", timeout))
    }

    /// Flushes, then reads the next reply, whichever request it answers.
    pub fn recv(&mut self) -> Result<Response, ClientError> {
        self.flush()?;
        loop {
            match frame::decode(&mut self.read_buf, self.options.frame_bytes_max) {
                Ok(Some(frame)) => {
                    self.pending = self.pending.saturating_sub(1);
                    return Response::decode(frame).map_err(|unknown| ClientError::UnknownStatus {
                        status: unknown.status,
                    });
                }
                Ok(None) => self.fill()?,
                Err(error) => {
                    self.broken = true;
                    return Err(ClientError::Frame(error));
                }
            }
        }
    }

    /// Whether a whole reply is already buffered: `recv` would return without reading.
    pub fn has_buffered_reply(&self) -> bool {
        frame::check(&self.read_buf, self.options.frame_bytes_max).is_ok_and(|f| f.is_some())
    }

    /// Sends `request` and reads its reply, checking that the reply carries its id. Not to be
    /// mixed with unread replies of `send`.
    pub fn call(&mut self, request: &Request) -> Result<Response, ClientError> {
        self.usable()?;
        if self.pending > 0 {
            return Err(ClientError::Pipelined {
                pending: self.pending,
            });
        }
        let id = self.send(request)?;
        let response = self.recv()?;
        if response.id == id {
            return Ok(response);
        }
        // The reply to this request may still come: the stream is out of step.
        self.broken = true;
        if response.id == 0 && response.status == Status::Error {
            // The server could not read a frame and closes the connection; its message says why.
            return Err(ClientError::Server(text(&response.body)));
        }
        Err(ClientError::IdMismatch {
            sent: id,
            received: response.id,
        })
    }

    /// The value of `key`, `None` if it does not exist.
    pub fn get(&mut self, key: &[u8]) -> Result<Option<Bytes>, ClientError> {
        self.get_request(Request::Get {
            key: Bytes::copy_from_slice(key),
            min_seq: None,
        })
    }

    /// As `get`, once the server has applied every write up to `min_seq` (read-your-writes
    /// on a follower).
    pub fn get_min_seq(&mut self, key: &[u8], min_seq: u64) -> Result<Option<Bytes>, ClientError> {
        self.get_request(Request::Get {
            key: Bytes::copy_from_slice(key),
            min_seq: Some(min_seq),
        })
    }

    fn get_request(&mut self, request: Request) -> Result<Option<Bytes>, ClientError> {
        let response = self.call(&request)?;
        match response.status {
            Status::Ok => Ok(Some(response.body)),
            Status::NotFound => Ok(None),
            _ => Err(refusal("GET", &response)),
        }
    }

    /// Stores `value` under `key`; returns the write's seq.
    pub fn set(&mut self, key: &[u8], value: &[u8]) -> Result<u64, ClientError> {
        let response = self.call(&Request::Set {
            key: Bytes::copy_from_slice(key),
            value: Bytes::copy_from_slice(value),
        })?;
        match response.status {
            Status::Ok => seq_of("SET", &response),
            _ => Err(refusal("SET", &response)),
        }
    }

    /// Deletes `key`; returns the write's seq, `None` if the key did not exist.
    pub fn del(&mut self, key: &[u8]) -> Result<Option<u64>, ClientError> {
        let response = self.call(&Request::Del {
            key: Bytes::copy_from_slice(key),
        })?;
        match response.status {
            Status::Ok => seq_of("DEL", &response).map(Some),
            Status::NotFound => Ok(None),
            _ => Err(refusal("DEL", &response)),
        }
    }

    /// Every key that starts with `prefix`, in ascending byte order, following the server's
    /// "more" flag across as many replies as it takes.
    pub fn keys(&mut self, prefix: &[u8]) -> Result<Vec<Bytes>, ClientError> {
        let prefix = Bytes::copy_from_slice(prefix);
        let mut keys: Vec<Bytes> = Vec::new();
        let mut start_after: Option<Bytes> = None;
        loop {
            let response = self.call(&Request::Keys {
                prefix: prefix.clone(),
                start_after: start_after.clone(),
            })?;
            if response.status != Status::Ok {
                return Err(refusal("KEYS", &response));
            }
            let page = response
                .keys()
                .ok_or_else(|| malformed("KEYS", "the key list does not add up to the body"))?;
            for key in page {
                if !key.starts_with(&prefix) {
                    return Err(malformed("KEYS", "a key does not start with the prefix"));
                }
                // Strictly ascending keys also guarantee that each page makes progress.
                let after = keys.last().or(start_after.as_ref());
                if after.is_some_and(|after| key <= after) {
                    return Err(malformed("KEYS", "the keys are not in ascending order"));
                }
                keys.push(key);
            }
            if response.flags & response::flag::KEYS_MORE == 0 {
                return Ok(keys);
            }
            let last = keys.last().cloned();
            if last == start_after {
                return Err(malformed("KEYS", "\"more\" is set on a reply without keys"));
            }
            start_after = last;
        }
    }

    /// The server's `name:value` lines (see `stats_lines`).
    pub fn stats(&mut self) -> Result<String, ClientError> {
        let response = self.call(&Request::Stats)?;
        if response.status != Status::Ok {
            return Err(refusal("STATS", &response));
        }
        String::from_utf8(response.body.to_vec())
            .map_err(|_| malformed("STATS", "the text is not UTF-8"))
    }

    /// Runs a compaction pass on the server now and returns its `name:value` summary. Waits
    /// for the pass however long it takes (no read timeout meanwhile).
    pub fn compact(&mut self) -> Result<String, ClientError> {
        let saved = self.options.read_timeout;
        self.set_read_timeout(None)?;
        let response = self.call(&Request::Compact);
        self.set_read_timeout(saved)?;
        let response = response?;
        if response.status != Status::Ok {
            return Err(refusal("COMPACT", &response));
        }
        String::from_utf8(response.body.to_vec())
            .map_err(|_| malformed("COMPACT", "the text is not UTF-8"))
    }

    /// Sends `payload` and checks that the server echoes it.
    pub fn ping(&mut self, payload: &[u8]) -> Result<Bytes, ClientError> {
        let response = self.call(&Request::Ping {
            payload: Bytes::copy_from_slice(payload),
        })?;
        if response.status != Status::Ok {
            return Err(refusal("PING", &response));
        }
        if response.body != payload {
            return Err(malformed("PING", "the echo differs from the payload"));
        }
        Ok(response.body)
    }

    /// Runs `operation` here; if the server answers NOT_LEADER with the leader's address,
    /// calls `on_redirect` with it and runs `operation` once more on a new connection to the
    /// leader (with this client's options), which is dropped afterwards. A second NOT_LEADER,
    /// or one without an address, is returned as the error.
    pub fn follow_leader<T>(
        &mut self,
        mut operation: impl FnMut(&mut Client) -> Result<T, ClientError>,
        on_redirect: impl FnOnce(&str),
    ) -> Result<T, ClientError> {
        match operation(self) {
            Err(ClientError::NotLeader(leader)) if !leader.is_empty() => {
                on_redirect(&leader);
                let mut leader_client =
                    Client::connect_auth(&leader, self.options, self.secret.as_ref())?;
                operation(&mut leader_client)
            }
            result => result,
        }
    }

    fn usable(&self) -> Result<(), ClientError> {
        if self.broken {
            Err(ClientError::Broken)
        } else {
            Ok(())
        }
    }

    /// Reads what the kernel has into `read_buf`; at least one byte or an error.
    fn fill(&mut self) -> Result<(), ClientError> {
        let start = self.read_buf.len();
        self.read_buf.resize(start + READ_BYTES, 0);
        let result = loop {
            match self.stream.read(&mut self.read_buf[start..]) {
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                result => break result,
            }
        };
        let read_bytes = *result.as_ref().unwrap_or(&0);
        self.read_buf.truncate(start + read_bytes);
        match result {
            Ok(0) => {
                self.broken = true;
                Err(ClientError::Closed {
                    partial_bytes: start,
                })
            }
            Ok(_) => Ok(()),
            Err(error) => {
                let timeout = self.options.read_timeout;
                Err(self.fail_io(error, "waiting for a reply", timeout))
            }
        }
    }

    fn fail_io(
        &mut self,
        error: io::Error,
        doing: &'static str,
        timeout: Option<Duration>,
    ) -> ClientError {
        self.broken = true;
        match (error.kind(), timeout) {
            (io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut, Some(after)) => {
                ClientError::Timeout { doing, after }
            }
            _ => ClientError::Io(error),
        }
    }
}

/// The `name:value` lines of a STATS reply as pairs, in order; lines without `:` are skipped.
pub fn stats_lines(stats: &str) -> Vec<(&str, &str)> {
    stats
        .lines()
        .filter_map(|line| line.split_once(':'))
        .collect()
}

/// The error for a reply whose status is not one the request succeeds with.
pub(crate) fn refusal(request: &'static str, response: &Response) -> ClientError {
    match response.status {
        Status::Error => ClientError::Server(text(&response.body)),
        Status::NotLeader => ClientError::NotLeader(text(&response.body)),
        status => ClientError::UnexpectedStatus { request, status },
    }
}

pub(crate) fn seq_of(request: &'static str, response: &Response) -> Result<u64, ClientError> {
    match response.seq() {
        Some(seq) if response.body.len() == 8 => Ok(seq),
        _ => Err(malformed(
            request,
            &format!(
                "the body is {} bytes, not an 8-byte seq",
                response.body.len()
            ),
        )),
    }
}

pub(crate) fn malformed(request: &'static str, detail: &str) -> ClientError {
    ClientError::Malformed {
        request,
        detail: detail.to_string(),
    }
}

/// A server's text for a person, made safe to print: invalid UTF-8 is replaced and control
/// characters are escaped, so a reply cannot drive the terminal.
fn text(body: &[u8]) -> String {
    let mut out = String::with_capacity(body.len());
    for c in String::from_utf8_lossy(body).chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}
