//! The client side of the Raft RPCs: frames on the members' client ports (ops 0x45–0x47, see
//! `docs/protocol.md`), one connection per peer, one RPC at a time on it (openraft runs one
//! replication stream per peer and waits for each answer).
//!
//! A failed connect, or a new connection closed before it answered, is `Unreachable` (openraft
//! backs off), anything else on the wire a `Network` error; either way the connection is
//! dropped and the next RPC dials again.

use std::net::{SocketAddr, ToSocketAddrs};
use std::rc::Rc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, Unreachable};
use openraft::network::{Backoff, RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};

use super::{codec, op, seq_of, Member, NodeId, TypeConfig};
use crate::protocol::frame::{self, Header};
use crate::protocol::Status;
use crate::runtime::TcpStream;

/// Why an RPC got no answer.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("cannot connect to {addr}: {reason}")]
    Connect { addr: String, reason: String },
    #[error("{0}")]
    Wire(String),
    #[error("the peer answered ERROR: {0}")]
    Refused(String),
}

/// One open connection to a member, with the bytes read past the last frame.
pub struct Conn {
    stream: TcpStream,
    buf: BytesMut,
    next_id: u64,
    frame_bytes_max: u32,
}

pub fn resolve(addr: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = addr.parse() {
        return Ok(addr);
    }
    addr.to_socket_addrs()
        .map_err(|e| e.to_string())?
        .next()
        .ok_or_else(|| format!("{addr} resolves to no address"))
}

impl Conn {
    /// Connects to `addr` and, with a secret, authenticates.
    pub async fn open(
        addr: &str,
        secret: Option<&[u8]>,
        frame_bytes_max: u32,
        timeout: Duration,
    ) -> Result<Conn, CallError> {
        let connect_error = |reason: String| CallError::Connect {
            addr: addr.to_string(),
            reason,
        };
        let socket = resolve(addr).map_err(connect_error)?;
        let stream = tokio::time::timeout(timeout, TcpStream::connect(socket))
            .await
            .map_err(|_| connect_error("timed out".into()))?
            .map_err(|e| connect_error(e.to_string()))?;
        let _ = stream.set_nodelay(true);
        let mut conn = Conn {
            stream,
            buf: BytesMut::new(),
            next_id: 1,
            frame_bytes_max,
        };
        if let Some(secret) = secret {
            conn.call(crate::protocol::request::op::AUTH, 0, secret)
                .await?;
        }
        Ok(conn)
    }

    /// Sends one request frame and reads its answer: the status and body.
    pub async fn request(
        &mut self,
        kind: u8,
        flags: u8,
        body: &[u8],
    ) -> Result<(Status, Bytes), CallError> {
        let id = self.next_id;
        self.next_id += 1;
        let mut out = BytesMut::new();
        frame::encode(&mut out, Header { kind, flags, id }, &[body]);
        let (result, _) = self.stream.write_all(out.to_vec()).await;
        result.map_err(|e| CallError::Wire(format!("send: {e}")))?;
        loop {
            match frame::decode(&mut self.buf, self.frame_bytes_max) {
                Ok(Some(frame)) => {
                    let status = Status::from_u8(frame.header.kind).ok_or_else(|| {
                        CallError::Wire(format!("unknown status 0x{:02x}", frame.header.kind))
                    })?;
                    if frame.header.id != id {
                        return Err(CallError::Wire(format!(
                            "answer id {} to request {id}",
                            frame.header.id
                        )));
                    }
                    return Ok((status, frame.body));
                }
                Ok(None) => {}
                Err(error) => return Err(CallError::Wire(error.to_string())),
            }
            let spare = std::mem::take(&mut self.buf);
            let mut chunk = vec![0u8; 64 * 1024];
            let (read, returned) = self.stream.read(std::mem::take(&mut chunk)).await;
            let n = read.map_err(|e| CallError::Wire(format!("receive: {e}")))?;
            if n == 0 {
                return Err(CallError::Wire("the peer closed the connection".into()));
            }
            self.buf = spare;
            self.buf.extend_from_slice(&returned[..n]);
        }
    }

    /// `request`, with anything but OK as an error.
    pub async fn call(&mut self, kind: u8, flags: u8, body: &[u8]) -> Result<Bytes, CallError> {
        match self.request(kind, flags, body).await? {
            (Status::Ok, body) => Ok(body),
            (_, body) => Err(CallError::Refused(
                String::from_utf8_lossy(&body).into_owned(),
            )),
        }
    }
}

/// Makes one `Network` per peer.
pub struct Network {
    pub secret: Option<Rc<Vec<u8>>>,
    pub frame_bytes_max: u32,
    /// Tests only: member address → the address dialled for it (a fault proxy).
    pub dial: Vec<(String, String)>,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Peer;

    async fn new_client(&mut self, target: NodeId, node: &Member) -> Peer {
        Peer {
            target,
            addr: self
                .dial
                .iter()
                .find(|(from, _)| *from == node.addr)
                .map_or_else(|| node.addr.clone(), |(_, to)| to.clone()),
            secret: self.secret.clone(),
            frame_bytes_max: self.frame_bytes_max,
            conn: None,
        }
    }
}

pub struct Peer {
    target: NodeId,
    addr: String,
    secret: Option<Rc<Vec<u8>>>,
    frame_bytes_max: u32,
    conn: Option<Conn>,
}

type RpcError<E = openraft::error::Infallible> = RPCError<NodeId, Member, RaftError<NodeId, E>>;

