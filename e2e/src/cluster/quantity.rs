//! Resource quantities (`100m`, `1Gi`, `2`) as integer milli-units, and the resource
//! arithmetic the scheduler and kubelet need (pod requests, node allocatable).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Pod};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

/// Resource name → amount in milli-units (so `cpu: 100m` is 100 and `memory: 1Ki` is 1_024_000).
pub type Resources = BTreeMap<String, i128>;

/// Parses a Kubernetes quantity into milli-units. Returns `None` for malformed input.
pub fn parse_milli(q: &str) -> Option<i128> {
    let q = q.trim();
    if q.is_empty() {
        return None;
    }
    let split = q
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(q.len());
    let (num, suffix) = q.split_at(split);
    // exponent forms: 1e3, 1E3
    let (num, suffix) = if let Some(rest) = suffix.strip_prefix(['e', 'E'])
        && !rest.is_empty()
        && rest
            .trim_start_matches(['+', '-'])
            .chars()
            .all(|c| c.is_ascii_digit())
    {
        let exp: i32 = rest.parse().ok()?;
        return scale(num, 1000, exp, 10);
    } else {
        (num, suffix)
    };
    let (base, exp): (i128, i32) = match suffix {
        "" => (10, 0),
        "n" => (10, -9),
        "u" => (10, -6),
        "m" => (10, -3),
        "k" => (10, 3),
        "M" => (10, 6),
        "G" => (10, 9),
        "T" => (10, 12),
        "P" => (10, 15),
        "E" => (10, 18),
        "Ki" => (2, 10),
        "Mi" => (2, 20),
        "Gi" => (2, 30),
        "Ti" => (2, 40),
        "Pi" => (2, 50),
        "Ei" => (2, 60),
        _ => return None,
    };
    scale(num, 1000, exp, base)
}

/// `num * base^exp * milli`, rounding up fractional milli-units as Kubernetes does.
fn scale(num: &str, milli: i128, exp: i32, base: i128) -> Option<i128> {
    let neg = num.starts_with('-');
    let num = num.trim_start_matches(['+', '-']);
    let (int, frac) = num.split_once('.').unwrap_or((num, ""));
    if int.is_empty() && frac.is_empty() {
        return None;
    }
    let digits = format!("{int}{frac}");
    let mut mantissa: i128 = if digits.is_empty() {
        0
    } else {
        digits.parse().ok()?
    };
    let mut denom: i128 = 10i128.checked_pow(u32::try_from(frac.len()).ok()?)?;
    mantissa = mantissa.checked_mul(milli)?;
    if exp >= 0 {
        mantissa = mantissa.checked_mul(base.checked_pow(exp.unsigned_abs())?)?;
    } else {
        denom = denom.checked_mul(base.checked_pow(exp.unsigned_abs())?)?;
    }
    let v = (mantissa + denom - 1) / denom;
    Some(if neg { -v } else { v })
}

/// Parses a quantity, treating malformed values as zero.
pub fn milli(q: &Quantity) -> i128 {
    parse_milli(&q.0).unwrap_or(0)
}

/// Formats milli-units back into a quantity string (`100m`, `2`).
pub fn format_milli(v: i128) -> String {
    if v % 1000 == 0 {
        (v / 1000).to_string()
    } else {
        format!("{v}m")
    }
}

/// Converts a `ResourceList` into [`Resources`].
pub fn to_resources(list: Option<&BTreeMap<String, Quantity>>) -> Resources {
    list.map(|l| l.iter().map(|(k, v)| (k.clone(), milli(v))).collect())
        .unwrap_or_default()
}

fn container_requests(c: &Container) -> Resources {
    let Some(res) = &c.resources else {
        return Resources::new();
    };
    // A limit without a request defaults the request (API defaulting).
    let mut out = to_resources(res.limits.as_ref());
    out.extend(to_resources(res.requests.as_ref()));
    out
}

/// The effective requests of a pod as kube-scheduler computes them: the sum over containers,
/// at least the maximum over init containers (sidecars with `restartPolicy: Always` add up),
/// plus `spec.overhead`.
pub fn pod_requests(pod: &Pod) -> Resources {
    let mut total = Resources::new();
    let Some(spec) = &pod.spec else {
        return total;
    };
    for c in &spec.containers {
        add(&mut total, &container_requests(c));
    }
    let mut sidecars = Resources::new();
    let mut init_max = Resources::new();
    for c in spec.init_containers.iter().flatten() {
        let r = container_requests(c);
        if c.restart_policy.as_deref() == Some("Always") {
            add(&mut sidecars, &r);
            add(&mut total, &r);
        } else {
            let mut with_sidecars = r.clone();
            add(&mut with_sidecars, &sidecars);
            for (k, v) in with_sidecars {
                let e = init_max.entry(k).or_insert(0);
                *e = (*e).max(v);
            }
        }
    }
    for (k, v) in init_max {
        let e = total.entry(k).or_insert(0);
        *e = (*e).max(v);
    }
    add(&mut total, &to_resources(spec.overhead.as_ref()));
    total
}

/// Every resource name a pod's containers (incl. init containers) request or limit.
pub fn pod_resource_names(pod: &Pod) -> Vec<String> {
    let mut names = Vec::new();
    if let Some(spec) = &pod.spec {
        for c in spec
            .containers
            .iter()
            .chain(spec.init_containers.iter().flatten())
        {
            if let Some(r) = &c.resources {
                for l in [r.requests.as_ref(), r.limits.as_ref()]
                    .into_iter()
                    .flatten()
                {
                    names.extend(l.keys().cloned());
                }
            }
        }
    }
    names.sort();
    names.dedup();
    names
}

/// `a += b` per resource.
pub fn add(a: &mut Resources, b: &Resources) {
    for (k, v) in b {
        *a.entry(k.clone()).or_insert(0) += v;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_quantities() {
        let cases = [
            ("1", Some(1000)),
            ("100m", Some(100)),
            ("0.5", Some(500)),
            ("1.5k", Some(1_500_000)),
            ("1Ki", Some(1_024_000)),
            ("1Gi", Some(1_073_741_824_000)),
            ("2e3", Some(2_000_000)),
            ("1n", Some(1)),
            ("-1", Some(-1000)),
            ("abc", None),
            ("", None),
            ("1Qi", None),
        ];
        for (q, want) in cases {
            assert_eq!(parse_milli(q), want, "{q}");
        }
        assert_eq!(format_milli(1500), "1500m");
        assert_eq!(format_milli(2000), "2");
    }

    #[test]
    fn pod_requests_follow_the_scheduler_rules() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p"},
            "spec": {
                "initContainers": [
                    {"name": "i1", "resources": {"requests": {"cpu": "2"}}},
                ],
                "containers": [
                    {"name": "a", "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}}},
                    {"name": "b", "resources": {"limits": {"cpu": "1", "tencent.com/vcuda-core": "50"}}},
                ],
                "overhead": {"memory": "1Mi"}
            }
        }))
        .expect("pod");
        let r = pod_requests(&pod);
        assert_eq!(r["cpu"], 2000);
        assert_eq!(r["memory"], (1 << 30) * 1000 + (1 << 20) * 1000);
        assert_eq!(r["tencent.com/vcuda-core"], 50_000);
        assert_eq!(
            pod_resource_names(&pod),
            vec!["cpu", "memory", "tencent.com/vcuda-core"]
        );
    }
}
