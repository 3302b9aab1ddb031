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
