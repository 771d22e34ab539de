//! The client side of ops `0x09`–`0x1f` (`protocol::ext`): conditional and expiring writes,
//! counters, batches, transactions and watch.

use bytes::Bytes;

use super::{malformed, refusal, seq_of, Client, ClientError};
use crate::protocol::ext::{ExpireFlags, Expiry, ExtRequest, SetOptions, Txn};
use crate::protocol::request::Request;
use crate::protocol::response::{Response, Status};

/// What a conditional write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    /// Written with this seq.
    Ok(u64),
    /// The condition did not hold; nothing was written. The key's current seq (0: absent).
    ConditionFailed(u64),
}

/// A key's seq and expiry, with the server's clock when it answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyMeta {
    /// The seq of the last write that changed the key.
    pub seq: u64,
    /// Unix time in ms; 0: never.
    pub expires_at_ms: u64,
    pub now_ms: u64,
}

impl KeyMeta {
    /// Milliseconds left to live, `None` without an expiry.
    pub fn ttl_ms(&self) -> Option<u64> {
        (self.expires_at_ms != 0).then(|| self.expires_at_ms.saturating_sub(self.now_ms))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxnOutcome {
    /// Whether every compare held (the success writes ran) or not (the failure writes ran).
    pub succeeded: bool,
    /// The seq of the transaction's record; 0 if its branch had no writes.
    pub seq: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Set,
    Del,
    Expired,
    /// The key's expiry changed (`expires_at_ms`, 0: removed).
    Expire,
}

impl EventKind {
    pub fn name(self) -> &'static str {
        match self {
            EventKind::Set => "set",
            EventKind::Del => "del",
            EventKind::Expired => "expired",
            EventKind::Expire => "expire",
        }
    }
}

/// One change a WATCH reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub seq: u64,
    pub kind: EventKind,
    pub expires_at_ms: u64,
    pub key: Bytes,
    pub value: Bytes,
}

impl Event {
    /// Reads an EVENT body: `seq` u64, `kind` u8, `expires_at_ms` u64, `klen` u32, key, value.
    pub fn decode(body: &Bytes) -> Option<Event> {
        let seq = u64::from_le_bytes(body.get(..8)?.try_into().ok()?);
        let kind = match *body.get(8)? {
            1 => EventKind::Set,
            2 => EventKind::Del,
            3 => EventKind::Expired,
            4 => EventKind::Expire,
            _ => return None,
        };
        let expires_at_ms = u64::from_le_bytes(body.get(9..17)?.try_into().ok()?);
        let key_len = u32::from_le_bytes(body.get(17..21)?.try_into().ok()?) as usize;
        let key_end = 21usize
            .checked_add(key_len)
            .filter(|end| *end <= body.len())?;
        Some(Event {
            seq,
            kind,
            expires_at_ms,
            key: body.slice(21..key_end),
            value: body.slice(key_end..),
        })
    }
}

/// A connection given over to one WATCH: `next` blocks until the next change.
pub struct Watch {
    client: Client,
    id: u64,
}

impl Watch {
    /// Whether the next event is already here (`next_event` will not block): a printer
    /// flushes its output only when it is not.
    pub fn has_buffered_event(&self) -> bool {
        self.client.has_buffered_reply()
    }

    /// The next change; an ERROR from the server (a compacted seq, a slow watcher cut off)
    /// ends the watch.
    pub fn next_event(&mut self) -> Result<Event, ClientError> {
        let response = self.client.recv()?;
        if response.id != self.id {
            return Err(ClientError::IdMismatch {
                sent: self.id,
                received: response.id,
            });
        }
        match response.status {
            Status::Event => Event::decode(&response.body)
                .ok_or_else(|| malformed("WATCH", "an event body does not add up")),
            _ => Err(refusal("WATCH", &response)),
        }
    }
}

fn written(request: &'static str, response: &Response) -> Result<Written, ClientError> {
    match response.status {
        Status::Ok => seq_of(request, response).map(Written::Ok),
        Status::ConditionFailed => seq_of(request, response).map(Written::ConditionFailed),
        _ => Err(refusal(request, response)),
    }
}

impl Client {
    fn call_ext(&mut self, request: ExtRequest) -> Result<Response, ClientError> {
        self.call(&Request::Ext(request))
    }

    /// SET with an expiry and a condition (NX, XX, or the key's seq).
    pub fn set_with(
        &mut self,
        key: &[u8],
        value: &[u8],
        options: SetOptions,
    ) -> Result<Written, ClientError> {
        let response = self.call_ext(ExtRequest::SetX {
            key: Bytes::copy_from_slice(key),
            value: Bytes::copy_from_slice(value),
            options,
        })?;
        written("SETX", &response)
    }

    /// Sets (or with `None` removes) `key`'s expiry. `Ok(None)`: the key does not exist.
    /// `ConditionFailed`: PERSIST of a key without an expiry.
    pub fn expire(
        &mut self,
        key: &[u8],
        expiry: Option<Expiry>,
    ) -> Result<Option<Written>, ClientError> {
        self.expire_if(key, expiry, ExpireFlags::default())
    }

