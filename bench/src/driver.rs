//! One client's connection and the loop that keeps `--pipeline` requests in flight on it.
//!
//! kvs and Redis: one TCP connection, a writer and a reader running side by side on the
//! thread's loop. The writer asks the workload for requests while fewer than `pipeline` are in
//! flight (and, in the open loop, while they are due) and writes them in one go; the reader cuts
//! replies off the bytes read, matches each to its request (by id for kvs, in order for RESP)
//! and hands it to the statistics. etcd: one HTTP/2 channel with `pipeline` calls in flight.
//!
//! A connection that closes, sends bytes that are not a reply, or sends nothing for
//! `--timeout` while requests are in flight is given up: its requests in flight are counted
//! lost (errors) and the client sends no more.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::marker::PhantomData;
use std::time::Duration;

use anyhow::Context;
use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::time::{sleep, sleep_until, Instant};

use crate::codec::kvs::KvsCodec;
use crate::codec::resp::RespCodec;
use crate::codec::Codec;
use crate::config::{Target, TargetKind};
use crate::etcd::EtcdClient;
use crate::stats::ThreadStats;
use crate::workload::{Next, Request, Workload};

/// Bytes asked of the kernel per read.
const READ_BYTES: usize = 64 * 1024;

pub enum Connection {
    Kvs(Pipelined<KvsCodec>),
    Redis(Pipelined<RespCodec>),
    Etcd(Etcd),
}

impl Connection {
    /// Connects; to kvs with a `secret`, authenticates first.
    pub async fn connect(
        target: &Target,
        timeout: Duration,
        secret: Option<&kvs::auth::Secret>,
    ) -> anyhow::Result<Connection> {
        let addr = &target.addr;
        let connection = match target.kind {
            TargetKind::Kvs => {
                let mut conn = Pipelined::connect(addr, timeout).await?;
                if let Some(secret) = secret {
                    conn.authenticate(secret, timeout)
                        .await
                        .with_context(|| format!("authenticating to kvs at {addr}"))?;
                }
                Connection::Kvs(conn)
            }
            TargetKind::Redis => Connection::Redis(Pipelined::connect(addr, timeout).await?),
            TargetKind::Etcd => Connection::Etcd(Etcd {
                client: EtcdClient::connect(addr, timeout)
                    .await
                    .with_context(|| format!("cannot connect to etcd at {addr}"))?,
                broken: false,
            }),
        };
        Ok(connection)
    }

    /// True when the target applies one connection's requests in the order sent.
    pub fn ordered(kind: TargetKind) -> bool {
        match kind {
            TargetKind::Kvs | TargetKind::Redis => true,
            TargetKind::Etcd => false,
        }
    }

    /// Sends what the workload has for the current phase, until it says done and every reply
    /// is in (or the connection is given up).
    pub async fn run_phase(
        &mut self,
        workload: &mut Workload,
        stats: &RefCell<ThreadStats>,
        pipeline: usize,
        timeout: Duration,
    ) {
        match self {
            Connection::Kvs(conn) => conn.run_phase(workload, stats, pipeline, timeout).await,
            Connection::Redis(conn) => conn.run_phase(workload, stats, pipeline, timeout).await,
            Connection::Etcd(conn) => conn.run_phase(workload, stats, pipeline, timeout).await,
        }
    }
}

pub struct Pipelined<C> {
    stream: TcpStream,
    read_buf: BytesMut,
    write_buf: BytesMut,
    next_id: u64,
    broken: bool,
    codec: PhantomData<C>,
}

impl Pipelined<KvsCodec> {
    /// Sends AUTH with `secret` and waits for its OK, before any measured request.
    async fn authenticate(
        &mut self,
        secret: &kvs::auth::Secret,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        let secret =
            kvs::protocol::request::SecretBytes(bytes::Bytes::copy_from_slice(secret.bytes()));
        let id = self.next_id;
        self.next_id += 1;
        let mut out = BytesMut::new();
        kvs::protocol::Request::Auth { secret }.encode(id, &mut out);
        let exchange = async {
            self.stream.write_all(&out).await?;
            loop {
                if let Some((reply_id, response)) = KvsCodec::decode(&mut self.read_buf)
                    .map_err(|error| anyhow::anyhow!(error.0))?
                {
                    if reply_id != id {
                        anyhow::bail!("the reply to AUTH carries id {reply_id}, not {id}");
                    }
                    if response.status != kvs::protocol::Status::Ok {
                        anyhow::bail!(
                            "the server refused the secret: {}",
                            String::from_utf8_lossy(&response.body)
                        );
                    }
                    return Ok(());
                }
                self.read_buf.reserve(READ_BYTES);
                if self.stream.read_buf(&mut self.read_buf).await? == 0 {
                    anyhow::bail!("the server closed the connection before answering AUTH");
                }
            }
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .context("no answer to AUTH in time")?
    }
}

/// What the writer and the reader share; borrowed only between awaits.
struct InFlight<'w> {
    workload: &'w mut Workload,
    requests: VecDeque<(u64, Request)>,
    done_sending: bool,
}

impl<C: Codec> Pipelined<C> {
    async fn connect(addr: &str, timeout: Duration) -> anyhow::Result<Self> {
        let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
            .await
            .with_context(|| format!("connecting to {addr} timed out"))?
            .with_context(|| format!("cannot connect to {addr}"))?;
        stream.set_nodelay(true)?;
        Ok(Pipelined {
            stream,
            read_buf: BytesMut::with_capacity(READ_BYTES),
            write_buf: BytesMut::new(),
            next_id: 1,
            broken: false,
            codec: PhantomData,
        })
    }

