//! Services: defaults, ClusterIP and NodePort allocation (this server's own allocators), the
//! allocated ClusterIP kept across updates and immutable once set.

use std::sync::atomic::{AtomicU32, Ordering};

use serde_json::{Value, json};

use super::Strategy;
use crate::defaults::set_default;
use crate::errors::ApiResult;
use crate::registry::ResourceInfo;

/// First ClusterIP handed out: `10.96.0.10`.
const FIRST_IP: u32 = 10;
/// NodePort range `30000-32767`.
const NODE_PORT_BASE: u32 = 30000;
const NODE_PORT_COUNT: u32 = 2768;

/// The service strategy, with the allocators of one server.
#[derive(Debug)]
pub struct Services {
    next_ip: AtomicU32,
    next_node_port: AtomicU32,
}

impl Default for Services {
    fn default() -> Self {
        Services {
            next_ip: AtomicU32::new(FIRST_IP),
            next_node_port: AtomicU32::new(0),
        }
    }
}

impl Services {
    /// On create: a ClusterIP from 10.96.0.0/12 and node ports from 30000-32767 (sequentially,
    /// never reused).
    fn allocate(&self, obj: &mut Value) {
        let Some(spec) = obj.get_mut("spec") else {
            return;
        };
        let ty = spec
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("ClusterIP")
            .to_string();
        if ty == "ExternalName" {
            return;
        }
        let ip = spec
            .get("clusterIP")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        if ip.is_empty() {
            let n = self.next_ip.fetch_add(1, Ordering::Relaxed);
            let ip = format!(
                "10.{}.{}.{}",
                96 + (n >> 16) % 16,
                (n >> 8) & 0xff,
                n & 0xff
            );
            spec["clusterIP"] = json!(ip);
            spec["clusterIPs"] = json!([ip]);
        } else if spec.get("clusterIPs").is_none() {
            spec["clusterIPs"] = json!([ip]);
        }
        set_default(spec, "ipFamilies", json!(["IPv4"]));
        set_default(spec, "ipFamilyPolicy", json!("SingleStack"));
        set_default(spec, "internalTrafficPolicy", json!("Cluster"));
        if ty == "NodePort" || ty == "LoadBalancer" {
            set_default(spec, "externalTrafficPolicy", json!("Cluster"));
            if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
                for p in ports.iter_mut().filter(|p| p.get("nodePort").is_none()) {
                    let n = self.next_node_port.fetch_add(1, Ordering::Relaxed);
                    p["nodePort"] = json!(NODE_PORT_BASE + n % NODE_PORT_COUNT);
                }
            }
        }
    }
}

impl Strategy for Services {
    fn defaults(&self, obj: &mut Value) {
        let Some(spec) = obj.get_mut("spec") else {
            return;
        };
        set_default(spec, "type", json!("ClusterIP"));
        set_default(spec, "sessionAffinity", json!("None"));
        if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
            for p in ports {
                set_default(p, "protocol", json!("TCP"));
                if let Some(port) = p.get("port").cloned() {
                    set_default(p, "targetPort", port);
                }
            }
        }
    }

    fn prepare_create(&self, info: &ResourceInfo, obj: &mut Value) -> ApiResult<()> {
        if info.status {
            self.initial_status(obj);
        }
        self.defaults(obj);
        self.allocate(obj);
        Ok(())
    }

    fn prepare_update(&self, info: &ResourceInfo, cur: &Value, new: &mut Value) -> ApiResult<()> {
        if info.status {
            super::keep_status(cur, new);
        }
        // an update without clusterIP keeps the allocated one (as upstream)
        let empty = new
            .pointer("/spec/clusterIP")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty);
        if empty && let Some(ip) = cur.pointer("/spec/clusterIP").cloned() {
            new["spec"]["clusterIP"] = ip;
            new["spec"]["clusterIPs"] = cur
                .pointer("/spec/clusterIPs")
                .cloned()
                .unwrap_or(Value::Null);
        }
        self.defaults(new);
        Ok(())
    }

    fn validate_update(&self, cur: &Value, new: &Value) -> Option<(String, String)> {
        let ip = |v: &Value| {
            v.pointer("/spec/clusterIP")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        let (o, n) = (ip(cur), ip(new));
        (!o.is_empty() && !n.is_empty() && o != n).then(|| {
            (
                "spec.clusterIPs[0]".into(),
                format!("Invalid value: []string{{\"{n}\"}}: may not change once set"),
            )
        })
    }

    fn delete_returns_object(&self) -> bool {
        true
    }
}
