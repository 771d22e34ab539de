//! A linearizability checker for histories of SET/GET/DEL on single keys: the Wing–Gong search
//! with Lowe's memoisation (the "just-in-time linearisation" of Lowe, "Testing for
//! linearizability", 2017; the algorithm of Porcupine and Knossos' `wgl`).
//!
//! Each key is a register whose state is absent or one value (values are unique per SET, so a
//! read names the write it saw). Linearizability is local, so a history is checked one key at a
//! time. An operation is an interval from its invocation to its reply; it must appear to take
//! effect at one instant inside it. An operation whose reply never came (the connection was cut
//! by a kill, or the server answered ERROR to a write) is *indeterminate*: it may have taken
//! effect at any instant after its invocation, or never, so its interval runs to infinity.
//! Placing it after every other operation is the same as it never happening.

#![allow(dead_code)]

use std::collections::HashSet;
use std::fmt;
use std::time::Instant;

/// What one operation did, as the client saw it. Values are ids of the SETs that wrote them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// SET of the value with this id.
    Set(u32),
    /// GET that saw this value (`None`: NOT_FOUND).
    Get(Option<u32>),
    /// DEL: `Some(true)` OK, `Some(false)` NOT_FOUND, `None` reply unknown (indeterminate).
    Del(Option<bool>),
}

/// One operation on one key: invoked at `call`, answered at `ret` (`None`: never answered).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Operation {
    pub client: usize,
    pub op: Op,
    pub call: Instant,
    pub ret: Option<Instant>,
}

/// The register: `None` absent, else the id of the value it holds.
type State = Option<u32>;

