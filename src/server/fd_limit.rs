//! The open-file limit: one descriptor per connection and per log segment, plus a few.

use crate::limits::FILE_DESCRIPTORS_RESERVED;

/// Makes sure kvsd may open `needed` file descriptors: raises the soft RLIMIT_NOFILE to the
/// hard limit if the soft one is lower, or says what to do if even the hard limit is.
/// Returns the soft limit in force.
pub fn ensure(connections_max: u32, segments: usize) -> Result<u64, String> {
    let needed = u64::from(connections_max) + segments as u64 + FILE_DESCRIPTORS_RESERVED;
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit, which `limit` is.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(format!(
            "cannot read the open-file limit: {}",
            std::io::Error::last_os_error()
        ));
    }
    let (soft, hard) = (limit.rlim_cur, limit.rlim_max);
    if soft >= needed {
        return Ok(soft);
    }
    if hard < needed {
        return Err(format!(
            "--max-connections {connections_max} needs {needed} open files ({connections_max} connections + {segments} log segments + {FILE_DESCRIPTORS_RESERVED} spare), but the hard limit is {hard}: raise it (ulimit -Hn, or LimitNOFILE= in a systemd unit) or lower --max-connections"
        ));
    }
    // The hard limit, for room as the log grows; an unlimited hard limit may still be above
    // what the kernel allows (fs.nr_open), so then just what is needed.
    limit.rlim_cur = limit.rlim_max;
    // SAFETY: setrlimit reads one rlimit.
    let mut raised = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } == 0;
    if !raised {
        limit.rlim_cur = needed;
        // SAFETY: as above.
        raised = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } == 0;
    }
    if !raised {
        return Err(format!(
            "--max-connections {connections_max} needs {needed} open files; raising the limit from {soft} to {hard} failed: {}",
            std::io::Error::last_os_error()
        ));
    }
    let now = limit.rlim_cur;
    tracing::info!(from = soft, to = now, needed, "raised the open-file limit");
    Ok(now)
}
