//! `shardflow tune --check`: inspects this machine against tuning/README.md and reports each item as ok, as
//! hurting latency (with the fix), or as serious (the engine cannot run well, or at all: the command exits 1).
//! Reads only `/proc` and `/sys` below a root directory (`/`, or a fake tree in tests).

use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok,
    /// Works, but costs latency.
    Hurts,
    /// Cannot be checked here (no such interface: a VM, another kernel).
    Unknown,
    /// Stops the engine or cripples it.
    Serious,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub item: &'static str,
    pub status: Status,
    pub detail: String,
    /// What to do, when the status is not Ok.
    pub fix: String,
}

fn finding(item: &'static str, status: Status, detail: impl Into<String>, fix: impl Into<String>) -> Finding {
    Finding { item, status, detail: detail.into(), fix: fix.into() }
}

/// Reads a file under `root` (`rel` without its leading `/`), trimmed.
fn read(root: &Path, rel: &str) -> Option<String> {
    std::fs::read_to_string(root.join(rel)).ok().map(|s| s.trim().to_string())
}

/// Parses a CPU list (`2-5,7`).
pub fn parse_cpu_list(text: &str) -> Vec<usize> {
    let mut out = Vec::new();
    for part in text.trim().split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                if let (Ok(a), Ok(b)) = (a.trim().parse::<usize>(), b.trim().parse::<usize>()) {
                    out.extend(a..=b);
                }
            }
            None => out.extend(part.trim().parse::<usize>().ok()),
        }
    }
    out
}

fn list(cpus: &[usize]) -> String {
    cpus.iter().map(usize::to_string).collect::<Vec<_>>().join(",")
}

/// The value selected in a sysfs choice file (`always [madvise] never` → `madvise`).
fn selected(text: &str) -> Option<&str> {
    text.split_whitespace().find(|w| w.starts_with('[')).map(|w| w.trim_matches(|c| c == '[' || c == ']'))
}

/// Every check, for shards on `cpus`, reading the machine's state under `root`; `memlock` is this
/// process's locked-memory limit in bytes (`None`: unlimited).
pub fn check(root: &Path, cpus: &[usize], memlock: Option<u64>) -> Vec<Finding> {
    let mut out = Vec::new();
    let cmdline = read(root, "proc/cmdline").unwrap_or_default();
    let shards = list(cpus);
    // Isolation: isolcpus, nohz_full, rcu_nocbs.
    for (item, file, param, fix) in [
        (
            "isolated cores",
            "sys/devices/system/cpu/isolated",
            "isolcpus",
            format!("isolcpus=managed_irq,domain,{shards}"),
        ),
        ("tickless cores", "sys/devices/system/cpu/nohz_full", "nohz_full", format!("nohz_full={shards}")),
    ] {
        let have = read(root, file).map(|t| parse_cpu_list(&t)).unwrap_or_default();
        let missing: Vec<usize> = cpus.iter().copied().filter(|c| !have.contains(c)).collect();
        out.push(if missing.is_empty() {
            finding(item, Status::Ok, format!("{param} covers the shards' CPUs {shards}"), "")
        } else {
            finding(
                item,
                Status::Hurts,
                format!("CPUs {} run shards but are not in {param}", list(&missing)),
                format!("add `{fix}` to the kernel command line (tuning/README.md, 1)"),
            )
        });
    }
    let rcu =
        cmdline.split_whitespace().find_map(|w| w.strip_prefix("rcu_nocbs=")).map(parse_cpu_list).unwrap_or_default();
    let missing: Vec<usize> = cpus.iter().copied().filter(|c| !rcu.contains(c)).collect();
    out.push(if missing.is_empty() {
        finding("RCU callbacks", Status::Ok, "rcu_nocbs covers the shards' CPUs", "")
    } else {
        finding(
            "RCU callbacks",
            Status::Hurts,
            format!("CPUs {} take RCU callbacks", list(&missing)),
            format!("add `rcu_nocbs={shards}` to the kernel command line (tuning/README.md, 1)"),
        )
    });
    out.push(irq_finding(root, cpus));
    out.push(governor_finding(root, cpus));
    out.push(cstate_finding(root, cpus));
    out.push(match read(root, "sys/kernel/mm/transparent_hugepage/enabled").as_deref().and_then(selected) {
        Some("madvise") => finding("transparent huge pages", Status::Ok, "madvise", ""),
        Some(other) => finding(
            "transparent huge pages",
            Status::Hurts,
            format!(
                "{other}: {}",
                if other == "always" {
                    "background compaction stalls page faults"
                } else {
                    "no huge pages for the state tables"
                }
            ),
            "echo madvise > /sys/kernel/mm/transparent_hugepage/enabled (tuning/README.md, 4)",
        ),
        None => finding("transparent huge pages", Status::Unknown, "no THP setting readable", ""),
    });
    out.push(memlock_finding(root, memlock));
    let swaps = read(root, "proc/swaps").map_or(0, |t| t.lines().skip(1).filter(|l| !l.trim().is_empty()).count());
    out.push(if swaps == 0 {
        finding("swap", Status::Ok, "no swap", "")
    } else {
        finding(
            "swap",
            Status::Hurts,
            format!("{swaps} swap device(s): state paged out faults on the data path"),
            "swapoff -a, or sysctl vm.swappiness=1 (tuning/README.md, 4)",
        )
    });
    out.push(nvme_finding(root));
    out.push(numa_finding(root, cpus));
    out.push(hypervisor_finding(root, cpus));
    out.push(match read(root, "proc/sys/kernel/io_uring_disabled").as_deref() {
        Some("1") | Some("2") => finding(
            "io_uring",
            Status::Serious,
            "disabled by kernel.io_uring_disabled: the shards cannot start",
            "sysctl kernel.io_uring_disabled=0",
        ),
        _ => finding("io_uring", Status::Ok, "enabled", ""),
    });
    out
}

