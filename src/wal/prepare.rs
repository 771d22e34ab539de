//! When to write the next piece of the segment being prepared: a pure pacing rule, no I/O.
//!
//! The next segment is zero-filled ahead of use (so the log's appends overwrite allocated,
//! written blocks and its fdatasync needs no journal commit). Written back to back, those
//! 64 MiB and the one fdatasync after them took the disk and the loop's core away from the
//! log's own flushes for a fraction of a second every segment. So `LogFile::prepare_segments`
//! writes the zeros in small pieces, each made durable soon after it is written, and spreads
//! them over the time the log takes to fill the active segment: this pace says how many bytes
//! may be written by now.

use std::time::Duration;

use crate::limits::{PREPARE_BYTES_PER_SEC_MIN, PREPARE_DONE_AT_FRACTION};

/// The pace of one segment's preparation, from where the log stood when it began.
#[derive(Debug, Clone, Copy)]
pub struct Pace {
    /// Bytes to write: the whole next segment.
    segment_bytes: u64,
    /// Bytes the log could still append to the active segment when preparation began.
    log_room_bytes: u64,
    /// The active segment was not zero-filled: its every fdatasync commits the journal, so
    /// the next one is wanted as soon as it can be had, unpaced.
    urgent: bool,
}

impl Pace {
    pub fn new(segment_bytes: u64, log_room_bytes: u64, urgent: bool) -> Pace {
        Pace {
            segment_bytes,
            log_room_bytes,
            urgent,
        }
    }

    /// Bytes of the next segment that may be written once `elapsed` has passed and the log has
    /// appended `appended_bytes` since preparation began: the share of the segment that keeps
    /// step with the log, so that it is done when the active segment is
    /// `PREPARE_DONE_AT_FRACTION` full, plus a slow floor rate so that it finishes while the log
    /// is idle too.
    pub fn allowed_bytes(&self, elapsed: Duration, appended_bytes: u64) -> u64 {
        if self.urgent {
            return self.segment_bytes;
        }
        let by_time = (PREPARE_BYTES_PER_SEC_MIN as f64 * elapsed.as_secs_f64()) as u64;
        let goal = self.log_room_bytes as f64 * PREPARE_DONE_AT_FRACTION;
        let by_log = if goal < 1.0 {
            self.segment_bytes
        } else {
            (self.segment_bytes as f64 * (appended_bytes as f64 / goal)) as u64
        };
        by_time.saturating_add(by_log).min(self.segment_bytes)
    }

    /// How long until `want_bytes` are allowed if the log appends nothing meanwhile (zero when
    /// they already are).
    pub fn wait(&self, elapsed: Duration, appended_bytes: u64, want_bytes: u64) -> Duration {
        let allowed = self.allowed_bytes(elapsed, appended_bytes);
        if want_bytes <= allowed {
            return Duration::ZERO;
        }
        Duration::from_secs_f64((want_bytes - allowed) as f64 / PREPARE_BYTES_PER_SEC_MIN as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1024 * 1024;

    #[test]
    fn keeps_step_with_the_log_and_is_done_before_the_active_segment_fills() {
        let pace = Pace::new(64 * MIB, 64 * MIB, false);
        let now = Duration::ZERO;
        assert_eq!(pace.allowed_bytes(now, 0), 0);
        // Done once the log has filled the given fraction of its room, whatever the time.
        let goal = (64.0 * MIB as f64 * PREPARE_DONE_AT_FRACTION) as u64 + 1;
        assert_eq!(pace.allowed_bytes(now, goal), 64 * MIB);
        assert_eq!(pace.allowed_bytes(now, 64 * MIB), 64 * MIB);
        // Half-way through that, half the segment.
        let half = pace.allowed_bytes(now, goal / 2);
        assert!(half.abs_diff(32 * MIB) < MIB, "{half}");
        // A quarter of the room left in the active segment (a restart found it part full):
        // four times the pace.
        let late = Pace::new(64 * MIB, 16 * MIB, false);
        let (fast, slow) = (late.allowed_bytes(now, MIB), pace.allowed_bytes(now, MIB));
        assert!(fast.abs_diff(4 * slow) < 8, "{fast} vs 4 x {slow}");
    }

    #[test]
    fn an_idle_log_still_gets_its_next_segment_at_the_floor_rate() {
        let pace = Pace::new(64 * MIB, 64 * MIB, false);
        let second = Duration::from_secs(1);
        assert_eq!(pace.allowed_bytes(second, 0), PREPARE_BYTES_PER_SEC_MIN);
        let all = Duration::from_secs_f64(64.0 * MIB as f64 / PREPARE_BYTES_PER_SEC_MIN as f64);
        assert_eq!(pace.allowed_bytes(all + second, 0), 64 * MIB);
        // The wait for one more chunk is what the floor rate needs to allow it.
        let wait = pace.wait(second, 0, PREPARE_BYTES_PER_SEC_MIN + MIB);
        let expected = MIB as f64 / PREPARE_BYTES_PER_SEC_MIN as f64;
        assert!((wait.as_secs_f64() - expected).abs() < 1e-6, "{wait:?}");
        assert_eq!(pace.wait(second, 0, MIB), Duration::ZERO);
    }

    #[test]
    fn a_segment_without_zero_fill_wants_the_next_one_at_once() {
        let pace = Pace::new(64 * MIB, 64 * MIB, true);
        assert_eq!(pace.allowed_bytes(Duration::ZERO, 0), 64 * MIB);
        // A full active segment (no room) leaves nothing to keep step with.
        let full = Pace::new(64 * MIB, 0, false);
        assert_eq!(full.allowed_bytes(Duration::ZERO, 0), 64 * MIB);
    }
}
