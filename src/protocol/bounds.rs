//! What a request may hold: the server's limits on keys and values, checked while decoding
//! so that no later layer sees an oversized key, and the error that refuses a bad request.
//! Both decoders (`request` for the v1 ops, `ext` for the later ones) use them.

/// What the server accepts; checked while decoding so no later layer sees an oversized key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestLimits {
    pub key_bytes_max: u32,
    pub value_bytes_max: u32,
}

/// A readable frame with a bad request: answered ERROR with the request's id, and the
/// connection stays open.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("unknown op 0x{op:02x}")]
    UnknownOp { op: u8 },
    #[error("unknown flag bits 0x{flags:02x} for {name}")]
    UnknownFlags { name: &'static str, flags: u8 },
    #[error("{name} body is {len} bytes, too short: {need}")]
    BodyTooShort {
        name: &'static str,
        len: usize,
        need: &'static str,
    },
    #[error("the key is empty: keys are 1 to {max} bytes")]
    KeyEmpty { max: u32 },
    #[error("the key is {len} bytes, over this server's limit of {max} (--max-key-bytes)")]
    KeyTooLong { len: usize, max: u32 },
    #[error("the value is {len} bytes, over this server's limit of {max} (--max-value-bytes)")]
    ValueTooLong { len: usize, max: u32 },
    #[error("{name} takes an empty body, got {len} bytes")]
    BodyNotEmpty { name: &'static str, len: usize },
    #[error("{0}")]
    Invalid(String),
}

/// A key of 1 to `key_bytes_max` bytes.
pub fn check_key(key: &[u8], limits: RequestLimits) -> Result<(), RequestError> {
    if key.is_empty() {
        return Err(RequestError::KeyEmpty {
            max: limits.key_bytes_max,
        });
    }
    if key.len() > limits.key_bytes_max as usize {
        return Err(RequestError::KeyTooLong {
            len: key.len(),
            max: limits.key_bytes_max,
        });
    }
    Ok(())
}

/// A value of at most `value_bytes_max` bytes.
pub fn check_value(value: &[u8], limits: RequestLimits) -> Result<(), RequestError> {
    if value.len() > limits.value_bytes_max as usize {
        return Err(RequestError::ValueTooLong {
            len: value.len(),
            max: limits.value_bytes_max,
        });
    }
    Ok(())
}
