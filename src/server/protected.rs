//! Protected mode: kvsd does not listen beyond this machine without a secret.
//!
//! Redis, left open on the internet without a password, was found and abused by the
//! thousands; its answer (protected mode) serves only loopback clients then and tells the others
//! what to change. kvsd's `--bind` is always explicit, so a non-loopback address without
//! `--auth-file` is a mistake made at the command line: kvsd refuses to start there, saying what
//! to do, unless the operator passes `--unprotected-bind` to say the network is trusted. Refusing
//! at start puts the message in front of the operator who can fix it, rather than in front of
//! clients, and a kvsd that starts serves every client it can reach the same way.
//!
//! Every listener that serves the data calls `check` with its address before it binds: the
//! native port (clients and followers' replication streams, which arrive on it), and any other
//! protocol's port. The metrics port serves no keys or values and is not checked.

use std::net::IpAddr;

use super::{Config, ServerError};

/// The flag that lets a listener bind beyond loopback without a secret.
pub const UNPROTECTED_FLAG: &str = "--unprotected-bind";

/// Refuses a listener on `ip` (set by `flag`, e.g. "--bind") that anyone on the network could
/// reach without a secret, unless `--unprotected-bind` was given.
pub fn check(flag: &str, ip: IpAddr, config: &Config) -> Result<(), ServerError> {
    allowed(flag, ip, config.auth.is_some(), config.unprotected_bind).map_err(ServerError::Config)
}

fn allowed(flag: &str, ip: IpAddr, secret: bool, unprotected: bool) -> Result<(), String> {
    if secret || unprotected || ip.to_canonical().is_loopback() {
        return Ok(());
    }
    Err(format!(
        "refusing to listen on {ip} ({flag}) without a secret: anyone who can reach this machine \
         could read, change and delete every key (protected mode). Do one of these: \
         1) give clients a secret with --auth-file PATH (e.g. `head -c 32 /dev/urandom | base64 > secret; chmod 600 secret`), \
         the same file for followers and kvsctl; \
         2) listen on loopback only ({flag} 127.0.0.1) and reach kvsd through a tunnel; \
         3) if every machine that can reach {ip} is trusted, start with {UNPROTECTED_FLAG} to accept the risk"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_always_allowed() {
        for ip in ["127.0.0.1", "127.0.0.2", "::1", "::ffff:127.0.0.1"] {
            allowed("--bind", ip.parse().unwrap(), false, false).unwrap();
        }
    }

    #[test]
    fn a_wider_bind_needs_a_secret_or_the_flag() {
        for ip in ["0.0.0.0", "::", "10.1.2.3", "192.168.0.1"] {
            let ip: IpAddr = ip.parse().unwrap();
            let error = allowed("--bind", ip, false, false).unwrap_err();
            for what in ["--auth-file", UNPROTECTED_FLAG, "127.0.0.1", "--bind"] {
                assert!(error.contains(what), "{what} not in: {error}");
            }
            allowed("--bind", ip, true, false).unwrap();
            allowed("--bind", ip, false, true).unwrap();
        }
    }
}
