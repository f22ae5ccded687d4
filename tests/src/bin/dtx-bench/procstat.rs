//! CPU time and memory of a process, read from Linux's `/proc`.
//!
//! CPU time is `utime + stime` from `/proc/PID/stat` (all threads), taken
//! before and after a window; the peak resident set is `VmHWM` from
//! `/proc/PID/status`. Each coordinator runs as a process of its own for
//! one scenario, so its `VmHWM` is that scenario's peak.

use std::fs;

/// `/proc/PID/stat` counts in clock ticks of `USER_HZ`, which Linux fixes
/// at 100 for user space on every architecture (whatever the kernel's HZ).
const TICKS_PER_SECOND: f64 = 100.0;

/// The process' CPU time so far (user + system, all threads), in seconds.
/// `None` where `/proc` cannot be read (not Linux, or the process is gone).
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    read_cpu(&format!("/proc/{pid}/stat"))
}

/// The bench's own CPU time so far: the load generator and the no-op
/// participants, which share the machine with the coordinator.
pub fn own_cpu_seconds() -> Option<f64> {
    read_cpu("/proc/self/stat")
}

fn read_cpu(path: &str) -> Option<f64> {
    let stat = fs::read_to_string(path).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces;
    // fields are counted from the last `)`: state is field 3, utime 14,
    // stime 15.
    let after_name = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / TICKS_PER_SECOND)
}

/// Busy time of all CPUs of the machine so far, in seconds: the first
/// line of `/proc/stat` less its idle and iowait columns.
pub fn machine_busy_seconds() -> Option<f64> {
    let stat = fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let ticks: Vec<f64> = line
        .split_whitespace()
        .filter_map(|t| t.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal guest guest_nice;
    // guest time is already counted in user, and steal is time the
    // hypervisor gave to someone else, so count the first seven.
    let counted = ticks.get(..7)?;
    let busy: f64 = counted.iter().sum::<f64>() - counted[3] - counted[4];
    Some(busy / TICKS_PER_SECOND)
}

/// Context switches of all the process' threads so far (voluntary and
/// involuntary, from `/proc/PID/task/*/status`). A thread that has exited
/// is no longer counted, so take differences over windows in which the
/// threads live on (a coordinator's pools do).
pub fn context_switches(pid: u32) -> Option<f64> {
    let tasks = fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut total = 0.0;
    for task in tasks.filter_map(Result::ok) {
        let Ok(status) = fs::read_to_string(task.path().join("status")) else {
            continue;
        };
        for line in status.lines() {
            if let Some(rest) = line
                .strip_prefix("voluntary_ctxt_switches:")
                .or_else(|| line.strip_prefix("nonvoluntary_ctxt_switches:"))
            {
                total += rest.trim().parse::<f64>().unwrap_or(0.0);
            }
        }
    }
    Some(total)
}

/// Peak resident set size of the process, in MiB (`VmHWM`).
pub fn peak_rss_mib(pid: u32) -> Option<f64> {
    status_kib(pid, "VmHWM:").map(|kib| kib / 1024.0)
}

/// Current resident set size of the process, in MiB (`VmRSS`).
pub fn rss_mib(pid: u32) -> Option<f64> {
    status_kib(pid, "VmRSS:").map(|kib| kib / 1024.0)
}

fn status_kib(pid: u32, key: &str) -> Option<f64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|line| line.starts_with(key))?;
    // "VmHWM:	   12345 kB"
    line[key.len()..].split_whitespace().next()?.parse().ok()
}

/// CPU time so far of every process in a Docker container (the PostgreSQL
/// server: its backends come and go, so per-process figures would miss
/// some), in seconds, from the container's cgroup: `cpuacct.usage` under
/// cgroup v1, `cpu.stat`'s `usage_usec` under cgroup v2 (systemd or
/// cgroupfs driver). `None` if none of those files can be read.
pub fn container_cpu_seconds(container_id: &str) -> Option<f64> {
    let v1 = format!("/sys/fs/cgroup/cpuacct/docker/{container_id}/cpuacct.usage");
    if let Ok(text) = fs::read_to_string(v1) {
        return text.trim().parse::<f64>().ok().map(|ns| ns / 1e9);
    }
    let v2 = [
        format!("/sys/fs/cgroup/system.slice/docker-{container_id}.scope/cpu.stat"),
        format!("/sys/fs/cgroup/docker/{container_id}/cpu.stat"),
    ];
    v2.iter().find_map(|path| {
        let text = fs::read_to_string(path).ok()?;
        let line = text.lines().find(|l| l.starts_with("usage_usec "))?;
        line["usage_usec ".len()..]
            .trim()
            .parse::<f64>()
            .ok()
            .map(|us| us / 1e6)
    })
}