impl Peer {
    async fn rpc<E: std::error::Error>(
        &mut self,
        kind: u8,
        body: &[u8],
        option: &RPCOption,
    ) -> Result<Bytes, RpcError<E>> {
        let ttl = option.hard_ttl();
        // The connection is taken out while a call is on it and put back only after a whole
        // answer: openraft drops an AppendEntries after one heartbeat interval (its own
        // timeout, around this one), and a connection left with an answer still to come would
        // hand that answer to the next call (an id mismatch, so a second failed RPC).
        let mut conn = self.conn.take();
        let fresh = conn.is_none();
        let result = tokio::time::timeout(ttl, async {
            if conn.is_none() {
                let secret = self.secret.as_deref().map(|s| s.as_slice());
                conn = Some(Conn::open(&self.addr, secret, self.frame_bytes_max, ttl).await?);
            }
            conn.as_mut().expect("connected").call(kind, 0, body).await
        })
        .await;
        let (error, timed_out) = match result {
            Ok(Ok(body)) => {
                self.conn = conn;
                return Ok(body);
            }
            Ok(Err(error)) => (error, false),
            Err(_) => (
                CallError::Wire(format!("no answer within {} ms", ttl.as_millis())),
                true,
            ),
        };
        tracing::debug!(target_node = self.target, addr = %self.addr, %error, "raft rpc failed");
        // A connection opened for this call and closed (or reset) before it answered is a peer
        // that does not serve (a member still starting, or a proxy before a dead one), as much
        // as a refused connect: openraft backs off on Unreachable only, and retried anything
        // else at once, so a leader's replication stream spun on it (tens of thousands of
        // failed RPCs a second, each logged) while a member was down.
        let unserved = fresh && !timed_out && matches!(error, CallError::Wire(_));
        Err(match error {
            CallError::Connect { .. } => RPCError::Unreachable(Unreachable::new(&error)),
            _ if unserved => RPCError::Unreachable(Unreachable::new(&error)),
            _ => RPCError::Network(NetworkError::new(&error)),
        })
    }
}

/// How long a replication stream waits before it tries again a member that does not serve.
const UNSERVED_BACKOFF_MS: u64 = 50;

/// How openraft words a chunk that does not continue the snapshot a member is receiving (the
/// member answers it as ERROR text).
const SNAPSHOT_MISMATCH: &str = "snapshot segment id mismatch";

fn malformed<E: std::error::Error>(error: codec::DecodeError) -> RpcError<E> {
    RPCError::Network(NetworkError::new(&error))
}

impl RaftNetwork<TypeConfig> for Peer {
    async fn append_entries(
        &mut self,
        mut rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RpcError> {
        // Send no more than fits one frame; the rest goes in the next RPC (PartialSuccess).
        let mut body = BytesMut::new();
        let budget = self.frame_bytes_max as usize - 64;
        let mut cut = None;
        loop {
            body.clear();
            codec::encode_append(&mut body, &rpc);
            if body.len() <= budget || rpc.entries.len() <= 1 {
                break;
            }
            let keep = rpc.entries.len() / 2;
            rpc.entries.truncate(keep);
            cut = rpc.entries.last().map(|e| e.log_id);
        }
        let answer = self.rpc(op::RAFT_APPEND, &body, &option).await?;
        let response = codec::decode_append_response(&answer).map_err(malformed)?;
        Ok(match (response, cut) {
            (AppendEntriesResponse::Success, Some(last)) => {
                tracing::debug!(upto = seq_of(&last), "raft: sent part of an append");
                AppendEntriesResponse::PartialSuccess(Some(last))
            }
            (response, _) => response,
        })
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RpcError<InstallSnapshotError>> {
        let mut body = BytesMut::new();
        codec::encode_snapshot_request(&mut body, &rpc);
        let answer = match self.rpc(op::RAFT_SNAPSHOT, &body, &option).await {
            // The member lost the chunks before this one (it restarted): openraft starts the
            // snapshot over from offset 0 on this error only (`Chunked::send_snapshot`).
            Err(RPCError::Network(error))
                if error.to_string().contains(SNAPSHOT_MISMATCH) && rpc.offset > 0 =>
            {
                let segment = |offset| openraft::SnapshotSegmentId {
                    id: rpc.meta.snapshot_id.clone(),
                    offset,
                };
                let mismatch = openraft::error::SnapshotMismatch {
                    expect: segment(0),
                    got: segment(rpc.offset),
                };
                return Err(RPCError::RemoteError(openraft::error::RemoteError::new(
                    self.target,
                    RaftError::APIError(InstallSnapshotError::SnapshotMismatch(mismatch)),
                )));
            }
            answer => answer?,
        };
        codec::decode_snapshot_response(&answer).map_err(malformed)
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RpcError> {
        let mut body = BytesMut::new();
        codec::encode_vote_request(&mut body, &rpc);
        let answer = self.rpc(op::RAFT_VOTE, &body, &option).await?;
        codec::decode_vote_response(&answer).map_err(malformed)
    }

    /// Between tries at a member that does not serve: short, so that a member back from a
    /// restart hears the leader before its own election timeout (200 ms and up by default)
    /// runs out; it stands for election in a new term otherwise, and its higher term deposes
    /// the leader. A refused connect to 127.0.0.1 every 50 ms costs nothing.
    fn backoff(&self) -> Backoff {
        Backoff::new(std::iter::repeat(Duration::from_millis(
            UNSERVED_BACKOFF_MS,
        )))
    }
}
