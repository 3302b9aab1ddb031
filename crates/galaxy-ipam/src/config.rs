//! The floating-IP pool configuration: the `floatingips` JSON of the `floatingip-config`
//! ConfigMap (or the inline `schedule_plugin.floatingips` of the `--config` file), parsed and
//! validated. Pure.
//!
//! A pool is `{"nodeSubnets": [...] | "routableSubnet": "...", "ips": ["a~b", "c"],
//! "subnet": "x/len", "gateway": "g", "vlan": n}`. Keys are matched case-insensitively, as
//! Go's `encoding/json` does.

use std::{collections::BTreeSet, fmt, net::Ipv4Addr};

use serde::Serialize;
use serde_json::{Map, Value};

use crate::{Error, Result};

/// An IPv4 network (address masked to its prefix).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Net {
    /// The network address, as an integer.
    pub addr: u32,
    /// The prefix length.
    pub len: u8,
}

impl Net {
    /// Parses `a.b.c.d/len`; the address is masked.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (ip, len) = text
            .split_once('/')
            .ok_or_else(|| format!("{text:?} is not a CIDR (expected a.b.c.d/len)"))?;
        let ip: Ipv4Addr = ip
            .trim()
            .parse()
            .map_err(|_| format!("{text:?} is not a CIDR: bad IPv4 address"))?;
        let len: u8 = len
            .trim()
            .parse()
            .ok()
            .filter(|l| *l <= 32)
            .ok_or_else(|| format!("{text:?} is not a CIDR: bad prefix length"))?;
        Ok(Self {
            addr: u32::from(ip) & mask(len),
            len,
        })
    }

    /// Whether the network contains `ip`.
    pub fn contains(&self, ip: u32) -> bool {
        ip & mask(self.len) == self.addr
    }
}

impl fmt::Display for Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", Ipv4Addr::from(self.addr), self.len)
    }
}

impl Serialize for Net {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// The netmask of a prefix length.
pub fn mask(len: u8) -> u32 {
    if len == 0 { 0 } else { u32::MAX << (32 - len) }
}

/// An inclusive IPv4 range `first~last` (a single IP has first == last).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IpRange {
    /// First IP.
    pub first: u32,
    /// Last IP (inclusive).
    pub last: u32,
}

impl IpRange {
    /// Parses `a~b` or `a`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let (a, b) = text.split_once('~').unwrap_or((text, text));
        let first: Ipv4Addr = a
            .trim()
            .parse()
            .map_err(|_| format!("bad IP range {text:?}: {a:?} is not an IPv4 address"))?;
        let last: Ipv4Addr = b
            .trim()
            .parse()
            .map_err(|_| format!("bad IP range {text:?}: {b:?} is not an IPv4 address"))?;
        let (first, last) = (u32::from(first), u32::from(last));
        if first > last {
            return Err(format!("bad IP range {text:?}: first IP is after the last"));
        }
        Ok(Self { first, last })
    }

    /// Whether the range contains `ip`.
    pub fn contains(&self, ip: u32) -> bool {
        self.first <= ip && ip <= self.last
    }

    /// Number of IPs in the range.
    pub fn size(&self) -> u64 {
        u64::from(self.last - self.first) + 1
    }
}

impl fmt::Display for IpRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.first == self.last {
            write!(f, "{}", Ipv4Addr::from(self.first))
        } else {
            write!(
                f,
                "{}~{}",
                Ipv4Addr::from(self.first),
                Ipv4Addr::from(self.last)
            )
        }
    }
}

impl Serialize for IpRange {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// One validated pool.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FipPool {
    /// Node subnets (masked, deduplicated, in the given order) whose nodes may use the pool.
    pub node_subnets: Vec<Net>,
    /// The deprecated `routableSubnet`, as given (echoed into the pod's ipinfo).
    pub routable_subnet: Option<Net>,
    /// The pod subnet.
    pub subnet: Net,
    /// The gateway of the pod subnet.
    pub gateway: u32,
    /// VLAN id (0: none).
    pub vlan: u16,
    /// Ascending, disjoint, non-adjacent ranges inside the subnet.
    pub ranges: Vec<IpRange>,
}

