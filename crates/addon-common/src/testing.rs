//! Support for tests across the workspace: locating the pinned external tools
//! (`make tools` installs them into `<workspace>/.tools/bin`).

use std::path::{Path, PathBuf};

/// The workspace root: the nearest ancestor of `start` holding `Cargo.lock` or a
/// `[workspace]` Cargo.toml.
pub fn workspace_root(start: &Path) -> Option<PathBuf> {
    start
        .ancestors()
        .find(|dir| {
            dir.join("Cargo.lock").is_file()
                || std::fs::read_to_string(dir.join("Cargo.toml"))
                    .map(|s| s.contains("[workspace]"))
                    .unwrap_or(false)
        })
        .map(Path::to_path_buf)
}

/// Finds a tool: `$<NAME>` (upper-cased, `-` → `_`), then `<workspace>/.tools/bin/<name>`,
/// then `PATH`.
pub fn find_tool(name: &str) -> Option<PathBuf> {
    let var = name.to_ascii_uppercase().replace('-', "_");
    if let Some(path) = std::env::var_os(&var).map(PathBuf::from)
        && path.is_file()
    {
        return Some(path);
    }
    let here = std::env::current_dir().ok()?;
    if let Some(root) = workspace_root(&here) {
        let local = root.join(".tools/bin").join(name);
        if local.is_file() {
            return Some(local);
        }
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|candidate| candidate.is_file())
    })
}

/// Like [`find_tool`], but panics with the command that installs the tool.
pub fn require_tool(name: &str) -> PathBuf {
    find_tool(name).unwrap_or_else(|| {
        panic!(
            "{name} not found: run `make tools` (installs the pinned test tools into .tools/bin)"
        )
    })
}

/// Runs `promtool check metrics` on a text exposition and panics with its report unless it
/// is clean. `allowed` lists findings (line prefixes of promtool's report) that are known
/// and accepted, e.g. a metric name kept for compatibility with an original's dashboards.
pub fn assert_promtool_clean(exposition: &str, allowed: &[&str]) {
    use std::io::Write;
    let mut child = std::process::Command::new(require_tool("promtool"))
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run promtool: {e}"));
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(exposition.as_bytes())
            .unwrap_or_else(|e| panic!("cannot feed promtool: {e}"));
    }
    let out = child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("promtool failed to run: {e}"));
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let findings: Vec<&str> = report
        .lines()
        .filter(|l| !l.trim().is_empty() && !allowed.iter().any(|a| l.starts_with(a)))
        .collect();
    assert!(
        findings.is_empty() && (out.status.success() || !allowed.is_empty()),
        "promtool check metrics:\n{report}\n--- exposition ---\n{exposition}"
    );
}

/// CPU time and memory of a process, read from `/proc` (Linux), for benchmarks.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProcessUsage {
    /// User + system CPU seconds so far.
    pub cpu_seconds: f64,
    /// Resident set size, MiB.
    pub rss_mib: f64,
    /// Peak resident set size (VmHWM), MiB.
    pub peak_rss_mib: f64,
}

/// Reads [`ProcessUsage`] of `pid` from `/proc/<pid>/stat` and `/proc/<pid>/status`.
pub fn process_usage(pid: u32) -> std::io::Result<ProcessUsage> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the parenthesised command name: state is 0, utime 11, stime 12 (clock ticks).
    let after_comm = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .unwrap_or_default();
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    let field = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib = |key: &str| {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    Ok(ProcessUsage {
        // The kernel's USER_HZ is 100 on every Linux architecture we build for.
        cpu_seconds: (field(11) + field(12)) / 100.0,
        rss_mib: kib("VmRSS:") / 1024.0,
        peak_rss_mib: kib("VmHWM:") / 1024.0,
    })
}

/// Waits until `path` exists, polling every 50 ms, for at most `deadline`.
pub async fn wait_for_file(path: &Path, deadline: std::time::Duration) -> std::io::Result<()> {
    let start = std::time::Instant::now();
    while !path.exists() {
        if start.elapsed() > deadline {
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("{} did not appear within {deadline:?}", path.display()),
            ));
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    Ok(())
}

/// A child process (a benchmark's sandbox or controller) killed and reaped when dropped.
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Where a benchmark finds the binaries it starts: `explicit`, else its own directory.
pub fn sibling_bin_dir(explicit: Option<PathBuf>) -> std::io::Result<PathBuf> {
    match explicit {
        Some(dir) => Ok(dir),
        None => std::env::current_exe()?
            .parent()
            .map(Path::to_path_buf)
            .ok_or_else(|| std::io::Error::other("the executable has no directory")),
    }
}

/// Waits for a kubeconfig another process writes (the sandbox's `--kubeconfig-out`) and reads
/// it once complete: the file can be visible before it is completely written.
pub async fn read_kubeconfig(
    path: &Path,
    deadline: std::time::Duration,
) -> std::io::Result<kube::config::Kubeconfig> {
    let start = std::time::Instant::now();
    wait_for_file(path, deadline).await?;
    loop {
        match kube::config::Kubeconfig::read_from(path) {
            Ok(k) if !k.clusters.is_empty() => return Ok(k),
            Ok(_) | Err(_) if start.elapsed() < deadline => {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            Ok(_) => {
                return Err(std::io::Error::other(format!(
                    "{}: no cluster",
                    path.display()
                )));
            }
            Err(e) => return Err(std::io::Error::other(format!("{}: {e}", path.display()))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(target_os = "linux")]
    #[test]
    fn usage_of_this_process_is_plausible() {
        let u = process_usage(std::process::id()).expect("own /proc entry");
        assert!(u.cpu_seconds >= 0.0);
        assert!(u.rss_mib > 1.0, "{u:?}");
        assert!(u.peak_rss_mib >= u.rss_mib, "{u:?}");
    }
}
