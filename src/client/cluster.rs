//! `kvsctl cluster`: a Raft cluster's members, roles, term, commit seq and lag, and the
//! changes `remove`, `promote` and `transfer` (admin ops 0x20–0x24, `docs/protocol.md`).
//!
//! Kept apart from the client's request/response types: these ops exist only on Raft nodes.
//! A change sent to a member that does not lead is sent again to the leader it names.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};

use bytes::{Bytes, BytesMut};

use super::ClientError;
use super::ClientOptions;
use crate::auth::Secret;
use crate::protocol::frame::{self, Header};
use crate::protocol::response::Status;
use crate::raft::op;

#[derive(clap::Args, Debug)]
pub struct ClusterArgs {
    #[command(subcommand)]
    pub change: Option<Change>,
}

#[derive(clap::Subcommand, Debug, Clone)]
pub enum Change {
    /// Remove the member named ID (its --node-id) from the cluster
    Remove { id: String },
    /// Make the learner named ID a voter
    Promote { id: String },
    /// Hand leadership to the voter named ID (it stands for election now)
    Transfer { id: String },
}

/// Sends one admin frame to `addr` and returns the answer's status and body.
pub fn admin(
    addr: &str,
    kind: u8,
    body: &[u8],
    options: ClientOptions,
    secret: Option<&Secret>,
) -> Result<(Status, Bytes), ClientError> {
    let socket = addr
        .to_socket_addrs()
        .map_err(ClientError::Io)?
        .next()
        .ok_or_else(|| ClientError::Server(format!("{addr} resolves to no address")))?;
    let mut stream =
        TcpStream::connect_timeout(&socket, options.connect_timeout).map_err(ClientError::Io)?;
    stream
        .set_read_timeout(options.read_timeout)
        .map_err(ClientError::Io)?;
    let _ = stream.set_nodelay(true);
    let mut buf = BytesMut::new();
    let mut next_id = 1;
    let mut exchange = |kind: u8, body: &[u8]| -> Result<(Status, Bytes), ClientError> {
        let id = next_id;
        next_id += 1;
        let mut out = BytesMut::new();
        frame::encode(&mut out, Header { kind, flags: 0, id }, &[body]);
        stream.write_all(&out).map_err(ClientError::Io)?;
        loop {
            if let Some(frame) =
                frame::decode(&mut buf, options.frame_bytes_max).map_err(ClientError::Frame)?
            {
                let status =
                    Status::from_u8(frame.header.kind).ok_or(ClientError::UnknownStatus {
                        status: frame.header.kind,
                    })?;
                return Ok((status, frame.body));
            }
            let mut chunk = [0u8; 16 * 1024];
            let n = stream.read(&mut chunk).map_err(ClientError::Io)?;
            if n == 0 {
                return Err(ClientError::Closed {
                    partial_bytes: buf.len(),
                });
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    };
    if let Some(secret) = secret {
        let (status, body) = exchange(crate::protocol::request::op::AUTH, secret.bytes())?;
        if status != Status::Ok {
            return Err(ClientError::Server(
                String::from_utf8_lossy(&body).into_owned(),
            ));
        }
    }
    exchange(kind, body)
}

/// Runs `kvsctl cluster [CHANGE]` against `addr`; returns the exit status.
pub fn run(addr: &str, options: ClientOptions, secret: Option<&Secret>, args: &ClusterArgs) -> u8 {
    let (kind, body) = match &args.change {
        None => (op::CLUSTER, Vec::new()),
        Some(Change::Remove { id }) => (op::REMOVE, id.clone().into_bytes()),
        Some(Change::Promote { id }) => (op::PROMOTE, id.clone().into_bytes()),
        Some(Change::Transfer { id }) => (op::TRANSFER, id.clone().into_bytes()),
    };
    let mut target = addr.to_string();
    for _ in 0..2 {
        match admin(&target, kind, &body, options, secret) {
            Ok((Status::Ok, text)) => {
                if kind == op::CLUSTER {
                    print_cluster(&String::from_utf8_lossy(&text));
                } else {
                    println!("OK");
                }
                return 0;
            }
            Ok((Status::NotLeader, leader)) if !leader.is_empty() => {
                target = String::from_utf8_lossy(&leader).into_owned();
                eprintln!("kvsctl: redirected to leader at {target}");
            }
            Ok((Status::NotLeader, _)) => {
                eprintln!(
                    "kvsctl: no leader is known right now (an election is under way?); try again"
                );
                return 2;
            }
            Ok((_, text)) => {
                eprintln!("kvsctl: {}", String::from_utf8_lossy(&text));
                return 2;
            }
            Err(error) => {
                eprintln!("kvsctl: {target}: {error}");
                return 2;
            }
        }
    }
    eprintln!("kvsctl: the leader moved again; try again");
    2
}

/// The CLUSTER text as a table: the node's view, then one row per member.
fn print_cluster(text: &str) {
    let mut rows: Vec<Vec<String>> = Vec::new();
    for line in text.lines() {
        if let Some(member) = line.strip_prefix("member:") {
            let mut fields = member.split(' ');
            let name = fields.next().unwrap_or_default().to_string();
            let mut row = vec![name];
            row.extend(fields.map(|f| f.split_once(':').map_or(f, |(_, v)| v).to_string()));
            rows.push(row);
        } else if let Some((name, value)) = line.split_once(':') {
            println!("{name:<12}{value}");
        }
    }
    if rows.is_empty() {
        return;
    }
    println!();
    let header = ["MEMBER", "ID", "ADDR", "ROLE", "MATCHED_SEQ", "LAG"];
    let widths: Vec<usize> = (0..header.len())
        .map(|i| {
            rows.iter()
                .map(|r| r.get(i).map_or(0, String::len))
                .chain([header[i].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let print = |cells: Vec<&str>| {
        let line: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        println!("{}", line.join("  ").trim_end());
    };
    print(header.to_vec());
    for row in &rows {
        print(row.iter().map(String::as_str).collect());
    }
}
