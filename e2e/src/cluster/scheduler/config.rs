//! The simulated scheduler's configuration, readable from a `KubeSchedulerConfiguration`
//! (kubescheduler.config.k8s.io/v1) file: profile scheduler names and `extenders`.

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use super::extender::{self, ExtenderConfig};

/// Scheduler settings.
#[derive(Clone, Debug, PartialEq)]
pub struct SchedulerConfig {
    /// `spec.schedulerName`s this scheduler serves (default `default-scheduler`).
    pub scheduler_names: Vec<String>,
    /// HTTP extenders, called in order.
    pub extenders: Vec<ExtenderConfig>,
    /// How often unschedulable pods are retried when nothing changed (upstream flushes its
    /// unschedulable queue after 5 min; shorter here so tests don't wait).
    pub retry_interval: Duration,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            scheduler_names: vec!["default-scheduler".into()],
            extenders: Vec::new(),
            retry_interval: Duration::from_secs(2),
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Profile {
    #[serde(default)]
    scheduler_name: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct KubeSchedulerConfiguration {
    #[serde(default)]
    api_version: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    profiles: Vec<Profile>,
    #[serde(default)]
    extenders: Vec<ExtenderConfig>,
}

impl SchedulerConfig {
    /// Parses a KubeSchedulerConfiguration (YAML or JSON).
    pub fn from_kube_scheduler_configuration(text: &str) -> Result<Self, String> {
        let c: KubeSchedulerConfiguration =
            serde_yaml::from_str(text).map_err(|e| format!("KubeSchedulerConfiguration: {e}"))?;
        if c.kind != "KubeSchedulerConfiguration" {
            return Err(format!(
                "KubeSchedulerConfiguration: unexpected kind {:?}",
                c.kind
            ));
        }
        if !c.api_version.starts_with("kubescheduler.config.k8s.io/") {
            return Err(format!(
                "KubeSchedulerConfiguration: unexpected apiVersion {:?}",
                c.api_version
            ));
        }
        extender::validate(&c.extenders)?;
        let mut names: Vec<String> = c
            .profiles
            .into_iter()
            .map(|p| {
                p.scheduler_name
                    .unwrap_or_else(|| "default-scheduler".into())
            })
            .collect();
        if names.is_empty() {
            names.push("default-scheduler".into());
        }
        Ok(SchedulerConfig {
            scheduler_names: names,
            extenders: c.extenders,
            ..Default::default()
        })
    }

    /// Reads a KubeSchedulerConfiguration file.
    pub fn from_file(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Self::from_kube_scheduler_configuration(&text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_extenders() {
        let yaml = r#"
apiVersion: kubescheduler.config.k8s.io/v1
kind: KubeSchedulerConfiguration
profiles:
- schedulerName: default-scheduler
- schedulerName: gpu-scheduler
extenders:
- urlPrefix: "http://127.0.0.1:9040/v1"
  filterVerb: filter
  prioritizeVerb: priority
  bindVerb: bind
  weight: 2
  httpTimeout: 10s
  nodeCacheCapable: true
  ignorable: false
  managedResources:
  - name: tke.cloud.tencent.com/eni-ip
    ignoredByScheduler: true
- urlPrefix: "https://gpu-quota-admission:3456/scheduler"
  filterVerb: predicates
  enableHTTPS: true
  tlsConfig:
    caData: "AAAA"
  ignorable: true
"#;
        let c = SchedulerConfig::from_kube_scheduler_configuration(yaml).expect("config");
        assert_eq!(
            c.scheduler_names,
            vec!["default-scheduler", "gpu-scheduler"]
        );
        assert_eq!(c.extenders.len(), 2);
        let e = &c.extenders[0];
        assert_eq!(
            (
                e.filter_verb.as_str(),
                e.prioritize_verb.as_str(),
                e.bind_verb.as_str(),
                e.weight
            ),
            ("filter", "priority", "bind", 2)
        );
        assert!(e.node_cache_capable && e.managed_resources[0].ignored_by_scheduler);
        assert_eq!(e.http_timeout.as_deref(), Some("10s"));
        assert!(c.extenders[1].enable_https && c.extenders[1].ignorable);
        assert_eq!(
            c.extenders[1]
                .tls_config
                .as_ref()
                .map(|t| t.ca_data.as_str()),
            Some("AAAA")
        );
    }

    #[test]
    fn rejects_bad_files() {
        assert!(
            SchedulerConfig::from_kube_scheduler_configuration("kind: Policy\napiVersion: v1\n")
                .is_err()
        );
        let two_binders = "apiVersion: kubescheduler.config.k8s.io/v1\nkind: KubeSchedulerConfiguration\nextenders:\n- {urlPrefix: a, bindVerb: b}\n- {urlPrefix: c, bindVerb: d}\n";
        assert!(SchedulerConfig::from_kube_scheduler_configuration(two_binders).is_err());
        let ok = "apiVersion: kubescheduler.config.k8s.io/v1\nkind: KubeSchedulerConfiguration\n";
        assert_eq!(
            SchedulerConfig::from_kube_scheduler_configuration(ok)
                .expect("ok")
                .scheduler_names,
            vec!["default-scheduler"]
        );
    }
}