/// A virtual machine's CPUs are sometimes not running: the host takes them for milliseconds at a time
/// ("steal"), and rows due meanwhile wait, whatever the guest is tuned to.
fn hypervisor_finding(root: &Path, cpus: &[usize]) -> Finding {
    const ITEM: &str = "virtual machine";
    let Some(cpuinfo) = read(root, "proc/cpuinfo") else {
        return finding(ITEM, Status::Unknown, "no /proc/cpuinfo", "");
    };
    let virtualized =
        cpuinfo.lines().filter(|l| l.starts_with("flags")).any(|l| l.split_whitespace().any(|f| f == "hypervisor"));
    if !virtualized {
        return finding(ITEM, Status::Ok, "bare metal (no hypervisor flag)", "");
    }
    // Per CPU line of /proc/stat: user nice system idle iowait irq softirq steal ...; steal over all of it.
    let stat = read(root, "proc/stat").unwrap_or_default();
    let (mut steal, mut total) = (0u64, 0u64);
    for cpu in cpus {
        let name = format!("cpu{cpu}");
        let Some(line) = stat.lines().find(|l| l.split_whitespace().next() == Some(name.as_str())) else { continue };
        let ticks: Vec<u64> = line.split_whitespace().skip(1).take(8).filter_map(|t| t.parse().ok()).collect();
        total += ticks.iter().sum::<u64>();
        steal += ticks.get(7).copied().unwrap_or(0);
    }
    let share = if total > 0 {
        format!(
            "; the host took {:.2}% of the shards' CPUs since boot (/proc/stat steal)",
            steal as f64 / total as f64 * 100.0
        )
    } else {
        String::new()
    };
    finding(
        ITEM,
        Status::Hurts,
        format!("a virtual machine{share}: the host's slices (milliseconds) land in the tail"),
        "bare metal, or dedicated pinned vCPUs; `shardflow bench` reports steal per run (tuning/README.md, 7)",
    )
}

fn irq_finding(root: &Path, cpus: &[usize]) -> Finding {
    let Ok(entries) = std::fs::read_dir(root.join("proc/irq")) else {
        return finding("interrupts", Status::Unknown, "no /proc/irq", "");
    };
    let mut on_shards = 0;
    let mut total = 0;
    for e in entries.flatten() {
        if let Some(aff) = read(&e.path(), "smp_affinity_list") {
            total += 1;
            if parse_cpu_list(&aff).iter().any(|c| cpus.contains(c)) {
                on_shards += 1;
            }
        }
    }
    if on_shards == 0 {
        finding("interrupts", Status::Ok, format!("none of {total} IRQs may run on the shards' CPUs"), "")
    } else {
        finding(
            "interrupts",
            Status::Hurts,
            format!("{on_shards} of {total} IRQs may run on the shards' CPUs"),
            "write the housekeeping CPUs to /proc/irq/*/smp_affinity_list and keep irqbalance off them (tuning/README.md, 2)",
        )
    }
}