    async fn run_phase(
        &mut self,
        workload: &mut Workload,
        stats: &RefCell<ThreadStats>,
        pipeline: usize,
        timeout: Duration,
    ) {
        if self.broken {
            return;
        }
        let shared = RefCell::new(InFlight {
            workload,
            requests: VecDeque::with_capacity(pipeline),
            done_sending: false,
        });
        let room = Notify::new();
        let writer_done = Notify::new();
        let (mut reader, mut writer) = self.stream.split();
        let write_buf = &mut self.write_buf;
        let read_buf = &mut self.read_buf;
        let next_id = &mut self.next_id;

        let write = async {
            loop {
                while shared.borrow().requests.len() >= pipeline {
                    room.notified().await;
                }
                let now = Instant::now();
                let mut wait = None;
                {
                    let mut shared = shared.borrow_mut();
                    while shared.requests.len() < pipeline {
                        match shared.workload.next(now.into_std()) {
                            Next::Send(request) => {
                                let id = *next_id;
                                *next_id += 1;
                                C::encode(id, &request, write_buf);
                                shared.requests.push_back((id, request));
                                stats.borrow_mut().sent += 1;
                            }
                            Next::Wait(due) => {
                                wait = Some(due);
                                break;
                            }
                            Next::Done => {
                                shared.done_sending = true;
                                break;
                            }
                        }
                    }
                }
                if !write_buf.is_empty() {
                    writer
                        .write_all(write_buf)
                        .await
                        .map_err(|error| format!("write failed: {error}"))?;
                    write_buf.clear();
                }
                if shared.borrow().done_sending {
                    writer_done.notify_one();
                    return Ok::<(), String>(());
                }
                if let Some(due) = wait {
                    sleep_until(due.into()).await;
                }
            }
        };

        let read = async {
            let mut writer_finished = false;
            loop {
                let idle = {
                    let shared = shared.borrow();
                    if shared.done_sending && shared.requests.is_empty() {
                        return Ok::<(), String>(());
                    }
                    shared.requests.is_empty()
                };
                read_buf.reserve(READ_BYTES);
                tokio::select! {
                    biased;
                    read = reader.read_buf(read_buf) => match read {
                        Ok(0) => return Err("the server closed the connection".to_string()),
                        Ok(_) => {}
                        Err(error) => return Err(format!("read failed: {error}")),
                    },
                    _ = writer_done.notified(), if !writer_finished => {
                        writer_finished = true;
                        continue;
                    }
                    _ = sleep(timeout), if !idle => {
                        return Err(format!("no reply for {:.1} s", timeout.as_secs_f64()));
                    }
                }
                let now = Instant::now().into_std();
                while let Some((id, raw)) = C::decode(read_buf).map_err(|error| error.0)? {
                    let mut shared = shared.borrow_mut();
                    let position = if C::REPLIES_CARRY_ID {
                        shared.requests.iter().position(|(sent, _)| *sent == id)
                    } else {
                        (!shared.requests.is_empty()).then_some(0)
                    };
                    let Some((_, request)) = position.and_then(|at| shared.requests.remove(at))
                    else {
                        stats
                            .borrow_mut()
                            .unmatched_reply(format!("a reply for no request in flight (id {id})"));
                        continue;
                    };
                    let reply = C::interpret(request.op, raw);
                    stats
                        .borrow_mut()
                        .record(&mut *shared.workload, &request, Some(&reply), now);
                }
                room.notify_one();
            }
        };

        let result = tokio::try_join!(write, read);
        if let Err(why) = result {
            self.broken = true;
            let mut guard = shared.borrow_mut();
            let shared = &mut *guard;
            let mut stats = stats.borrow_mut();
            let now = Instant::now().into_std();
            stats.connection_failed(format!("connection given up: {why}"));
            while let Some((_, request)) = shared.requests.pop_front() {
                stats.record(&mut *shared.workload, &request, None, now);
            }
        }
    }
}

pub struct Etcd {
    client: EtcdClient,
    broken: bool,
}

impl Etcd {
    async fn run_phase(
        &mut self,
        workload: &mut Workload,
        stats: &RefCell<ThreadStats>,
        pipeline: usize,
        timeout: Duration,
    ) {
        if self.broken {
            return;
        }
        let workload = RefCell::new(workload);
        let broken = Cell::new(false);
        let workers = (0..pipeline).map(|_| {
            let mut client = self.client.clone();
            let workload = &workload;
            let broken = &broken;
            async move {
                while !broken.get() {
                    let next = workload.borrow_mut().next(Instant::now().into_std());
                    let request = match next {
                        Next::Send(request) => request,
                        Next::Wait(due) => {
                            sleep_until(due.into()).await;
                            continue;
                        }
                        Next::Done => break,
                    };
                    stats.borrow_mut().sent += 1;
                    let reply = tokio::time::timeout(timeout, client.call(&request)).await;
                    let now = Instant::now().into_std();
                    let mut workload = workload.borrow_mut();
                    let mut stats = stats.borrow_mut();
                    match reply {
                        Ok(reply) => stats.record(&mut workload, &request, Some(&reply), now),
                        Err(_) => {
                            if !broken.replace(true) {
                                stats.connection_failed(format!(
                                    "connection given up: no reply for {:.1} s",
                                    timeout.as_secs_f64()
                                ));
                            }
                            stats.record(&mut workload, &request, None, now);
                        }
                    }
                }
            }
        });
        futures_util::future::join_all(workers).await;
        self.broken = broken.get();
    }
}
