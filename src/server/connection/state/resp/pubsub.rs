//! SUBSCRIBE, UNSUBSCRIBE, PSUBSCRIBE, PUNSUBSCRIBE, PUBLISH, PUBSUB and RESET on the node's
//! registry (`server::pubsub`), with Redis's replies: each (un)subscription is confirmed by
//! its own push frame naming it and the connection's count after it, and a RESP2 connection
//! with subscriptions takes only (P)(UN)SUBSCRIBE, PING, QUIT and RESET. Messages reach the
//! connection through its mailbox, which its task empties once it owes no other reply.

use super::*;
use crate::server::pubsub::{push_header, Kind};

/// What a RESP2 connection with subscriptions may still send.
pub(super) fn allowed_when_subscribed(name: Name) -> bool {
    matches!(
        name,
        Name::Subscribe
            | Name::Unsubscribe
            | Name::PSubscribe
            | Name::PUnsubscribe
            | Name::Ping
            | Name::Quit
            | Name::Reset
    )
}

impl<'a> ConnState<'a> {
    /// The pub/sub registry this connection uses (None in unit tests that do not set one).
    pub fn with_pubsub(mut self, pubsub: &'a crate::server::pubsub::PubSub) -> Self {
        self.pubsub = Some(pubsub);
        self
    }

    /// After HELLO: messages to this connection are encoded in its version from now on.
    pub(super) fn follow_version(&self, session: &Session) {
        if let (Some(pubsub), true) = (self.pubsub, session.subscriptions > 0) {
            pubsub.set_version(session.client_id, session.version);
        }
    }

    /// Redis's refusal of a command in RESP2's subscribed mode.
    pub(super) fn refuse_when_subscribed(&mut self, cost: usize, text: &str) {
        let message = format!("ERR Can't execute '{text}': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context");
        self.resp_error(cost, &message);
    }

    /// PING in RESP2's subscribed mode: `pong` and the argument (or an empty string).
    pub(super) fn subscribed_ping(&mut self, cost: usize, args: &[Bytes]) {
        let mut out = BytesMut::new();
        reply::array(&mut out, 2);
        reply::bulk(&mut out, b"pong");
        reply::bulk(&mut out, args.get(1).map_or(&b""[..], |a| &a[..]));
        self.resp_raw(cost, out, 0);
    }

    pub(super) fn resp_pubsub(
        &mut self,
        session: &mut Session,
        name: Name,
        args: &[Bytes],
        cost: usize,
        now: Instant,
    ) {
        let Some(pubsub) = self.pubsub else {
            return self.resp_error(cost, "ERR pub/sub is not served on this connection");
        };
        let client = session.client_id;
        let version = session.version;
        let mut out = BytesMut::new();
        match name {
            Name::Subscribe | Name::PSubscribe => {
                let (kind, text) = match name {
                    Name::Subscribe => (Kind::Channel, &b"subscribe"[..]),
                    _ => (Kind::Pattern, &b"psubscribe"[..]),
                };
                for channel in &args[1..] {
                    match pubsub.subscribe(client, version, kind, channel) {
                        Ok(count) => {
                            session.subscriptions = count;
                            confirm(&mut out, version, text, Some(channel), count);
                        }
                        Err(error) => {
                            reply::error(&mut out, &error.to_string());
                            break;
                        }
                    }
                }
            }
            Name::Unsubscribe | Name::PUnsubscribe => {
                let (kind, text) = match name {
                    Name::Unsubscribe => (Kind::Channel, &b"unsubscribe"[..]),
                    _ => (Kind::Pattern, &b"punsubscribe"[..]),
                };
                let names = match args.len() {
                    1 => pubsub.subscriptions(client, kind),
                    _ => args[1..].to_vec(),
                };
                if names.is_empty() {
                    let count = pubsub.count(client);
                    confirm(&mut out, version, text, None, count);
                }
                for channel in &names {
                    let count = pubsub.unsubscribe(client, kind, channel);
                    session.subscriptions = count;
                    confirm(&mut out, version, text, Some(channel), count);
                }
            }
            Name::Publish => {
                let receivers = pubsub.publish(&args[1], &args[2], now);
                reply::integer(&mut out, receivers as i64);
            }
            Name::PubSub => {
                let sub = String::from_utf8_lossy(&args[1]).to_ascii_lowercase();
                match (sub.as_str(), args.len()) {
                    ("channels", 2 | 3) => {
                        let channels = pubsub.channels(args.get(2).map(|p| &p[..]));
                        reply::array(&mut out, channels.len());
                        for channel in &channels {
                            reply::bulk(&mut out, channel);
                        }
                    }
                    ("numsub", _) => {
                        let channels = &args[2..];
                        match version {
                            Version::Resp2 => reply::array(&mut out, channels.len() * 2),
                            Version::Resp3 => reply::map(&mut out, channels.len(), version),
                        }
                        for channel in channels {
                            reply::bulk(&mut out, channel);
                            reply::integer(&mut out, pubsub.numsub(channel) as i64);
                        }
                    }
                    ("numpat", 2) => reply::integer(&mut out, pubsub.numpat() as i64),
                    ("numpat", _) => {
                        return self.resp_error(cost, &arity_error("pubsub|numpat"));
                    }
                    ("channels", _) => {
                        let sub = String::from_utf8_lossy(&args[1]);
                        let message = format!("ERR unknown subcommand or wrong number of arguments for '{sub}'. Try PUBSUB HELP.");
                        return self.resp_error(cost, &message);
                    }
                    _ => {
                        let sub = String::from_utf8_lossy(&args[1]);
                        let message = format!("ERR unknown subcommand '{sub}'. Try PUBSUB HELP.");
                        return self.resp_error(cost, &message);
                    }
                }
            }
            Name::Reset => {
                session.multi = None;
                session.watched.clear();
                for kind in [Kind::Channel, Kind::Pattern] {
                    for name in pubsub.subscriptions(client, kind) {
                        pubsub.unsubscribe(client, kind, &name);
                    }
                }
                session.subscriptions = 0;
                session.version = Version::Resp2;
                session.name = None;
                reply::simple(&mut out, "RESET");
            }
            _ => {}
        }
        self.resp_raw(cost, out, 0);
    }
}

/// `subscribe channel count` and its kin, a push frame in RESP3.
fn confirm(out: &mut BytesMut, version: Version, kind: &[u8], name: Option<&Bytes>, count: usize) {
    push_header(out, 3, version);
    reply::bulk(out, kind);
    match name {
        Some(name) => reply::bulk(out, name),
        None => reply::null(out, version),
    }
    reply::integer(out, count as i64);
}
