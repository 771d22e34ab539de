//! Pub/sub, in memory as in Redis (`pubsub.c`): the node's registry of channels and patterns,
//! each to the mailboxes of the RESP connections subscribed to it. Messages are neither
//! logged nor replicated: a subscriber hears what is published on this node while it is
//! connected, and nothing else.
//!
//! PUBLISH (decided by a connection's state machine) encodes the message once per RESP version
//! and puts it in each receiver's mailbox; the receiver's task sends what its mailbox holds
//! once it owes no other reply. A mailbox is bounded as Redis bounds a subscriber's output
//! buffer (`client-output-buffer-limit pubsub 32mb 8mb 60`): past the hard limit, or over the
//! soft limit for longer than the soft time, the subscriber is cut off (logged and counted),
//! its messages dropped and its subscriptions removed. A connection's entry goes when it
//! closes (`Registration`'s drop).

use std::cell::{Cell, RefCell};
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::sync::Notify;

use crate::limits::{
    RESP_PUBSUB_HARD_BYTES_MAX, RESP_PUBSUB_SOFT_BYTES_MAX, RESP_PUBSUB_SOFT_SECS,
    RESP_SUBSCRIPTIONS_MAX,
};
use crate::resp::{glob, reply, Version};

use super::sweep::ConnWatch;

/// Messages waiting for one subscriber.
#[derive(Default)]
pub struct Mailbox {
    frames: RefCell<VecDeque<Bytes>>,
    bytes: Cell<usize>,
    /// Since when the mailbox has held more than the soft limit.
    over_soft_since: Cell<Option<Instant>>,
    cut: Cell<bool>,
    /// Wakes the connection's task when a message arrives or it is cut.
    pub notify: Notify,
}

impl Mailbox {
    /// Whether the subscriber was cut off for not taking its messages.
    pub fn is_cut(&self) -> bool {
        self.cut.get()
    }

    pub fn is_empty(&self) -> bool {
        self.frames.borrow().is_empty()
    }

    /// Moves messages into `out` until it holds `max` bytes.
    pub fn take_into(&self, out: &mut BytesMut, max: usize) {
        let mut frames = self.frames.borrow_mut();
        while out.len() < max {
            let Some(frame) = frames.pop_front() else {
                break;
            };
            self.bytes.set(self.bytes.get() - frame.len());
            out.extend_from_slice(&frame);
        }
        if self.bytes.get() <= RESP_PUBSUB_SOFT_BYTES_MAX {
            self.over_soft_since.set(None);
        }
    }

    /// Adds a message; false if that puts the mailbox past its limits.
    fn deliver(&self, frame: Bytes, now: Instant) -> bool {
        self.bytes.set(self.bytes.get() + frame.len());
        self.frames.borrow_mut().push_back(frame);
        self.notify.notify_one();
        let bytes = self.bytes.get();
        if bytes > RESP_PUBSUB_HARD_BYTES_MAX {
            return false;
        }
        if bytes <= RESP_PUBSUB_SOFT_BYTES_MAX {
            self.over_soft_since.set(None);
            return true;
        }
        let since = *self.over_soft_since.get().get_or_insert(now);
        self.over_soft_since.set(Some(since));
        now.saturating_duration_since(since) < Duration::from_secs(RESP_PUBSUB_SOFT_SECS)
    }

    fn cut_off(&self) {
        self.cut.set(true);
        self.frames.borrow_mut().clear();
        self.bytes.set(0);
        self.notify.notify_one();
    }
}

/// A connection's place in the registry: removed, subscriptions and messages with it, when
/// the connection's task ends.
pub struct Registration<'p> {
    pubsub: &'p PubSub,
    client: u64,
    pub mailbox: Rc<Mailbox>,
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        self.pubsub.remove(self.client);
    }
}

struct Client {
    mailbox: Rc<Mailbox>,
    /// The socket, closed when the subscriber is cut off (None in unit tests).
    watch: Option<Rc<ConnWatch>>,
    version: Version,
    channels: BTreeSet<Bytes>,
    patterns: BTreeSet<Bytes>,
}

impl Client {
    fn count(&self) -> usize {
        self.channels.len() + self.patterns.len()
    }
}