impl FipPool {
    /// Whether the pool holds `ip`.
    pub fn contains(&self, ip: u32) -> bool {
        self.ranges.iter().any(|r| r.contains(ip))
    }

    /// Number of IPs of the pool.
    pub fn size(&self) -> u64 {
        self.ranges.iter().map(IpRange::size).sum()
    }

    /// Every IP of the pool, ascending.
    pub fn ips(&self) -> impl Iterator<Item = u32> + '_ {
        self.ranges.iter().flat_map(|r| r.first..=r.last)
    }

    /// The first IP, as Galaxy's `galaxy_ip_counter{first_ip}` label shows it.
    pub fn first_ip(&self) -> u32 {
        self.ranges.first().map_or(0, |r| r.first)
    }
}

/// The validated pools, sorted by gateway (stable), as the original sorts them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PoolConfig {
    /// The pools.
    pub pools: Vec<FipPool>,
}

impl PoolConfig {
    /// Parses and validates the `floatingips` JSON text.
    pub fn parse(text: &str) -> Result<Self> {
        let value: Value =
            serde_json::from_str(text).map_err(|source| Error::PoolsNotJson { source })?;
        Self::from_value(&value)
    }

    /// Validates an already-parsed `floatingips` array.
    pub fn from_value(value: &Value) -> Result<Self> {
        let items = match value {
            Value::Array(items) => items,
            Value::Null => return Ok(Self::default()),
            _ => return Err(Error::PoolsNotArray),
        };
        let mut pools = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let pool =
                parse_pool(item).map_err(|reason| Error::InvalidPool { index: i, reason })?;
            pools.push(pool);
        }
        // No IP may belong to two pools.
        let mut all: Vec<(IpRange, usize)> = pools
            .iter()
            .enumerate()
            .flat_map(|(i, p)| p.ranges.iter().map(move |r| (*r, i)))
            .collect();
        all.sort();
        for w in all.windows(2) {
            if w[1].0.first <= w[0].0.last {
                return Err(Error::OverlappingPools {
                    first: w[0].1,
                    second: w[1].1,
                    first_range: w[0].0,
                    second_range: w[1].0,
                });
            }
        }
        pools.sort_by_key(|p| p.gateway);
        Ok(Self { pools })
    }

    /// The node subnet of a node IP: the first node subnet (pool order) containing it.
    pub fn node_subnet(&self, node_ip: u32) -> Option<Net> {
        self.pools
            .iter()
            .flat_map(|p| p.node_subnets.iter())
            .find(|n| n.contains(node_ip))
            .copied()
    }

    /// Indices of the pools a node subnet may use.
    pub fn pools_of_node_subnet(&self, subnet: Net) -> Vec<usize> {
        self.pools
            .iter()
            .enumerate()
            .filter(|(_, p)| p.node_subnets.contains(&subnet))
            .map(|(i, _)| i)
            .collect()
    }

    /// The index of the pool holding `ip`.
    pub fn pool_of_ip(&self, ip: u32) -> Option<usize> {
        self.pools.iter().position(|p| p.contains(ip))
    }

    /// Total number of IPs.
    pub fn size(&self) -> u64 {
        self.pools.iter().map(FipPool::size).sum()
    }
}

/// Returns the value of `key` in `obj`, matching the key case-insensitively (exact match first).
pub fn get_ci<'a>(obj: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    obj.get(key).or_else(|| {
        obj.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v)
    })
}

fn str_field(obj: &Map<String, Value>, key: &str) -> Result<Option<String>, String> {
    match get_ci(obj, key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.trim().to_owned())),
        Some(other) => Err(format!("{key} must be a string, got {other}")),
    }
}

