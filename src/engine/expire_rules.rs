//! EXPIRE's conditions, Redis 7's NX, XX, GT and LT: whether a new expiry may replace the
//! key's current one. A key without an expiry counts as expiring never (later than any time),
//! as in Redis: GT never holds for it, LT always does.

use super::write::ExpireOutcome;
use super::{Engine, WriteFailed};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ExpireCondition {
    #[default]
    Always,
    /// NX: the key has no expiry.
    NoExpiry,
    /// XX: the key has an expiry.
    HasExpiry,
    /// GT (with or without XX): the key has an expiry, earlier than the new one.
    Later,
    /// LT: the key has no expiry, or a later one than the new one.
    Earlier,
    /// XX and LT: the key has an expiry, later than the new one.
    EarlierWithExpiry,
}

/// Redis's errors for options that exclude each other (without its `ERR ` prefix).
pub const NX_WITH_OTHERS: &str = "NX and XX, GT or LT options at the same time are not compatible";
pub const GT_WITH_LT: &str = "GT and LT options at the same time are not compatible";

impl ExpireCondition {
    /// The condition that NX, XX, GT and LT given together make, or Redis's error. XX with GT
    /// is GT (a key without an expiry already fails GT); XX with LT needs an expiry.
    pub fn from_flags(nx: bool, xx: bool, gt: bool, lt: bool) -> Result<Self, &'static str> {
        if nx && (xx || gt || lt) {
            return Err(NX_WITH_OTHERS);
        }
        if gt && lt {
            return Err(GT_WITH_LT);
        }
        Ok(match (nx, xx, gt, lt) {
            (true, ..) => ExpireCondition::NoExpiry,
            (_, _, true, _) => ExpireCondition::Later,
            (_, true, _, true) => ExpireCondition::EarlierWithExpiry,
            (_, _, _, true) => ExpireCondition::Earlier,
            (_, true, ..) => ExpireCondition::HasExpiry,
            _ => ExpireCondition::Always,
        })
    }

    /// Whether an expiry at `new_ms` (unix ms; may be past or negative, as a client gave it)
    /// may replace `current_ms` (0: none).
    pub fn holds(self, current_ms: u64, new_ms: i64) -> bool {
        let has = current_ms != 0;
        let current = i64::try_from(current_ms).unwrap_or(i64::MAX);
        match self {
            ExpireCondition::Always => true,
            ExpireCondition::NoExpiry => !has,
            ExpireCondition::HasExpiry => has,
            ExpireCondition::Later => has && new_ms > current,
            ExpireCondition::Earlier => !has || new_ms < current,
            ExpireCondition::EarlierWithExpiry => has && new_ms < current,
        }
    }
}

impl Engine {
    /// `expire_at` if `condition` holds for the key's current expiry; `Unchanged` if not.
    pub fn expire_if(
        &mut self,
        key: &[u8],
        expires_at_ms: u64,
        condition: ExpireCondition,
    ) -> Result<ExpireOutcome, WriteFailed> {
        self.check_writable()?;
        let current = self.current(key);
        if !current.exists() {
            return Ok(ExpireOutcome::NotFound {
                after_seq: current.after_seq(),
            });
        }
        let new_ms = i64::try_from(expires_at_ms).unwrap_or(i64::MAX);
        if !condition.holds(current.expires_at_ms(), new_ms) {
            return Ok(ExpireOutcome::Unchanged {
                current_seq: current.seq(),
                after_seq: current.after_seq(),
            });
        }
        self.expire_at(key, expires_at_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn conditions_as_redis_7_judges_them() {
        use ExpireCondition::*;
        // (condition, current, new, holds)
        let cases = [
            (Always, 0, 5, true),
            (NoExpiry, 0, 5, true),
            (NoExpiry, 9, 5, false),
            (HasExpiry, 0, 5, false),
            (HasExpiry, 9, 5, true),
            (Later, 0, 5, false),
            (Later, 9, 5, false),
            (Later, 9, 9, false),
            (Later, 9, 10, true),
            (Earlier, 0, 5, true),
            (Earlier, 0, -5, true),
            (Earlier, 9, 9, false),
            (Earlier, 9, 8, true),
            (EarlierWithExpiry, 0, 5, false),
            (EarlierWithExpiry, 9, 8, true),
        ];
        for (condition, current, new, holds) in cases {
            assert_eq!(
                condition.holds(current, new),
                holds,
                "{condition:?} {current} {new}"
            );
        }
    }

    #[test]
    fn expire_if_writes_only_when_the_condition_holds() {
        let mut engine = Engine::new(0);
        engine.tick(1_000);
        assert!(matches!(
            engine.expire_if(b"k", 5_000, ExpireCondition::Always),
            Ok(ExpireOutcome::NotFound { .. })
        ));
        engine.set(b"k", Bytes::from_static(b"v")).unwrap();
        assert!(matches!(
            engine.expire_if(b"k", 5_000, ExpireCondition::HasExpiry),
            Ok(ExpireOutcome::Unchanged { current_seq: 1, .. })
        ));
        assert!(matches!(
            engine.expire_if(b"k", 5_000, ExpireCondition::NoExpiry),
            Ok(ExpireOutcome::Written { seq: 2 })
        ));
        assert!(matches!(
            engine.expire_if(b"k", 4_000, ExpireCondition::Later),
            Ok(ExpireOutcome::Unchanged { current_seq: 2, .. })
        ));
        assert!(matches!(
            engine.expire_if(b"k", 6_000, ExpireCondition::Later),
            Ok(ExpireOutcome::Written { seq: 3 })
        ));
        assert_eq!(engine.current(b"k").expires_at_ms(), 6_000);
    }
}