    /// `expire` only if `condition` holds (Redis 7's NX, XX, GT, LT; a key without an expiry
    /// counts as expiring never): `ConditionFailed` with the key's seq if it does not.
    pub fn expire_if(
        &mut self,
        key: &[u8],
        expiry: Option<Expiry>,
        condition: ExpireFlags,
    ) -> Result<Option<Written>, ClientError> {
        let response = self.call_ext(ExtRequest::Expire {
            key: Bytes::copy_from_slice(key),
            expiry,
            condition,
        })?;
        match response.status {
            Status::NotFound => Ok(None),
            _ => written("EXPIRE", &response).map(Some),
        }
    }

    /// The key's seq and expiry, `None` if it does not exist.
    pub fn meta(&mut self, key: &[u8]) -> Result<Option<KeyMeta>, ClientError> {
        let response = self.call_ext(ExtRequest::Meta {
            key: Bytes::copy_from_slice(key),
        })?;
        match response.status {
            Status::NotFound => Ok(None),
            Status::Ok if response.body.len() == 24 => {
                let at =
                    |i: usize| u64::from_le_bytes(response.body[i..i + 8].try_into().expect("8"));
                Ok(Some(KeyMeta {
                    seq: at(0),
                    expires_at_ms: at(8),
                    now_ms: at(16),
                }))
            }
            Status::Ok => Err(malformed("META", "the body is not 24 bytes")),
            _ => Err(refusal("META", &response)),
        }
    }

    /// Adds `delta` to the integer at `key` (0 if absent); returns the new value and the seq.
    pub fn incr_by(&mut self, key: &[u8], delta: i64) -> Result<(i64, u64), ClientError> {
        let response = self.call_ext(ExtRequest::IncrBy {
            key: Bytes::copy_from_slice(key),
            delta,
        })?;
        match response.status {
            Status::Ok if response.body.len() == 16 => Ok((
                i64::from_le_bytes(response.body[..8].try_into().expect("8")),
                u64::from_le_bytes(response.body[8..].try_into().expect("8")),
            )),
            Status::Ok => Err(malformed("INCRBY", "the body is not 16 bytes")),
            _ => Err(refusal("INCRBY", &response)),
        }
    }

    /// The values of `keys`, in order; `None` for a key that does not exist.
    pub fn mget(&mut self, keys: &[&[u8]]) -> Result<Vec<Option<Bytes>>, ClientError> {
        let response = self.call_ext(ExtRequest::MGet {
            keys: keys.iter().map(|key| Bytes::copy_from_slice(key)).collect(),
        })?;
        if response.status != Status::Ok {
            return Err(refusal("MGET", &response));
        }
        decode_values(&response.body)
            .filter(|values| values.len() == keys.len())
            .ok_or_else(|| malformed("MGET", "the values do not add up to the body"))
    }

    /// Stores every pair in one write (all or none); returns its seq.
    pub fn mset(&mut self, pairs: &[(&[u8], &[u8])]) -> Result<u64, ClientError> {
        let response = self.call_ext(ExtRequest::MSet {
            pairs: pairs
                .iter()
                .map(|(key, value)| (Bytes::copy_from_slice(key), Bytes::copy_from_slice(value)))
                .collect(),
        })?;
        match response.status {
            Status::Ok => seq_of("MSET", &response),
            _ => Err(refusal("MSET", &response)),
        }
    }

    /// Runs a transaction.
    pub fn txn(&mut self, txn: Txn) -> Result<TxnOutcome, ClientError> {
        let response = self.call_ext(ExtRequest::Txn(txn))?;
        match response.status {
            Status::Ok if response.body.len() == 9 => Ok(TxnOutcome {
                succeeded: response.body[0] == 1,
                seq: u64::from_le_bytes(response.body[1..9].try_into().expect("8")),
            }),
            Status::Ok => Err(malformed("TXN", "the body is not 9 bytes")),
            _ => Err(refusal("TXN", &response)),
        }
    }

    /// Gives this connection over to a WATCH of `key` (or every key starting with it, with
    /// `prefix`) from `from_seq` (0: from now on).
    pub fn watch(mut self, key: &[u8], prefix: bool, from_seq: u64) -> Result<Watch, ClientError> {
        self.set_read_timeout(None)?;
        let id = self.send(&Request::Ext(ExtRequest::Watch {
            key: Bytes::copy_from_slice(key),
            prefix,
            from_seq,
        }))?;
        self.flush()?;
        Ok(Watch { client: self, id })
    }
}

/// An MGET body: `count` u32, then per key `present` u8 and, if 1, `vlen` u32 and the value.
pub fn decode_values(body: &Bytes) -> Option<Vec<Option<Bytes>>> {
    let count = u32::from_le_bytes(body.get(..4)?.try_into().ok()?) as usize;
    let mut values = Vec::with_capacity(count.min(body.len()));
    let mut at = 4;
    for _ in 0..count {
        match *body.get(at)? {
            0 => {
                values.push(None);
                at += 1;
            }
            1 => {
                let len = u32::from_le_bytes(body.get(at + 1..at + 5)?.try_into().ok()?) as usize;
                let start = at + 5;
                let end = start.checked_add(len).filter(|end| *end <= body.len())?;
                values.push(Some(body.slice(start..end)));
                at = end;
            }
            _ => return None,
        }
    }
    (at == body.len()).then_some(values)
}