fn parse_pool(item: &Value) -> Result<FipPool, String> {
    let obj = item
        .as_object()
        .ok_or_else(|| "a pool must be a JSON object".to_string())?;
    let mut node_subnets: Vec<Net> = Vec::new();
    match get_ci(obj, "nodeSubnets") {
        None | Some(Value::Null) => {}
        Some(Value::Array(list)) => {
            for v in list {
                let s = v
                    .as_str()
                    .ok_or_else(|| format!("nodeSubnets entries must be strings, got {v}"))?;
                let net = Net::parse(s).map_err(|e| format!("nodeSubnets: {e}"))?;
                if !node_subnets.contains(&net) {
                    node_subnets.push(net);
                }
            }
        }
        Some(other) => return Err(format!("nodeSubnets must be an array, got {other}")),
    }
    let routable_subnet = match str_field(obj, "routableSubnet")? {
        Some(s) => Some(Net::parse(&s).map_err(|e| format!("routableSubnet: {e}"))?),
        None => None,
    };
    if let Some(net) = routable_subnet
        && !node_subnets.contains(&net)
    {
        node_subnets.push(net);
    }
    if node_subnets.is_empty() {
        return Err(
            "a node subnet is required (nodeSubnets, or the deprecated routableSubnet)".into(),
        );
    }
    let subnet_text = str_field(obj, "subnet")?.ok_or("subnet is required (e.g. 10.0.80.0/24)")?;
    let subnet = Net::parse(&subnet_text).map_err(|e| format!("subnet: {e}"))?;
    let gateway_text =
        str_field(obj, "gateway")?.ok_or("gateway is required (an IP such as 10.0.80.1)")?;
    if gateway_text.contains('/') {
        return Err(format!(
            "gateway {gateway_text:?} must be an IP address, not a CIDR; put the prefix length in subnet"
        ));
    }
    let gateway: Ipv4Addr = gateway_text
        .parse()
        .map_err(|_| format!("gateway {gateway_text:?} is not an IPv4 address"))?;
    let gateway = u32::from(gateway);
    if !subnet.contains(gateway) {
        return Err(format!(
            "gateway {} is outside subnet {subnet}",
            Ipv4Addr::from(gateway)
        ));
    }
    let vlan = match get_ci(obj, "vlan") {
        None | Some(Value::Null) => 0,
        Some(v) => v
            .as_u64()
            .and_then(|n| u16::try_from(n).ok())
            .filter(|n| *n < 4096)
            .ok_or_else(|| format!("vlan must be an integer in [0, 4095], got {v}"))?,
    };
    let mut ranges = Vec::new();
    match get_ci(obj, "ips") {
        None | Some(Value::Null) => return Err("ips is required (ranges a~b or single IPs)".into()),
        Some(Value::Array(list)) => {
            for v in list {
                let s = v
                    .as_str()
                    .ok_or_else(|| format!("ips entries must be strings, got {v}"))?;
                ranges.push(IpRange::parse(s)?);
            }
        }
        Some(other) => return Err(format!("ips must be an array, got {other}")),
    }
    if ranges.is_empty() {
        return Err("ips is empty".into());
    }
    for r in &ranges {
        if !subnet.contains(r.first) || !subnet.contains(r.last) {
            return Err(format!("IP range {r} is outside subnet {subnet}"));
        }
        if r.contains(gateway) {
            return Err(format!(
                "IP range {r} contains the gateway {}",
                Ipv4Addr::from(gateway)
            ));
        }
    }
    for w in ranges.windows(2) {
        let (a, b) = (w[0], w[1]);
        if b.first <= a.last {
            if b.first < a.first {
                return Err(format!("IP ranges must be ascending: {b} comes after {a}"));
            }
            return Err(format!("IP ranges {a} and {b} overlap"));
        }
        if b.first == a.last + 1 {
            return Err(format!(
                "IP ranges {a} and {b} are adjacent; merge them into one range"
            ));
        }
    }
    let mut seen = BTreeSet::new();
    node_subnets.retain(|n| seen.insert(*n));
    Ok(FipPool {
        node_subnets,
        routable_subnet,
        subnet,
        gateway,
        vlan,
        ranges,
    })
}

