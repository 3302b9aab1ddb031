//! Rendering the generated CRDs into the files committed under `manifests/` and `charts/`.

use std::path::{Path, PathBuf};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;

use crate::{Result, api::all_crds};

/// The header of every generated file.
pub const HEADER: &str = "# Generated from the Rust types in crates/addon-common/src/api by `make generate`.\n# Do not edit by hand. Install with `kubectl apply --server-side -f` or `kubectl create -f`.\n";

/// Which add-on (chart) serves a CRD group.
pub fn component_of_group(group: &str) -> Option<&'static str> {
    match group {
        "apps.tkestack.io" => Some("tapp-controller"),
        "extensions.tkestack.io" => Some("cronhpa-controller"),
        "lbcf.tkestack.io" => Some("lbcf-controller"),
        "galaxy.k8s.io" => Some("galaxy-ipam"),
        _ => None,
    }
}

/// `<plural>.<group>.yaml`, the CRD's own name.
pub fn file_name(crd: &CustomResourceDefinition) -> String {
    format!("{}.{}.yaml", crd.spec.names.plural, crd.spec.group)
}

/// One CRD as YAML with the generated-file header.
pub fn render(crd: &CustomResourceDefinition) -> Result<String> {
    let yaml = serde_yaml::to_string(crd)
        .map_err(|e| crate::Error::Telemetry(format!("cannot render CRD as YAML: {e}")))?;
    Ok(format!("{HEADER}{yaml}"))
}

/// Every generated file below `root`: `manifests/crds/*` always, and
/// `charts/<component>/crds/*` for each chart directory that exists.
pub fn render_all(root: &Path) -> Result<Vec<(PathBuf, String)>> {
    let mut files = Vec::new();
    for crd in all_crds() {
        let content = render(&crd)?;
        let name = file_name(&crd);
        if let Some(component) = component_of_group(&crd.spec.group) {
            let chart = root.join("charts").join(component);
            if chart.join("Chart.yaml").is_file() {
                files.push((chart.join("crds").join(&name), content.clone()));
            }
        }
        files.push((root.join("manifests/crds").join(name), content));
    }
    Ok(files)
}

/// The files whose committed content differs from `files` (or that are missing).
pub fn stale_files(files: &[(PathBuf, String)]) -> Vec<PathBuf> {
    files
        .iter()
        .filter(|(path, content)| {
            std::fs::read_to_string(path).ok().as_deref() != Some(content.as_str())
        })
        .map(|(path, _)| path.clone())
        .collect()
}