fn governor_finding(root: &Path, cpus: &[usize]) -> Finding {
    let governors: Vec<(usize, Option<String>)> = cpus
        .iter()
        .map(|c| (*c, read(root, &format!("sys/devices/system/cpu/cpu{c}/cpufreq/scaling_governor"))))
        .collect();
    if governors.iter().all(|(_, g)| g.is_none()) {
        return finding("frequency governor", Status::Unknown, "no cpufreq interface (a VM, or a fixed frequency)", "");
    }
    let slow: Vec<String> = governors
        .iter()
        .filter(|(_, g)| g.as_deref() != Some("performance"))
        .map(|(c, g)| format!("cpu{c}: {}", g.as_deref().unwrap_or("?")))
        .collect();
    if slow.is_empty() {
        finding("frequency governor", Status::Ok, "performance on every shard CPU", "")
    } else {
        finding(
            "frequency governor",
            Status::Hurts,
            slow.join(", "),
            "cpupower frequency-set -g performance (tuning/README.md, 3)",
        )
    }
}

/// Largest wake-up latency (µs) an enabled idle state may cost before it hurts: C1-class states only.
const CSTATE_EXIT_LATENCY_MAX_US: u64 = 10;

fn cstate_finding(root: &Path, cpus: &[usize]) -> Finding {
    let mut deep = Vec::new();
    let mut seen = false;
    for c in cpus {
        let dir = root.join(format!("sys/devices/system/cpu/cpu{c}/cpuidle"));
        let Ok(states) = std::fs::read_dir(&dir) else { continue };
        for s in states.flatten() {
            seen = true;
            let p = s.path();
            let latency: u64 = read(&p, "latency").and_then(|l| l.parse().ok()).unwrap_or(0);
            let disabled = read(&p, "disable").as_deref() == Some("1");
            if !disabled && latency > CSTATE_EXIT_LATENCY_MAX_US {
                deep.push(format!("cpu{c} {} ({latency} µs)", read(&p, "name").unwrap_or_default()));
            }
        }
    }
    if !seen {
        finding("idle states", Status::Unknown, "no cpuidle interface", "")
    } else if deep.is_empty() {
        finding(
            "idle states",
            Status::Ok,
            format!("no enabled state wakes slower than {CSTATE_EXIT_LATENCY_MAX_US} µs"),
            "",
        )
    } else {
        deep.truncate(4);
        finding(
            "idle states",
            Status::Hurts,
            format!("deep states enabled: {}", deep.join(", ")),
            "intel_idle.max_cstate=1 processor.max_cstate=1 on the kernel command line, or hold /dev/cpu_dma_latency at 0 (tuning/README.md, 3)",
        )
    }
}

/// Locked memory io_uring needs on kernels that charge it to RLIMIT_MEMLOCK (before 5.12): the rings of every
/// shard and their registered buffers.
const IO_URING_MEMLOCK_MIN_BYTES: u64 = 64 << 20;

fn memlock_finding(root: &Path, memlock: Option<u64>) -> Finding {
    let release = read(root, "proc/sys/kernel/osrelease").unwrap_or_default();
    let mut nums = release.split(|c: char| !c.is_ascii_digit()).filter_map(|n| n.parse::<u32>().ok());
    let (major, minor) = (nums.next().unwrap_or(0), nums.next().unwrap_or(0));
    let charged = (major, minor) < (5, 12);
    match memlock {
        None => finding("locked memory", Status::Ok, "unlimited", ""),
        Some(n) if n >= IO_URING_MEMLOCK_MIN_BYTES => finding("locked memory", Status::Ok, format!("{n} bytes"), ""),
        Some(n) if charged => finding(
            "locked memory",
            Status::Serious,
            format!("{n} bytes on kernel {release}, which charges io_uring's rings to it: the shards may fail to start"),
            "LimitMEMLOCK=infinity in the unit, or ulimit -l unlimited (tuning/README.md, 4)",
        ),
        Some(n) => finding(
            "locked memory",
            Status::Hurts,
            format!("{n} bytes (kernel {release} charges io_uring to memory cgroups instead; registered buffers still need it)"),
            "LimitMEMLOCK=infinity in the unit, or ulimit -l unlimited (tuning/README.md, 4)",
        ),
    }
}

