//! CPU time as the floors count it, from `/proc/stat`.

/// The all-cores line of `/proc/stat`: user, nice, system, idle, iowait, irq, softirq, steal, …
/// in clock ticks.
pub fn fields() -> Vec<u64> {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    stat.lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect()
}

/// Busy CPU seconds of all cores so far (user, nice, system, irq, softirq, steal).
#[allow(dead_code)] // the floors'; the jobs bench takes the fields
pub fn busy() -> f64 {
    let f = fields();
    let jiffies: u64 = [0, 1, 2, 5, 6, 7]
        .iter()
        .map(|&i| f.get(i).copied().unwrap_or(0))
        .sum();
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100);
    jiffies as f64 / hz as f64
}