/// The `schedule_plugin` section of the `--config` file (Galaxy's `galaxy-ipam.json`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PluginConf {
    /// Inline pools; when present the ConfigMap is not used.
    pub floating_ips: Option<PoolConfig>,
    /// Resync interval in minutes (at least 1).
    pub resync_interval_minutes: u64,
    /// ConfigMap holding the pools.
    pub config_map_name: String,
    /// Its namespace.
    pub config_map_namespace: String,
    /// Its data key.
    pub floating_ip_key: String,
    /// gRPC address of the cloud provider (not supported; logged).
    pub cloud_provider_grpc_addr: String,
}

impl Default for PluginConf {
    fn default() -> Self {
        Self {
            floating_ips: None,
            resync_interval_minutes: 1,
            config_map_name: "floatingip-config".into(),
            config_map_namespace: "kube-system".into(),
            floating_ip_key: "floatingips".into(),
            cloud_provider_grpc_addr: String::new(),
        }
    }
}

fn invalid_setting(setting: &str, reason: String) -> Error {
    Error::InvalidSetting {
        setting: setting.to_owned(),
        reason,
    }
}

impl PluginConf {
    /// Parses the `--config` file: `{"schedule_plugin": {...}}` (keys case-insensitive;
    /// unknown keys such as the old `storageDriver` ignored).
    pub fn parse(text: &str) -> Result<Self> {
        let value: Value =
            serde_json::from_str(text).map_err(|source| Error::ConfigFileNotJson { source })?;
        let root = value
            .as_object()
            .ok_or_else(|| invalid_setting("", "config file must be a JSON object".into()))?;
        let mut conf = Self::default();
        let Some(plugin) = get_ci(root, "schedule_plugin") else {
            return Ok(conf);
        };
        let plugin = plugin.as_object().ok_or_else(|| {
            invalid_setting(
                "schedule_plugin",
                "schedule_plugin must be an object".into(),
            )
        })?;
        if let Some(v) = get_ci(plugin, "floatingips")
            && !v.is_null()
        {
            conf.floating_ips = Some(PoolConfig::from_value(v)?);
        }
        if let Some(v) = get_ci(plugin, "resyncInterval")
            && !v.is_null()
        {
            let n = v.as_u64().ok_or_else(|| {
                invalid_setting(
                    "resyncInterval",
                    format!("resyncInterval must be a number of minutes, got {v}"),
                )
            })?;
            conf.resync_interval_minutes = n.max(1);
        }
        let text = |key: &str| -> Result<Option<String>> {
            str_field(plugin, key).map_err(|reason| invalid_setting(key, reason))
        };
        if let Some(s) = text("configMapName")? {
            conf.config_map_name = s;
        }
        if let Some(s) = text("configMapNamespace")? {
            conf.config_map_namespace = s;
        }
        if let Some(s) = text("floatingipKey")? {
            conf.floating_ip_key = s;
        }
        if let Some(s) = text("cloudProviderGrpcAddr")? {
            conf.cloud_provider_grpc_addr = s;
        }
        Ok(conf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED: &str = r#"[{"routableSubnet":"172.21.64.0/20","ips":["192.168.64.200~192.168.64.251"],"subnet":"192.168.64.0/24","gateway":"192.168.64.1"}]"#;

    fn ip(s: &str) -> u32 {
        u32::from(s.parse::<Ipv4Addr>().expect("ip"))
    }

    #[test]
    fn seed_configmap_parses() {
        let c = PoolConfig::parse(SEED).expect("seed config");
        assert_eq!(c.pools.len(), 1);
        let p = &c.pools[0];
        assert_eq!(
            p.node_subnets,
            vec![Net::parse("172.21.64.0/20").expect("net")]
        );
        assert_eq!(
            p.routable_subnet.map(|n| n.to_string()).as_deref(),
            Some("172.21.64.0/20")
        );
        assert_eq!(p.size(), 52);
        assert_eq!(p.vlan, 0);
        assert_eq!(
            c.node_subnet(ip("172.21.64.15")),
            Some(Net::parse("172.21.64.0/20").expect("n"))
        );
        assert_eq!(c.node_subnet(ip("10.0.0.1")), None);
    }

    #[test]
    fn reference_example_with_node_subnets_vlan_and_case_insensitive_keys() {
        let c = PoolConfig::parse(
            r#"[{"NodeSubnets":["10.49.28.0/26","10.49.28.5/26","10.49.29.0/24"],
                 "ips":["10.0.80.2~10.0.80.4","10.0.80.9"],"Subnet":"10.0.80.0/24","gateway":"10.0.80.1","vlan":3},
                {"nodeSubnets":["10.49.28.0/26"],"ips":["10.0.70.2~10.0.70.9"],"subnet":"10.0.70.0/24","gateway":"10.0.70.1"}]"#,
        )
        .expect("valid");
        // sorted by gateway
        assert_eq!(c.pools[0].gateway, ip("10.0.70.1"));
        let p = &c.pools[1];
        assert_eq!(p.vlan, 3);
        assert_eq!(p.node_subnets.len(), 2, "masked and deduplicated");
        assert_eq!(p.size(), 4);
        let n = c.node_subnet(ip("10.49.28.7")).expect("subnet");
        assert_eq!(
            c.pools_of_node_subnet(n),
            vec![0, 1],
            "one node subnet, two pools"
        );
        assert_eq!(c.pool_of_ip(ip("10.0.80.9")), Some(1));
        assert_eq!(c.pool_of_ip(ip("10.0.80.5")), None);
    }

