//! `make run` smoke test: `hack/run.sh` starts the sandbox (3 nodes) and every controller
//! binary, installs the CRDs, applies the seed examples through kubectl and checks them
//! (RUN_SMOKE=1 stops after the checks). Needs the controller binaries built next to the
//! sandbox (`make test-e2e` builds them: building the workspace's integration tests builds every binary).

use std::{path::PathBuf, process::Command};

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

#[test]
fn make_run_starts_the_sandbox_and_serves_the_seed_examples() {
    if std::env::var_os("E2E_KUBECONFIG").is_some() {
        eprintln!("skipped: `make run` is the embedded sandbox; not applicable to a real cluster");
        return;
    }
    let sandbox = PathBuf::from(env!("CARGO_BIN_EXE_sandbox"));
    let bin_dir = sandbox.parent().expect("target dir").to_path_buf();
    for controller in ["tapp-controller", "cronhpa-controller", "galaxy-ipam"] {
        assert!(
            bin_dir.join(controller).is_file(),
            "{controller} is not built in {}: run `cargo build --workspace --bins` or `make test-e2e`",
            bin_dir.display()
        );
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let dir = std::env::temp_dir().join(format!("make-run-smoke-{}", std::process::id()));
    let out = Command::new("bash")
        .arg(workspace_root().join("hack/run.sh"))
        .env("RUN_SMOKE", "1")
        .env("SANDBOX_PORT", port.to_string())
        .env("SANDBOX_DIR", &dir)
        .env("SANDBOX_BIN_DIR", &bin_dir)
        .output()
        .expect("run hack/run.sh");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let logs = std::fs::read_dir(dir.join("logs"))
        .map(|entries| {
            entries
                .flatten()
                .map(|e| {
                    format!(
                        "--- {}\n{}",
                        e.path().display(),
                        std::fs::read_to_string(e.path()).unwrap_or_default()
                    )
                })
                .collect::<Vec<_>>()
                .join("\n")
        })
        .unwrap_or_default();
    assert!(out.status.success(), "hack/run.sh failed:\n{text}\n{logs}");
    for expected in [
        "node-0   Ready",
        "node-2   Ready",
        "example-tapp   3          3       Running",
        "example-cron-hpa   demo-deployment   Deployment",
        "dp_default_nnn_nnn-",
        "smoke run passed",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
