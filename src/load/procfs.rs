//! What `/proc` says about a process: CPU time, resident memory, limits. Linux only; every
//! reader returns `None` where the file is missing or unreadable.

use std::sync::OnceLock;

/// CPU time (user + system) of a process, in clock ticks: fields 14 and 15 of
/// `/proc/PID/stat`.
pub(crate) fn process_cpu_ticks(pid: u32) -> Option<u64> {
    cpu_ticks(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// CPU time of the calling thread, in clock ticks (`/proc/thread-self/stat`): a driver thread
/// counts its own work, not that of a server running in the same process (as in tests).
pub(crate) fn thread_cpu_ticks() -> Option<u64> {
    cpu_ticks(&std::fs::read_to_string("/proc/thread-self/stat").ok()?)
}

/// utime + stime from a `stat` line. The command name (field 2) is in parentheses and may hold
/// spaces or parentheses itself, so fields are counted after the last `)`.
fn cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace();
    // After the name: state (3), ppid (4) ... utime (14), stime (15).
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// Nanoseconds the threads of a process spent runnable but waiting for a CPU (the second
/// field of each `/proc/PID/task/TID/schedstat`): how contended its CPUs were.
pub(crate) fn process_cpu_wait_ns(pid: u32) -> Option<u64> {
    let mut total = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let path = task.ok()?.path().join("schedstat");
        total += std::fs::read_to_string(path).ok().and_then(|s| cpu_wait(&s)).unwrap_or(0);
    }
    Some(total)
}

/// Nanoseconds the calling thread spent runnable but waiting for a CPU.
pub(crate) fn thread_cpu_wait_ns() -> Option<u64> {
    cpu_wait(&std::fs::read_to_string("/proc/thread-self/schedstat").ok()?)
}

/// The run-queue wait of a `schedstat` line: `<on-cpu ns> <waiting ns> <timeslices>`.
fn cpu_wait(schedstat: &str) -> Option<u64> {
    schedstat.split_ascii_whitespace().nth(1)?.parse().ok()
}

/// Clock ticks per second (`getconf CLK_TCK`, asked once; 100 if that fails, as on Linux).
pub(crate) fn ticks_per_second() -> u64 {
    static TICKS: OnceLock<u64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|out| String::from_utf8(out.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .filter(|&t| t > 0)
            .unwrap_or(100)
    })
}

/// Resident memory of a process in KiB (`VmRSS` in `/proc/PID/status`).
pub(crate) fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:")?.trim().strip_suffix("kB")?.trim().parse().ok())
}

/// How many ports the kernel's ephemeral range has (`ip_local_port_range`).
pub(crate) fn ephemeral_ports() -> Option<usize> {
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    let mut parts = range.split_ascii_whitespace().map(|p| p.parse::<usize>().ok());
    let (low, high) = (parts.next()??, parts.next()??);
    high.checked_sub(low).map(|d| d + 1)
}

/// The soft limit on open files of this process (`Max open files` in `/proc/self/limits`).
pub(crate) fn open_file_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..].split_ascii_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_lines() {
        let line = "1234 (a (weird) name) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 1 0 100 0 0";
        assert_eq!(cpu_ticks(line), Some(300));
        assert_eq!(cpu_ticks("garbage"), None);
        assert_eq!(cpu_wait("123 456 7\n"), Some(456));
    }

    #[test]
    fn reads_this_process() {
        if std::path::Path::new("/proc/self/stat").exists() {
            assert!(process_cpu_ticks(std::process::id()).is_some());
            assert!(thread_cpu_ticks().is_some());
            if std::path::Path::new("/proc/thread-self/schedstat").exists() {
                assert!(thread_cpu_wait_ns().is_some());
                assert!(process_cpu_wait_ns(std::process::id()).is_some());
            }
            assert!(rss_kib(std::process::id()).unwrap() > 0);
            assert!(ticks_per_second() > 0);
        }
    }
}
