//! How many chat calls may be in flight at once when `[server]
//! max_calls_in_flight` is not set: the container's memory limit (its
//! cgroup's) over what one call may hold, so that calls beyond what the
//! pod can hold are refused at once instead of the kernel ending the pod.

use std::path::Path;

/// What one call may hold at most while its caller reads slowly or not at
/// all, in bytes; ARCHITECTURE.md ("Memory per call") says what it is made
/// of. `tests/memory_bounds.rs` holds the sidecar to it.
pub const PER_CALL_BOUND_BYTES: u64 = 640 * 1024;

/// What the process holds with no call in flight (runtime, ledger,
/// telemetry, allocator), kept out of the room for calls. Idle RSS is
/// about 15 MiB; the rest is headroom.
pub const BASELINE_BYTES: u64 = 32 * 1024 * 1024;

/// The cap when there is no memory limit.
pub const UNLIMITED_CALLS: usize = 1000;

/// The least cap a tiny limit gives, so a pod can still serve.
const LEAST_CALLS: usize = 16;

/// cgroup v2's limit, then cgroup v1's.
const LIMIT_FILES: [&str; 2] = [
    "/sys/fs/cgroup/memory.max",
    "/sys/fs/cgroup/memory/memory.limit_in_bytes",
];

/// Larger "limits" mean none: cgroup v1 writes its page counter's maximum
/// (about 2^63) rather than "max", and no machine has 2^50 bytes.
const NO_LIMIT_ABOVE: u64 = 1 << 50;

/// The memory limit of this process's cgroup in bytes, or `None` when
/// there is none (the files are absent, say "max", or hold a sentinel).
pub fn cgroup_memory_limit() -> Option<u64> {
    LIMIT_FILES
        .iter()
        .find_map(|file| std::fs::read_to_string(Path::new(file)).ok())
        .and_then(|text| parse_limit(&text))
}

/// One limit file's text as a limit in bytes.
pub fn parse_limit(text: &str) -> Option<u64> {
    let text = text.trim();
    if text == "max" {
        return None;
    }
    text.parse::<u64>()
        .ok()
        .filter(|bytes| *bytes < NO_LIMIT_ABOVE)
}

/// The default cap on calls in flight for a memory `limit` in bytes.
pub fn default_calls_in_flight(limit: Option<u64>) -> usize {
    match limit {
        None => UNLIMITED_CALLS,
        Some(bytes) => {
            let room = bytes.saturating_sub(BASELINE_BYTES) / PER_CALL_BOUND_BYTES;
            usize::try_from(room).unwrap_or(usize::MAX).max(LEAST_CALLS)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1024 * 1024;

    #[test]
    fn limit_files_are_read_as_cgroups_write_them() {
        assert_eq!(parse_limit("134217728\n"), Some(128 * MIB));
        assert_eq!(parse_limit("max\n"), None);
        // cgroup v1's "unlimited", and v2's on some kernels.
        assert_eq!(parse_limit("9223372036854771712\n"), None);
        assert_eq!(parse_limit(""), None);
        assert_eq!(parse_limit("lots"), None);
    }

    #[test]
    fn the_cap_is_the_room_over_the_per_call_bound() {
        assert_eq!(default_calls_in_flight(None), UNLIMITED_CALLS);
        // 128 MiB: 96 MiB of room, 640 KiB a call.
        assert_eq!(default_calls_in_flight(Some(128 * MIB)), 153);
        assert_eq!(default_calls_in_flight(Some(1024 * MIB)), 1587);
        assert_eq!(default_calls_in_flight(Some(16 * MIB)), LEAST_CALLS);
    }
}
