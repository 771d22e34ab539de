//! Pinning the loop to one CPU (thread-per-core: one loop per core, sharing nothing).

/// Pins the calling thread to `core`, or says why not (naming the CPUs that can be used).
pub fn pin_to(core: usize) -> Result<(), String> {
    // SAFETY: cpu_set_t is plain bytes; the calls get its exact size.
    unsafe {
        let mut allowed: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut allowed) != 0 {
            return Err(std::io::Error::last_os_error().to_string());
        }
        let usable: Vec<usize> = (0..libc::CPU_SETSIZE as usize)
            .filter(|cpu| libc::CPU_ISSET(*cpu, &allowed))
            .collect();
        if !usable.contains(&core) {
            return Err(format!(
                "no such CPU available to kvsd (usable: {})",
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
