//! Host metrics: CPU, memory, load, uptime and network counters, read with sysinfo.
//!
//! Only CPU usage, memory and network lists are refreshed (no process table, no disks):
//! the genie must stay within ~10 MB RSS and well under 1 % of a core, and the process
//! table is by far the most expensive thing sysinfo can read.

use sysinfo::{CpuRefreshKind, MemoryRefreshKind, Networks, RefreshKind, System};
use wisp_common::proto::{HostMetrics, NetCounters};

#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("cannot read host metrics ({what})")]
    Read {
        what: &'static str,
        #[source]
        source: sysinfo::Error,
    },
}

/// Where host metrics come from.
pub trait MetricsSource: Send + 'static {
    /// A fresh sample; CPU usage is the average since the previous call.
    fn sample(&mut self) -> Result<HostMetrics, MetricsError>;
}

/// The real source: sysinfo on /proc.
pub struct SysinfoMetrics {
    sys: System,
    nets: Networks,
    // Reused between samples so the steady state allocates only the report itself.
    cpu_refresh: CpuRefreshKind,
}

impl std::fmt::Debug for SysinfoMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SysinfoMetrics")
    }
}

impl SysinfoMetrics {
    pub fn new() -> Result<Self, MetricsError> {
        let cpu_refresh = CpuRefreshKind::nothing().with_usage();
        let sys = System::new_with_specifics(
            RefreshKind::nothing()
                .with_cpu(cpu_refresh)
                .with_memory(MemoryRefreshKind::nothing().with_ram()),
        )
        .map_err(|source| MetricsError::Read {
            what: "cpu and memory",
            source,
        })?;
        let nets = Networks::new_with_refreshed_list().map_err(|source| MetricsError::Read {
            what: "network interfaces",
            source,
        })?;
        Ok(Self {
            sys,
            nets,
            cpu_refresh,
        })
    }
}

impl MetricsSource for SysinfoMetrics {
    fn sample(&mut self) -> Result<HostMetrics, MetricsError> {
        self.sys.refresh_cpu_specifics(self.cpu_refresh);
        self.sys
            .refresh_memory_specifics(MemoryRefreshKind::nothing().with_ram());
        // `true`: interfaces that vanished (a VM's tap) leave the report.
        self.nets.refresh(true);
        let load = System::load_average().map_err(|source| MetricsError::Read {
            what: "load average",
            source,
        })?;
        let uptime_s = System::uptime().map_err(|source| MetricsError::Read {
            what: "uptime",
            source,
        })?;
        let mut net: Vec<NetCounters> = self
            .nets
            .iter()
            .map(|(name, data)| NetCounters {
                iface: name.to_string_lossy().into_owned(),
                rx_bytes: data.total_received(),
                tx_bytes: data.total_transmitted(),
            })
            .collect();
        // Stable order keeps reports comparable and diff-friendly.
        net.sort_unstable_by(|a, b| a.iface.cmp(&b.iface));
        Ok(HostMetrics {
            cpu_percent: self.sys.global_cpu_usage(),
            per_cpu_percent: self.sys.cpus().iter().map(|c| c.usage()).collect(),
            mem_total_bytes: self.sys.total_memory(),
            mem_used_bytes: self.sys.used_memory(),
            mem_available_bytes: self.sys.available_memory(),
            load_avg: [load.one, load.five, load.fifteen],
            uptime_s,
            net,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn real_metrics_are_plausible() {
        let mut m = SysinfoMetrics::new().unwrap();
        let _ = m.sample().unwrap();
        std::thread::sleep(sysinfo::MINIMUM_CPU_UPDATE_INTERVAL);
        let s = m.sample().unwrap();
        assert!(s.mem_total_bytes > 0);
        assert!(s.mem_available_bytes <= s.mem_total_bytes);
        assert!(!s.per_cpu_percent.is_empty());
        assert!((0.0..=100.0).contains(&s.cpu_percent), "{}", s.cpu_percent);
        assert!(s.uptime_s > 0);
        assert!(s.net.iter().any(|n| n.iface == "lo"), "{:?}", s.net);
    }
}