fn nvme_finding(root: &Path) -> Finding {
    let Ok(entries) = std::fs::read_dir(root.join("sys/block")) else {
        return finding("NVMe scheduler", Status::Unknown, "no /sys/block", "");
    };
    let mut names: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("nvme")))
        .collect();
    names.sort();
    if names.is_empty() {
        return finding(
            "NVMe scheduler",
            Status::Unknown,
            "no NVMe device: put state_dir on local NVMe for the state log",
            "",
        );
    }
    let queued: Vec<String> = names
        .iter()
        .filter_map(|p| {
            let s = read(p, "queue/scheduler")?;
            let sel = selected(&s)?.to_string();
            (sel != "none").then(|| format!("{}: {sel}", p.file_name().unwrap_or_default().to_string_lossy()))
        })
        .collect();
    if queued.is_empty() {
        finding("NVMe scheduler", Status::Ok, "none on every NVMe device", "")
    } else {
        finding(
            "NVMe scheduler",
            Status::Hurts,
            queued.join(", "),
            "echo none > /sys/block/<dev>/queue/scheduler (tuning/README.md, 5)",
        )
    }
}

fn numa_finding(root: &Path, cpus: &[usize]) -> Finding {
    let Ok(entries) = std::fs::read_dir(root.join("sys/devices/system/node")) else {
        return finding("NUMA", Status::Unknown, "no NUMA information", "");
    };
    let mut used = Vec::new();
    let mut nodes = 0;
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        let Some(id) = name.strip_prefix("node").and_then(|n| n.parse::<usize>().ok()) else { continue };
        nodes += 1;
        let node_cpus = read(&e.path(), "cpulist").map(|t| parse_cpu_list(&t)).unwrap_or_default();
        if cpus.iter().any(|c| node_cpus.contains(c)) {
            used.push(id);
        }
    }
    used.sort_unstable();
    if used.len() <= 1 {
        finding("NUMA", Status::Ok, format!("the shards' CPUs are on one node (of {nodes})"), "")
    } else {
        finding(
            "NUMA",
            Status::Hurts,
            format!("the shards' CPUs span nodes {}", list(&used)),
            "give the shards one node's cores and memory: CPUAffinity= that node's CPUs, NUMAPolicy=bind (tuning/README.md, 6)",
        )
    }
}

/// The report: one line per item (and its fix), then a summary; exit code 1 when an item is serious.
pub fn report(findings: &[Finding]) -> (String, i32) {
    use std::fmt::Write as _;
    let mut out = String::new();
    for f in findings {
        let tag = match f.status {
            Status::Ok => "ok",
            Status::Hurts => "would hurt latency",
            Status::Unknown => "cannot tell",
            Status::Serious => "SERIOUS",
        };
        let _ = writeln!(out, "{:<22} {tag}: {}", f.item, f.detail);
        if f.status != Status::Ok && !f.fix.is_empty() {
            let _ = writeln!(out, "{:<22}   fix: {}", "", f.fix);
        }
    }
    let count = |s| findings.iter().filter(|f| f.status == s).count();
    let serious = count(Status::Serious);
    let _ = writeln!(
        out,
        "{} ok, {} would hurt latency, {} cannot tell, {serious} serious",
        count(Status::Ok),
        count(Status::Hurts),
        count(Status::Unknown)
    );
    (out, if serious > 0 { 1 } else { 0 })
}