/// The state after `op` if `op` can take effect in `state` with the reply it got.
fn step(state: State, op: Op) -> Option<State> {
    match op {
        Op::Set(value) => Some(Some(value)),
        Op::Get(seen) => (seen == state).then_some(state),
        Op::Del(None) => Some(None),
        Op::Del(Some(found)) => (found == state.is_some()).then_some(None),
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Linearizable,
    /// No order exists. `stuck` is the operation whose reply came before the search could place
    /// it, at the deepest point the search reached; `linearized` is how many it had placed.
    Violation {
        stuck: usize,
        linearized: usize,
    },
    /// The search gave up after `steps` steps: neither proved nor refuted (treat as a failure).
    TooHard {
        steps: u64,
    },
}

/// A bound on the search, so a pathological history fails loudly instead of running for ever.
pub const STEPS_MAX: u64 = 50_000_000;

/// An event of the history in time order: an operation's call or its return.
#[derive(Debug, Clone, Copy)]
struct Event {
    op: usize,
    is_call: bool,
}

/// Checks the operations of one key, starting from `initial` (absent for a new store).
pub fn check(operations: &[Operation], initial: Option<u32>) -> Verdict {
    // Indeterminate GETs change nothing and promise nothing: they are left out.
    let (index, ops): (Vec<usize>, Vec<&Operation>) = operations
        .iter()
        .enumerate()
        .filter(|(_, operation)| !(operation.ret.is_none() && matches!(operation.op, Op::Get(_))))
        .unzip();

    // Events sorted by time; an unanswered operation returns after everything. At equal times
    // calls go first, so two operations are ordered only if one returned strictly before the
    // other was called.
    let mut events: Vec<(Option<Instant>, bool, Event)> = Vec::with_capacity(2 * ops.len());
    for (op, operation) in ops.iter().enumerate() {
        events.push((Some(operation.call), false, Event { op, is_call: true }));
        events.push((operation.ret, true, Event { op, is_call: false }));
    }
    events.sort_by(|a, b| {
        let time = |t: &Option<Instant>| (t.is_none(), *t);
        time(&a.0).cmp(&time(&b.0)).then(a.1.cmp(&b.1))
    });
    let events: Vec<Event> = events.into_iter().map(|(_, _, event)| event).collect();

    // A doubly linked list over the events, with a head sentinel at index `n`; taking an
    // operation out (when it is linearised) unlinks its call and return, backtracking relinks.
    const NONE: usize = usize::MAX;
    let n = events.len();
    let head = n;
    let mut next: Vec<usize> = (0..=n)
        .map(|at| if at + 1 < n { at + 1 } else { NONE })
        .collect();
    let mut prev: Vec<usize> = (0..=n)
        .map(|at| if at == 0 { head } else { at - 1 })
        .collect();
    next[head] = if n == 0 { NONE } else { 0 };
    prev[head] = NONE;
    let mut call_at = vec![0; ops.len()];
    let mut ret_at = vec![0; ops.len()];
    for (at, event) in events.iter().enumerate() {
        if event.is_call {
            call_at[event.op] = at;
        } else {
            ret_at[event.op] = at;
        }
    }
    let unlink = |next: &mut Vec<usize>, prev: &mut Vec<usize>, at: usize| {
        let (p, q) = (prev[at], next[at]);
        next[p] = q;
        if q != NONE {
            prev[q] = p;
        }
    };
    let relink = |next: &mut Vec<usize>, prev: &mut Vec<usize>, at: usize| {
        let (p, q) = (prev[at], next[at]);
        next[p] = at;
        if q != NONE {
            prev[q] = at;
        }
    };

    let words = ops.len().div_ceil(64);
    let mut linearized = vec![0u64; words];
    let mut cache: HashSet<(Vec<u64>, State)> = HashSet::new();
    let mut stack: Vec<(usize, State)> = Vec::new(); // (op, state before it)
    let mut state = initial;
    let mut at = next[head];
    let mut steps = 0u64;
    let mut deepest = (0usize, NONE); // (ops linearised, op stuck there)
    loop {
        if next[head] == NONE {
            return Verdict::Linearizable;
        }
        steps += 1;
        if steps > STEPS_MAX {
            return Verdict::TooHard { steps };
        }
        let event = events[at];
        if event.is_call {
            let op = event.op;
            if let Some(after) = step(state, ops[op].op) {
                linearized[op / 64] |= 1 << (op % 64);
                if cache.insert((linearized.clone(), after)) {
                    stack.push((op, state));
                    state = after;
                    unlink(&mut next, &mut prev, call_at[op]);
                    unlink(&mut next, &mut prev, ret_at[op]);
                    at = next[head];
                    continue;
                }
                linearized[op / 64] &= !(1 << (op % 64));
            }
            at = next[at];
        } else {
            // The return of an operation not yet placed: everything placed so far cannot be
            // followed by it. Undo the last placement and try the next candidate after it.
            if deepest.1 == NONE || stack.len() > deepest.0 {
                deepest = (stack.len(), event.op);
            }
            let Some((op, before)) = stack.pop() else {
                return Verdict::Violation {
                    stuck: index[deepest.1],
                    linearized: deepest.0,
                };
            };
            state = before;
            linearized[op / 64] &= !(1 << (op % 64));
            relink(&mut next, &mut prev, ret_at[op]);
            relink(&mut next, &mut prev, call_at[op]);
            at = next[call_at[op]];
        }
    }
}

/// The operations of `history` that overlap `around` in time (with it), oldest call first: the
/// excerpt to print with a violation.
pub fn excerpt(history: &[Operation], around: usize, epoch: Instant) -> String {
    let stuck = history[around];
    let far = Instant::now() + std::time::Duration::from_secs(3600);
    let end = |operation: &Operation| operation.ret.unwrap_or(far);
    // Widen to everything overlapping the stuck operation or the ones just before it.
    let from = history
        .iter()
        .filter(|operation| end(operation) <= stuck.call)
        .map(|operation| operation.call)
        .max()
        .unwrap_or(stuck.call);
    let mut lines: Vec<&Operation> = history
        .iter()
        .filter(|operation| end(operation) >= from && operation.call <= end(&stuck))
        .collect();
    lines.sort_by_key(|operation| operation.call);
    let mut text = String::new();
    for operation in lines.iter().take(60) {
        let mark = if **operation == stuck {
            "  <-- stuck"
        } else {
            ""
        };
        text.push_str(&format!("  {}{mark}\n", Shown(operation, epoch)));
    }
    text
}

struct Shown<'a>(&'a Operation, Instant);

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Shown(operation, epoch) = self;
        let us = |t: Instant| t.duration_since(*epoch).as_micros();
        let ret = operation
            .ret
            .map_or("never".to_string(), |t| format!("{} us", us(t)));
        let op = match operation.op {
            Op::Set(value) => format!("SET v{value}"),
            Op::Get(Some(value)) => format!("GET -> v{value}"),
            Op::Get(None) => "GET -> not found".to_string(),
            Op::Del(Some(true)) => "DEL -> ok".to_string(),
            Op::Del(Some(false)) => "DEL -> not found".to_string(),
            Op::Del(None) => "DEL -> ?".to_string(),
        };
        write!(
            f,
            "client {:>2}  {:>10} us .. {:>12}  {op}",
            operation.client,
            us(operation.call),
            ret
        )
    }
}