#[derive(Default)]
struct Registry {
    /// Subscribers (client ids) by channel, and by pattern.
    channels: HashMap<Bytes, Vec<u64>>,
    patterns: HashMap<Bytes, Vec<u64>>,
    clients: HashMap<u64, Client>,
}

/// Which kind of subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Channel,
    Pattern,
}

/// Why a subscription was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubscribeError {
    #[error("ERR a connection may hold at most {RESP_SUBSCRIPTIONS_MAX} subscriptions")]
    TooMany,
}

/// The node's pub/sub registry.
#[derive(Default)]
pub struct PubSub {
    registry: RefCell<Registry>,
    /// Subscribers cut off for not taking their messages.
    pub cut_total: Cell<u64>,
    /// Messages published, and deliveries made.
    pub published_total: Cell<u64>,
    pub delivered_total: Cell<u64>,
}

impl PubSub {
    /// Lists connection `client` (a RESP connection) until the registration drops.
    pub fn register(&self, client: u64, watch: Option<Rc<ConnWatch>>) -> Registration<'_> {
        let mailbox = self.listed(client, watch);
        Registration {
            pubsub: self,
            client,
            mailbox,
        }
    }

    fn listed(&self, client: u64, watch: Option<Rc<ConnWatch>>) -> Rc<Mailbox> {
        let mailbox = Rc::new(Mailbox::default());
        self.registry.borrow_mut().clients.insert(
            client,
            Client {
                mailbox: mailbox.clone(),
                watch,
                version: Version::Resp2,
                channels: BTreeSet::new(),
                patterns: BTreeSet::new(),
            },
        );
        mailbox
    }

    /// Forgets `client` and every subscription it holds.
    pub fn remove(&self, client: u64) {
        let mut registry = self.registry.borrow_mut();
        let Some(entry) = registry.clients.remove(&client) else {
            return;
        };
        for channel in &entry.channels {
            unlist(&mut registry.channels, channel, client);
        }
        for pattern in &entry.patterns {
            unlist(&mut registry.patterns, pattern, client);
        }
    }

    /// Subscribes `client`; its subscriptions after. Messages are encoded for `version`.
    pub fn subscribe(
        &self,
        client: u64,
        version: Version,
        kind: Kind,
        name: &Bytes,
    ) -> Result<usize, SubscribeError> {
        let mut guard = self.registry.borrow_mut();
        let registry = &mut *guard;
        let Some(entry) = registry.clients.get_mut(&client) else {
            return Ok(0);
        };
        entry.version = version;
        let (set, map) = match kind {
            Kind::Channel => (&mut entry.channels, &mut registry.channels),
            Kind::Pattern => (&mut entry.patterns, &mut registry.patterns),
        };
        if !set.contains(name) {
            if set.len() >= RESP_SUBSCRIPTIONS_MAX {
                return Err(SubscribeError::TooMany);
            }
            set.insert(name.clone());
            map.entry(name.clone()).or_default().push(client);
        }
        Ok(entry.count())
    }

    /// Messages to `client` are encoded for `version` from now on (after HELLO).
    pub fn set_version(&self, client: u64, version: Version) {
        if let Some(entry) = self.registry.borrow_mut().clients.get_mut(&client) {
            entry.version = version;
        }
    }

    /// Unsubscribes `client` from `name`; its subscriptions after.
    pub fn unsubscribe(&self, client: u64, kind: Kind, name: &Bytes) -> usize {
        let mut guard = self.registry.borrow_mut();
        let registry = &mut *guard;
        let Some(entry) = registry.clients.get_mut(&client) else {
            return 0;
        };
        let (set, map) = match kind {
            Kind::Channel => (&mut entry.channels, &mut registry.channels),
            Kind::Pattern => (&mut entry.patterns, &mut registry.patterns),
        };
        if set.remove(name) {
            unlist(map, name, client);
        }
        entry.count()
    }

    /// The channels (or patterns) `client` is subscribed to, in order.
    pub fn subscriptions(&self, client: u64, kind: Kind) -> Vec<Bytes> {
        let registry = self.registry.borrow();
        registry
            .clients
            .get(&client)
            .map_or_else(Vec::new, |entry| {
                let set = match kind {
                    Kind::Channel => &entry.channels,
                    Kind::Pattern => &entry.patterns,
                };
                set.iter().cloned().collect()
            })
    }

    /// Subscriptions `client` holds.
    pub fn count(&self, client: u64) -> usize {
        self.registry
            .borrow()
            .clients
            .get(&client)
            .map_or(0, Client::count)
    }

    /// Publishes `message` on `channel`; the number of receivers.
    pub fn publish(&self, channel: &[u8], message: &[u8], now: Instant) -> usize {
        let registry = self.registry.borrow();
        let mut encoded: [Option<Bytes>; 2] = [None, None];
        let mut receivers = 0;
        let mut cut = Vec::new();
        let mut send = |registry: &Registry, client: u64, pattern: Option<&[u8]>| {
            let Some(entry) = registry.clients.get(&client) else {
                return;
            };
            if entry.mailbox.is_cut() {
                return;
            }
            let frame = match pattern {
                // A pattern's message names the pattern: encoded for each.
                Some(pattern) => encode_message(entry.version, Some(pattern), channel, message),
                None => encoded[entry.version as usize]
                    .get_or_insert_with(|| encode_message(entry.version, None, channel, message))
                    .clone(),
            };
            receivers += 1;
            if !entry.mailbox.deliver(frame, now) {
                cut.push(client);
            }
        };
        if let Some(clients) = registry.channels.get(channel) {
            for &client in clients {
                send(&registry, client, None);
            }
        }
        for (pattern, clients) in &registry.patterns {
            if glob::matches(pattern, channel) {
                for &client in clients {
                    send(&registry, client, Some(pattern));
                }
            }
        }
        self.published_total.set(self.published_total.get() + 1);
        self.delivered_total
            .set(self.delivered_total.get() + receivers as u64);
        drop(registry);
        for client in cut {
            self.cut_off(client);
        }
        receivers
    }

    /// Cuts off a subscriber past its mailbox's limits: logged, counted, its messages
    /// dropped, its socket closed, its subscriptions removed (it stays listed until it closes).
    fn cut_off(&self, client: u64) {
        if let Some(entry) = self.registry.borrow().clients.get(&client) {
            tracing::warn!(
                client,
                hard_bytes = RESP_PUBSUB_HARD_BYTES_MAX,
                soft_bytes = RESP_PUBSUB_SOFT_BYTES_MAX,
                soft_secs = RESP_PUBSUB_SOFT_SECS,
                "closing a subscriber that does not take its messages (pub/sub output limit, as Redis's client-output-buffer-limit pubsub 32mb 8mb 60)"
            );
            entry.mailbox.cut_off();
            if let Some(watch) = &entry.watch {
                watch.cut();
            }
        }
        self.cut_total.set(self.cut_total.get() + 1);
        for kind in [Kind::Channel, Kind::Pattern] {
            for name in self.subscriptions(client, kind) {
                self.unsubscribe(client, kind, &name);
            }
        }
    }

    /// Channels with at least one subscriber, matching `pattern` if given, in order.
    pub fn channels(&self, pattern: Option<&[u8]>) -> Vec<Bytes> {
        let registry = self.registry.borrow();
        let mut channels: Vec<Bytes> = registry
            .channels
            .keys()
            .filter(|channel| pattern.is_none_or(|pattern| glob::matches(pattern, channel)))
            .cloned()
            .collect();
        channels.sort_unstable();
        channels
    }

    /// Channels with at least one subscriber.
    pub fn channel_count(&self) -> usize {
        self.registry.borrow().channels.len()
    }

    /// Subscribers of `channel` (patterns not counted, as Redis's NUMSUB).
    pub fn numsub(&self, channel: &[u8]) -> usize {
        self.registry
            .borrow()
            .channels
            .get(channel)
            .map_or(0, Vec::len)
    }

    /// Patterns subscribed to, by anyone (each counted once).
    pub fn numpat(&self) -> usize {
        self.registry.borrow().patterns.len()
    }
}