/// This process's locked-memory limit (`None`: unlimited).
pub fn memlock_limit() -> Option<u64> {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut lim) } != 0 || lim.rlim_cur == libc::RLIM_INFINITY {
        return None;
    }
    Some(lim.rlim_cur)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(root: &Path, rel: &str, text: &str) {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    fn tree(label: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("shardflow-tune-{label}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn status(findings: &[Finding], item: &str) -> Status {
        findings.iter().find(|f| f.item == item).unwrap_or_else(|| panic!("no {item}")).status
    }

    #[test]
    fn a_tuned_machine_is_ok_and_an_untuned_one_is_told_how() {
        let root = tree("tuned");
        put(&root, "proc/cmdline", "BOOT_IMAGE=x isolcpus=managed_irq,domain,2-3 nohz_full=2-3 rcu_nocbs=2-3");
        put(&root, "sys/devices/system/cpu/isolated", "2-3");
        put(&root, "sys/devices/system/cpu/nohz_full", "2-3");
        put(&root, "proc/irq/24/smp_affinity_list", "0-1");
        for c in [2, 3] {
            put(&root, &format!("sys/devices/system/cpu/cpu{c}/cpufreq/scaling_governor"), "performance");
            put(&root, &format!("sys/devices/system/cpu/cpu{c}/cpuidle/state0/latency"), "0");
            put(&root, &format!("sys/devices/system/cpu/cpu{c}/cpuidle/state2/latency"), "133");
            put(&root, &format!("sys/devices/system/cpu/cpu{c}/cpuidle/state2/disable"), "1");
        }
        put(&root, "sys/kernel/mm/transparent_hugepage/enabled", "always [madvise] never");
        put(&root, "proc/swaps", "Filename Type Size Used Priority\n");
        put(&root, "proc/sys/kernel/osrelease", "6.1.0-18-amd64");
        put(&root, "sys/block/nvme0n1/queue/scheduler", "[none] mq-deadline");
        put(&root, "sys/devices/system/node/node0/cpulist", "0-3");
        put(&root, "proc/cpuinfo", "processor\t: 0\nflags\t\t: fpu vme sse2 avx2\n");
        let findings = check(&root, &[2, 3], None);
        assert!(findings.iter().all(|f| f.status == Status::Ok), "{findings:#?}");
        assert_eq!(report(&findings).1, 0);

        let root = tree("untuned");
        put(&root, "proc/cmdline", "BOOT_IMAGE=x quiet");
        put(&root, "sys/devices/system/cpu/isolated", "");
        put(&root, "proc/irq/24/smp_affinity_list", "0-3");
        put(&root, "sys/devices/system/cpu/cpu2/cpufreq/scaling_governor", "powersave");
        put(&root, "sys/devices/system/cpu/cpu2/cpuidle/state3/latency", "133");
        put(&root, "sys/devices/system/cpu/cpu2/cpuidle/state3/name", "C6");
        put(&root, "sys/kernel/mm/transparent_hugepage/enabled", "[always] madvise never");
        put(&root, "proc/swaps", "Filename Type Size Used Priority\n/dev/sda2 partition 1 0 -2\n");
        put(&root, "proc/sys/kernel/osrelease", "5.4.0");
        put(&root, "sys/block/nvme0n1/queue/scheduler", "none [mq-deadline]");
        put(&root, "sys/devices/system/node/node0/cpulist", "0-1");
        put(&root, "sys/devices/system/node/node1/cpulist", "2-3");
        put(&root, "proc/cpuinfo", "processor\t: 0\nflags\t\t: fpu sse2 hypervisor avx2\n");
        put(
            &root,
            "proc/stat",
            "cpu  9 9 9 9 9 9 9 9 0 0\ncpu1 90 0 5 900 0 0 0 5 0 0\ncpu2 90 0 5 890 0 0 0 15 0 0\n",
        );
        let findings = check(&root, &[1, 2], Some(64 << 10));
        for item in
            ["isolated cores", "tickless cores", "RCU callbacks", "interrupts", "frequency governor", "idle states"]
        {
            assert_eq!(status(&findings, item), Status::Hurts, "{item}");
        }
        for item in ["transparent huge pages", "swap", "NVMe scheduler", "NUMA", "virtual machine"] {
            assert_eq!(status(&findings, item), Status::Hurts, "{item}");
        }
        assert_eq!(status(&findings, "locked memory"), Status::Serious);
        let (text, code) = report(&findings);
        assert_eq!(code, 1, "{text}");
        assert!(text.contains("fix: add `isolcpus=managed_irq,domain,1,2` to the kernel command line"), "{text}");
        assert!(text.contains("cpu2 C6 (133 µs)"), "{text}");
        assert!(text.contains("the host took 1.00% of the shards' CPUs since boot"), "{text}");
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn parses_cpu_lists() {
        assert_eq!(parse_cpu_list("2-5,7"), vec![2, 3, 4, 5, 7]);
        assert_eq!(parse_cpu_list(""), Vec::<usize>::new());
        assert_eq!(parse_cpu_list("(null)"), Vec::<usize>::new());
    }
}