    #[test]
    fn validation_table() {
        let pool = |body: &str| {
            format!(
                r#"[{{"nodeSubnets":["10.1.0.0/16"],"subnet":"10.0.0.0/24","gateway":"10.0.0.1",{body}}}]"#
            )
        };
        let table: &[(&str, String, &str)] = &[
            ("unsorted", pool(r#""ips":["10.0.0.20","10.0.0.10"]"#), "ascending"),
            ("overlapping", pool(r#""ips":["10.0.0.10~10.0.0.20","10.0.0.15~10.0.0.30"]"#), "overlap"),
            ("adjacent", pool(r#""ips":["10.0.0.10~10.0.0.20","10.0.0.21~10.0.0.30"]"#), "adjacent"),
            ("outside subnet", pool(r#""ips":["10.0.1.10"]"#), "outside subnet"),
            ("range partly outside", pool(r#""ips":["10.0.0.250~10.0.1.3"]"#), "outside subnet"),
            ("reversed range", pool(r#""ips":["10.0.0.20~10.0.0.10"]"#), "first IP is after the last"),
            ("bad ip", pool(r#""ips":["10.0.0.300"]"#), "not an IPv4 address"),
            ("gateway in range", pool(r#""ips":["10.0.0.1~10.0.0.9"]"#), "contains the gateway"),
            ("no ips", pool(r#""ips":[]"#), "ips is empty"),
            ("ips missing", pool(r#""vlan":1"#), "ips is required"),
            ("vlan too big", pool(r#""ips":["10.0.0.5"],"vlan":5000"#), "vlan"),
            ("bad cidr subnet", r#"[{"nodeSubnets":["10.1.0.0/16"],"subnet":"10.0.0.0/33","gateway":"10.0.0.1","ips":["10.0.0.5"]}]"#.into(), "bad prefix length"),
            ("subnet no prefix", r#"[{"nodeSubnets":["10.1.0.0/16"],"subnet":"10.0.0.0","gateway":"10.0.0.1","ips":["10.0.0.5"]}]"#.into(), "not a CIDR"),
            ("bad node subnet", r#"[{"nodeSubnets":["10.1.0.0/x"],"subnet":"10.0.0.0/24","gateway":"10.0.0.1","ips":["10.0.0.5"]}]"#.into(), "nodeSubnets"),
            ("no node subnet", r#"[{"subnet":"10.0.0.0/24","gateway":"10.0.0.1","ips":["10.0.0.5"]}]"#.into(), "node subnet is required"),
            ("gateway as cidr", r#"[{"nodeSubnets":["10.1.0.0/16"],"subnet":"10.0.0.0/24","gateway":"10.0.0.1/24","ips":["10.0.0.5"]}]"#.into(), "not a CIDR"),
            ("gateway outside", r#"[{"nodeSubnets":["10.1.0.0/16"],"subnet":"10.0.0.0/24","gateway":"10.0.1.1","ips":["10.0.0.5"]}]"#.into(), "outside subnet"),
            ("no gateway", r#"[{"nodeSubnets":["10.1.0.0/16"],"subnet":"10.0.0.0/24","ips":["10.0.0.5"]}]"#.into(), "gateway is required"),
            ("no subnet", r#"[{"nodeSubnets":["10.1.0.0/16"],"gateway":"10.0.0.1","ips":["10.0.0.5"]}]"#.into(), "subnet is required"),
            ("pools overlap", r#"[{"nodeSubnets":["10.1.0.0/16"],"subnet":"10.0.0.0/24","gateway":"10.0.0.1","ips":["10.0.0.5~10.0.0.9"]},
                                  {"nodeSubnets":["10.2.0.0/16"],"subnet":"10.0.0.0/24","gateway":"10.0.0.1","ips":["10.0.0.9~10.0.0.12"]}]"#.into(), "overlap"),
            ("not an array", r#"{"ips":[]}"#.into(), "array"),
            ("not json", "[{".into(), "not a JSON array"),
        ];
        for (name, text, want) in table {
            let err = PoolConfig::parse(text).expect_err(name);
            assert!(err.to_string().contains(want), "{name}: {err}");
        }
        // Several pools share one pod subnet with disjoint IPs: fine.
        PoolConfig::parse(
            r#"[{"nodeSubnets":["10.1.0.0/16"],"subnet":"10.0.0.0/24","gateway":"10.0.0.1","ips":["10.0.0.5~10.0.0.9"]},
                {"nodeSubnets":["10.2.0.0/16"],"subnet":"10.0.0.0/24","gateway":"10.0.0.1","ips":["10.0.0.11~10.0.0.12"]}]"#,
        )
        .expect("disjoint pools on one subnet");
        assert_eq!(PoolConfig::parse("[]").expect("empty").pools.len(), 0);
        assert_eq!(PoolConfig::parse("null").expect("null").pools.len(), 0);
    }

    #[test]
    fn ranges_and_nets() {
        assert_eq!(IpRange::parse("10.0.0.1~10.0.0.3").expect("r").size(), 3);
        assert_eq!(
            IpRange::parse("10.0.0.1").expect("r").to_string(),
            "10.0.0.1"
        );
        assert_eq!(
            IpRange::parse(" 10.0.0.1 ~ 10.0.0.2 ")
                .expect("r")
                .to_string(),
            "10.0.0.1~10.0.0.2"
        );
        assert_eq!(
            Net::parse("10.49.28.5/26").expect("n").to_string(),
            "10.49.28.0/26"
        );
        assert!(Net::parse("0.0.0.0/0").expect("n").contains(ip("1.2.3.4")));
        assert_eq!(mask(24), 0xffff_ff00);
    }

    #[test]
    fn config_file() {
        let c = PluginConf::parse(
            r#"{"schedule_plugin": {"storageDriver":"k8s-crd","resyncInterval":0,"configMapName":"cm","ConfigMapNamespace":"ns","floatingipKey":"k"}}"#,
        )
        .expect("conf");
        assert_eq!(c.resync_interval_minutes, 1, "min 1");
        assert_eq!(
            (
                c.config_map_name.as_str(),
                c.config_map_namespace.as_str(),
                c.floating_ip_key.as_str()
            ),
            ("cm", "ns", "k")
        );
        assert!(c.floating_ips.is_none());
        let c = PluginConf::parse(&format!(
            r#"{{"schedule_plugin": {{"floatingips": {SEED}, "resyncInterval": 5}}}}"#
        ))
        .expect("inline");
        assert_eq!(c.floating_ips.expect("pools").pools.len(), 1);
        assert_eq!(c.resync_interval_minutes, 5);
        assert_eq!(
            PluginConf::parse("{}").expect("empty"),
            PluginConf::default()
        );
        assert!(
            PluginConf::parse(r#"{"schedule_plugin": {"floatingips": [{"ips":[]}]}}"#).is_err()
        );
    }
}
