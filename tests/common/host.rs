//! Running the host's own tools (mount, losetup, e2fsck, sysctl...) for the disk drills.

use std::io::Write;
use std::process::{Command, Stdio};

/// Runs `program` with `args`; its stdout, or an error naming the command, its status and
/// what it printed.
pub fn run(program: &str, args: &[&str]) -> Result<String, String> {
    let output = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{program}: {e}"))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(format!(
            "{program} {} ({}): {}{}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

/// `run`, or panic with its error.
#[track_caller]
pub fn must(program: &str, args: &[&str]) -> String {
    run(program, args).unwrap_or_else(|e| panic!("{e}"))
}

/// ext4 on `target` (an image file or a device), 4 KiB blocks, its inode tables and journal
/// written out now (lazy init off), so that later writes are only the data a test makes.
pub fn mkfs_ext4(target: &str) {
    must(
        "mkfs.ext4",
        &[
            "-q",
            "-F",
            "-b",
            "4096",
            "-E",
            "lazy_itable_init=0,lazy_journal_init=0",
            target,
        ],
    );
}

/// Says why a drill is skipped, loudly (straight to stderr: the harness captures `eprintln!`,
/// and a skip must show in a plain `cargo test` run); fails instead under
/// `KVS_REQUIRE_DISK_FAULTS=1`.
pub fn skip(test: &str, why: &str) {
    let message = format!("SKIPPED {test}: {why}");
    if std::env::var_os("KVS_REQUIRE_DISK_FAULTS").is_some_and(|v| v == "1") {
        panic!("{message} (KVS_REQUIRE_DISK_FAULTS=1)");
    }
    let _ = writeln!(std::io::stderr(), "{message}");
}
