//! The host a worker's tests run on: which one it is and how many CPUs it
//! has (for the fleet's capacity in heartbeats), and how busy those CPUs
//! were while a job ran (for the planner to learn whether more batches than
//! cores only share them). Read from `/proc` (in a container, `/proc/stat`
//! is still the host's) or asked of the Docker engine; best effort: what
//! cannot be read is unknown, never an error.

use std::num::NonZeroUsize;

/// Which host and how many CPUs, as far as this machine tells: its
/// `/etc/machine-id` (else its hostname) and the CPUs this process may use.
pub fn this_machine() -> (String, u32) {
    let id = std::fs::read_to_string("/etc/machine-id")
        .ok()
        .map(|id| id.trim().to_owned())
        .filter(|id| !id.is_empty())
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|id| format!("machine:{}", id.trim()))
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, NonZeroUsize::get);
    (id, u32::try_from(cores).unwrap_or(u32::MAX))
}

/// The CPU time a host's CPUs spent, busy and in all, from `/proc/stat`'s
/// `cpu` line (in clock ticks).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuTimes {
    busy: u64,
    total: u64,
}

impl CpuTimes {
    /// The host's CPU times now, if `/proc/stat` reads.
    pub fn now() -> Option<CpuTimes> {
        parse_stat(&std::fs::read_to_string("/proc/stat").ok()?)
    }

    /// How busy the host's CPUs were since `self`, in thousandths.
    pub fn busy_permille_since(self, later: CpuTimes) -> Option<u16> {
        let total = later.total.checked_sub(self.total)?;
        let busy = later.busy.checked_sub(self.busy)?;
        (total > 0).then(|| (busy.min(total) * 1000 / total) as u16)
    }
}

/// `cpu  user nice system idle iowait irq softirq steal …`: idle and iowait
/// are the CPUs' rest, everything else their work.
fn parse_stat(stat: &str) -> Option<CpuTimes> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    if fields.len() < 5 {
        return None;
    }
    let total = fields.iter().fold(0u64, |a, b| a.saturating_add(*b));
    let rest = fields[3].saturating_add(fields[4]);
    Some(CpuTimes {
        busy: total.saturating_sub(rest),
        total,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_is_everything_but_idle_and_iowait() {
        let before = parse_stat("cpu  100 0 50 800 50 0 0 0 0 0\ncpu0 1 2 3 4 5\n").unwrap();
        let after = parse_stat("cpu  250 0 100 850 50 0 0 0 0 0\n").unwrap();
        // 200 busy ticks of 250.
        assert_eq!(before.busy_permille_since(after), Some(800));
        assert_eq!(after.busy_permille_since(before), None, "time runs forward");
        assert_eq!(before.busy_permille_since(before), None, "no time passed");
        assert_eq!(parse_stat("intr 1 2 3"), None);
    }

    #[test]
    fn this_machine_has_a_name_and_cpus() {
        let (id, cores) = this_machine();
        assert!(!id.is_empty());
        assert!(cores >= 1);
        assert!(CpuTimes::now().is_some());
    }
}