fn unlist(map: &mut HashMap<Bytes, Vec<u64>>, name: &Bytes, client: u64) {
    if let Some(clients) = map.get_mut(name) {
        clients.retain(|&c| c != client);
        if clients.is_empty() {
            map.remove(name);
        }
    }
}

/// A push frame's header: an array in RESP2, a push (`>`) in RESP3.
pub fn push_header(out: &mut BytesMut, len: usize, version: Version) {
    match version {
        Version::Resp2 => reply::array(out, len),
        Version::Resp3 => {
            out.extend_from_slice(format!(">{len}\r\n").as_bytes());
        }
    }
}

/// `message channel payload`, or `pmessage pattern channel payload`.
fn encode_message(
    version: Version,
    pattern: Option<&[u8]>,
    channel: &[u8],
    message: &[u8],
) -> Bytes {
    let mut out = BytesMut::with_capacity(channel.len() + message.len() + 48);
    match pattern {
        None => {
            push_header(&mut out, 3, version);
            reply::bulk(&mut out, b"message");
        }
        Some(pattern) => {
            push_header(&mut out, 4, version);
            reply::bulk(&mut out, b"pmessage");
            reply::bulk(&mut out, pattern);
        }
    }
    reply::bulk(&mut out, channel);
    reply::bulk(&mut out, message);
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_reach_channel_and_pattern_subscribers_once_each() {
        let pubsub = PubSub::default();
        let a = pubsub.listed(1, None);
        let b = pubsub.listed(2, None);
        let news = Bytes::from("news.sport");
        assert_eq!(
            pubsub.subscribe(1, Version::Resp2, Kind::Channel, &news),
            Ok(1)
        );
        assert_eq!(
            pubsub.subscribe(1, Version::Resp2, Kind::Channel, &news),
            Ok(1)
        );
        let pattern = Bytes::from("news.*");
        assert_eq!(
            pubsub.subscribe(2, Version::Resp3, Kind::Pattern, &pattern),
            Ok(1)
        );
        assert_eq!(pubsub.publish(b"news.sport", b"goal", Instant::now()), 2);
        assert_eq!(pubsub.publish(b"weather", b"rain", Instant::now()), 0);
        let mut out = BytesMut::new();
        a.take_into(&mut out, usize::MAX);
        assert_eq!(
            &out[..],
            b"*3\r\n$7\r\nmessage\r\n$10\r\nnews.sport\r\n$4\r\ngoal\r\n"
        );
        out.clear();
        b.take_into(&mut out, usize::MAX);
        assert!(out.starts_with(b">4\r\n$8\r\npmessage\r\n$6\r\nnews.*\r\n"));
        assert_eq!(pubsub.channels(None), vec![news.clone()]);
        assert_eq!((pubsub.numsub(b"news.sport"), pubsub.numpat()), (1, 1));
        pubsub.remove(1);
        pubsub.remove(2);
        assert_eq!((pubsub.numsub(b"news.sport"), pubsub.numpat()), (0, 0));
        assert!(pubsub.channels(None).is_empty());
    }

    #[test]
    fn a_subscriber_that_takes_nothing_is_cut_at_the_hard_limit() {
        let pubsub = PubSub::default();
        let slow = pubsub.listed(1, None);
        let fast = pubsub.listed(2, None);
        let channel = Bytes::from("c");
        pubsub
            .subscribe(1, Version::Resp2, Kind::Channel, &channel)
            .unwrap();
        pubsub
            .subscribe(2, Version::Resp2, Kind::Channel, &channel)
            .unwrap();
        let message = vec![0u8; 1024 * 1024];
        let mut out = BytesMut::new();
        for _ in 0..40 {
            pubsub.publish(b"c", &message, Instant::now());
            fast.take_into(&mut out, usize::MAX);
            out.clear();
        }
        assert!(slow.is_cut() && slow.is_empty());
        assert!(!fast.is_cut());
        assert_eq!(pubsub.cut_total.get(), 1);
        assert_eq!(pubsub.numsub(b"c"), 1);
        assert_eq!(pubsub.publish(b"c", b"x", Instant::now()), 1);
    }

    #[test]
    fn over_the_soft_limit_for_the_soft_time_is_cut_too() {
        let mailbox = Mailbox::default();
        let start = Instant::now();
        let big = Bytes::from(vec![0u8; RESP_PUBSUB_SOFT_BYTES_MAX + 1]);
        assert!(mailbox.deliver(big, start));
        let later = start + Duration::from_secs(RESP_PUBSUB_SOFT_SECS + 1);
        assert!(!mailbox.deliver(Bytes::from_static(b"x"), later));
    }
}
