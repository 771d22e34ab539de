//! cargo-fuzz target: `checks::frame` on every input (the properties are in `fuzz/checks.rs`,
//! shared with `tests/fuzz_regression.rs`, which replays the kept corpus on stable).
#![no_main]

#[path = "../checks.rs"]
#[allow(dead_code)] // each target uses one check of the shared file
mod checks;

#[global_allocator]
static ALLOCATOR: checks::CountingAlloc = checks::CountingAlloc;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::frame(data));
