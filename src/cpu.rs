//! Pinning a thread to one CPU: kvsd's event loop (`--core`) and kvs-bench's load threads.
//!
//! kvsd runs one event loop on one thread; `--core` keeps it on one CPU so its caches stay warm
//! and a benchmark's load can be kept off that CPU. Per-core shards (one loop per core, keys
//! hashed to shards) are planned, not built.

/// Pins the calling thread to `core`, or says why not (naming the CPUs that can be used); the
/// caller's message names the core and what was being pinned.
pub fn pin_to(core: usize) -> Result<(), String> {
    // SAFETY: cpu_set_t is plain bytes; the calls get its exact size, and CPU_SET is only
    // reached for a CPU that CPU_ISSET found in the allowed set (so below CPU_SETSIZE).
    unsafe {
        let mut allowed: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut allowed) != 0 {
            return Err(format!(
                "cannot read the allowed CPUs: {}",
                std::io::Error::last_os_error()
            ));
        }
        let usable: Vec<usize> = (0..libc::CPU_SETSIZE as usize)
            .filter(|cpu| libc::CPU_ISSET(*cpu, &allowed))
            .collect();
        if !usable.contains(&core) {
            return Err(format!(
                "not a CPU this process may use (usable: {})",
                usable
                    .iter()
                    .map(|cpu| cpu.to_string())
                    .collect::<Vec<_>>()
                    .join(",")
            ));
        }
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(core, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(std::io::Error::last_os_error().to_string());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cpu_outside_the_allowed_set_is_refused_naming_the_usable_ones() {
        let error = pin_to(100_000).unwrap_err();
        assert!(
            error.contains("not a CPU") && error.contains("usable: "),
            "{error}"
        );
    }

    #[test]
    fn pinning_to_an_allowed_cpu_works() {
        // Pin a thread of its own, so the test runner's threads keep their affinity.
        std::thread::spawn(|| {
            // SAFETY: as in pin_to: plain bytes of the exact size.
            let first = unsafe {
                let mut allowed: libc::cpu_set_t = std::mem::zeroed();
                libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut allowed);
                (0..libc::CPU_SETSIZE as usize)
                    .find(|cpu| libc::CPU_ISSET(*cpu, &allowed))
                    .expect("some CPU is allowed")
            };
            pin_to(first).unwrap();
        })
        .join()
        .unwrap();
    }
}
