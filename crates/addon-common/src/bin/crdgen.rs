//! Writes the CustomResourceDefinitions generated from the Rust types.
//!
//! ```text
//! crdgen [--root DIR] [--check]
//! ```
//! Writes `manifests/crds/<plural>.<group>.yaml` for every CRD and, for each chart that
//! exists, `charts/<component>/crds/` with the CRDs of that component. `--check` writes
//! nothing and exits 1 listing the stale files.

use std::{path::PathBuf, process::ExitCode};

use addon_common::crdgen::{render_all, stale_files};

fn main() -> ExitCode {
    let mut root = PathBuf::from(".");
    let mut check = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--check" => check = true,
            "--root" => match args.next() {
                Some(dir) => root = PathBuf::from(dir),
                None => {
                    eprintln!("--root needs a directory");
                    return ExitCode::from(2);
                }
            },
            "-h" | "--help" => {
                println!("usage: crdgen [--root DIR] [--check]");
                return ExitCode::SUCCESS;
            }
            other => {
                eprintln!("unknown argument {other:?}; usage: crdgen [--root DIR] [--check]");
                return ExitCode::from(2);
            }
        }
    }
    let files = match render_all(&root) {
        Ok(files) => files,
        Err(error) => {
            eprintln!("crdgen: {error}");
            return ExitCode::FAILURE;
        }
    };
    if check {
        let stale = stale_files(&files);
        if stale.is_empty() {
            println!("CRDs are up to date ({} files)", files.len());
            return ExitCode::SUCCESS;
        }
        for path in &stale {
            eprintln!("stale: {}", path.display());
        }
        eprintln!("run `make generate` to regenerate the CRDs");
        return ExitCode::FAILURE;
    }
    for (path, content) in &files {
        if let Some(dir) = path.parent()
            && let Err(error) = std::fs::create_dir_all(dir)
        {
            eprintln!("crdgen: {}: {error}", dir.display());
            return ExitCode::FAILURE;
        }
        if let Err(error) = std::fs::write(path, content) {
            eprintln!("crdgen: {}: {error}", path.display());
            return ExitCode::FAILURE;
        }
        println!("wrote {}", path.display());
    }
    ExitCode::SUCCESS
}
