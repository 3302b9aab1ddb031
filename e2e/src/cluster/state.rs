//! The sandbox's optional state file (`--state-file`): every stored object is written as JSON on
//! shutdown and loaded back at start, so a sandbox survives its own restart. Objects keep their
//! uids, names, owner references, finalizers and status (resourceVersions are reassigned);
//! CustomResourceDefinitions are served again before their objects are loaded. The simulated
//! kubelets then adopt the pods from their reported status.

use std::collections::BTreeSet;
use std::path::Path;

use anyhow::Context as _;
use serde_json::{Value, json};

use crate::ApiServer;
use crate::registry::GroupResource;

const FORMAT: &str = "e2e.sandbox.state/v1";

/// Writes every stored object of `server` to `path` (atomically: temp file + rename).
pub fn save(server: &ApiServer, path: &Path) -> anyhow::Result<usize> {
    let mut seen = BTreeSet::new();
    let mut tables = Vec::new();
    let mut count = 0;
    for info in server.registry().all() {
        let gr = info.gr();
        if !seen.insert((gr.group.clone(), gr.resource.clone())) {
            continue;
        }
        let (items, _) = server.store().list(&gr, None);
        if items.is_empty() {
            continue;
        }
        count += items.len();
        let items: Vec<&Value> = items.iter().map(|v| v.as_ref()).collect();
        tables.push(json!({"group": gr.group, "resource": gr.resource, "items": items}));
    }
    let doc = json!({"format": FORMAT, "tables": tables});
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec(&doc)?)
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))?;
    Ok(count)
}

fn rank(gr: &GroupResource) -> u8 {
    match (gr.group.as_str(), gr.resource.as_str()) {
        ("", "namespaces") => 0,
        ("apiextensions.k8s.io", "customresourcedefinitions") => 1,
        _ => 2,
    }
}

/// Loads a state file written by [`save`] into a fresh `server` (before clients start).
/// A missing file is not an error (first start). Returns the number of objects loaded.
pub fn load(server: &ApiServer, path: &Path) -> anyhow::Result<usize> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let doc: Value =
        serde_json::from_slice(&bytes).with_context(|| format!("parsing {}", path.display()))?;
    anyhow::ensure!(
        doc["format"] == FORMAT,
        "{}: not a sandbox state file",
        path.display()
    );
    let mut tables: Vec<(GroupResource, Vec<Value>)> = doc["tables"]
        .as_array()
        .map(|ts| {
            ts.iter()
                .map(|t| {
                    let gr = GroupResource::new(
                        t["group"].as_str().unwrap_or_default(),
                        t["resource"].as_str().unwrap_or_default(),
                    );
                    (gr, t["items"].as_array().cloned().unwrap_or_default())
                })
                .collect()
        })
        .unwrap_or_default();
    tables.sort_by_key(|(gr, _)| rank(gr));
    let mut count = 0;
    for (gr, items) in tables {
        for mut obj in items {
            if let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
                m.remove("resourceVersion");
            }
            let is_crd = rank(&gr) == 1;
            match server.store().restore(&gr, obj.clone()) {
                Ok(_) => count += 1,
                // the default namespaces exist already
                Err(e) if e.code == 409 => continue,
                Err(e) => anyhow::bail!(
                    "loading {}/{}: {}",
                    gr.resource,
                    obj.pointer("/metadata/name")
                        .and_then(Value::as_str)
                        .unwrap_or_default(),
                    e.message
                ),
            }
            if is_crd {
                let infos = crate::registry::crd_resources(&obj)
                    .map_err(|e| anyhow::anyhow!("CRD: {}", e.message))?;
                let group = obj
                    .pointer("/spec/group")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                let plural = obj
                    .pointer("/spec/names/plural")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                server.registry().set_crd(&group, &plural, infos);
            }
        }
    }
    Ok(count)
}
