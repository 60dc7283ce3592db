//! What the results were measured on.

/// CPU model and count, kernel and memory of this machine.
#[derive(Clone, Debug)]
pub struct Machine {
    /// `model name` of /proc/cpuinfo.
    pub cpu: String,
    /// CPUs this process may use.
    pub cpus: usize,
    /// The CPU flags include `hypervisor`.
    pub virtual_machine: bool,
    /// /proc/sys/kernel/osrelease.
    pub kernel: String,
    /// MemTotal in GiB (one decimal), when known.
    pub memory_gib: Option<f64>,
}

impl Machine {
    /// Reads /proc.
    pub fn read() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split_once(':'))
            .map_or_else(|| "unknown CPU".into(), |(_, v)| v.trim().to_string());
        let virtual_machine =
            cpuinfo.lines().any(|l| l.starts_with("flags") && l.split_whitespace().any(|f| f == "hypervisor"));
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_string();
        let memory_gib = std::fs::read_to_string("/proc/meminfo")
            .unwrap_or_default()
            .lines()
            .find(|l| l.starts_with("MemTotal:"))
            .and_then(|l| l.split_whitespace().nth(1).and_then(|k| k.parse::<f64>().ok()))
            .map(|kib| (kib / 1024.0 / 1024.0 * 10.0).round() / 10.0);
        Machine {
            cpu,
            cpus: std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
            virtual_machine,
            kernel,
            memory_gib,
        }
    }

    /// `<cpu>, <n> CPUs, kernel <release>`.
    pub fn line(&self) -> String {
        format!("{}, {} CPUs, kernel {}", self.cpu, self.cpus, self.kernel)
    }

    /// [`Machine::line`] and `, <m> GiB RAM` when the memory is known.
    pub fn line_with_memory(&self) -> String {
        match self.memory_gib {
            Some(m) => format!("{}, {m:.1} GiB RAM", self.line()),
            None => self.line(),
        }
    }

    /// The JSON object of the reports.
    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "cpu": self.cpu,
            "cpus": self.cpus,
            "virtual_machine": self.virtual_machine,
            "kernel": self.kernel,
            "memory_gib": self.memory_gib,
        })
    }
}
