//! Decoding of Kubernetes protobuf request bodies (`application/vnd.kubernetes.protobuf`).
//!
//! kubectl's typed commands (`kubectl create deployment|namespace|configmap|job|...`,
//! `kubectl expose`) send protobuf and client-go does not fall back to JSON, so the emulator
//! decodes them. Field numbers come from `descriptors.txt`, generated from the prost code of the
//! `k8s-pb` crate by `gen_descriptors.py`; JSON field names come from the k8s-openapi schemas.
//! Responses are always JSON (clients accept it).

use std::collections::HashMap;
use std::sync::OnceLock;

use base64::Engine;
use serde_json::{Map, Value, json};

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    String,
    Int32,
    Int64,
    Bool,
    Bytes,
    Double,
    Message,
}

#[derive(Debug)]
struct FieldDesc {
    json: String,
    kind: Kind,
    repeated: bool,
    map: bool,
    msg: String,
}

type Descriptors = HashMap<String, HashMap<u64, FieldDesc>>;

fn kind_of(s: &str) -> Kind {
    match s {
        "string" => Kind::String,
        "int32" => Kind::Int32,
        "int64" => Kind::Int64,
        "bool" => Kind::Bool,
        "bytes" => Kind::Bytes,
        "double" => Kind::Double,
        _ => Kind::Message,
    }
}

fn normalize(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

fn camel(snake: &str) -> String {
    let mut out = String::new();
    let mut up = false;
    for c in snake.chars() {
        if c == '_' {
            up = true;
        } else if up {
            out.push(c.to_ascii_uppercase());
            up = false;
        } else {
            out.push(c);
        }
    }
    out
}

fn descriptors() -> &'static Descriptors {
    static D: OnceLock<Descriptors> = OnceLock::new();
    D.get_or_init(|| {
        let defs = crate::openapi::definitions();
        let mut out: Descriptors = HashMap::new();
        let mut current: Option<(String, HashMap<String, String>)> = None;
        for line in include_str!("descriptors.txt").lines() {
            let parts: Vec<&str> = line.split(' ').collect();
            match parts.as_slice() {
                ["M", name] => {
                    let props: HashMap<String, String> = defs
                        .get(*name)
                        .and_then(|d| d.get("properties"))
                        .and_then(Value::as_object)
                        .map(|p| p.keys().map(|k| (normalize(k), k.clone())).collect())
                        .unwrap_or_default();
                    out.entry(name.to_string()).or_default();
                    current = Some((name.to_string(), props));
                }
                ["F", tag, snake, kind, label, ty] => {
                    let Some((msg, props)) = &current else {
                        continue;
                    };
                    let Ok(tag) = tag.parse::<u64>() else {
                        continue;
                    };
                    let json = props
                        .get(&normalize(snake))
                        .cloned()
                        .unwrap_or_else(|| camel(snake));
                    let (map, kind) = if *kind == "map" {
                        (true, kind_of(label))
                    } else {
                        (false, kind_of(kind))
                    };
                    let fd = FieldDesc {
                        json,
                        kind,
                        repeated: *label == "repeated",
                        map,
                        msg: ty.to_string(),
                    };
                    out.entry(msg.clone()).or_default().insert(tag, fd);
                }
                _ => {}
            }
        }
        out
    })
}

enum Field<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed64(u64),
    Fixed32,
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    fn varint(&mut self) -> Option<u64> {
        let mut v: u64 = 0;
        for shift in (0..64).step_by(7) {
            let b = *self.buf.get(self.pos)?;
            self.pos += 1;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let s = self.buf.get(self.pos..end)?;
        self.pos = end;
        Some(s)
    }

    fn next(&mut self) -> Option<(u64, Field<'a>)> {
        if self.pos >= self.buf.len() {
            return None;
        }
        let tag = self.varint()?;
        let f = match tag & 7 {
            0 => Field::Varint(self.varint()?),
            1 => Field::Fixed64(u64::from_le_bytes(self.take(8)?.try_into().ok()?)),
            2 => {
                let len = usize::try_from(self.varint()?).ok()?;
                Field::Bytes(self.take(len)?)
            }
            5 => {
                self.take(4)?;
                Field::Fixed32
            }
            _ => return None,
        };
        Some((tag >> 3, f))
    }
}

fn scalar(kind: Kind, f: &Field<'_>) -> Value {
    match (kind, f) {
        (Kind::String, Field::Bytes(b)) => Value::String(String::from_utf8_lossy(b).into_owned()),
        (Kind::Bytes, Field::Bytes(b)) => {
            json!(base64::engine::general_purpose::STANDARD.encode(b))
        }
        (Kind::Int32, Field::Varint(v)) => json!(*v as i64 as i32),
        (Kind::Int64, Field::Varint(v)) => json!(*v as i64),
        (Kind::Bool, Field::Varint(v)) => json!(*v != 0),
        (Kind::Double, Field::Fixed64(v)) => json!(f64::from_bits(*v)),
        _ => Value::Null,
    }
}

fn time(b: &[u8], micro: bool) -> Value {
    let mut r = Reader::new(b);
    let (mut secs, mut nanos) = (0i64, 0u32);
    while let Some((n, f)) = r.next() {
        match (n, f) {
            (1, Field::Varint(v)) => secs = v as i64,
            (2, Field::Varint(v)) => nanos = v as u32,
            _ => {}
        }
    }
    if secs == 0 && nanos == 0 {
        return Value::Null;
    }
    let fmt = if micro {
        chrono::SecondsFormat::Micros
    } else {
        chrono::SecondsFormat::Secs
    };
    chrono::DateTime::from_timestamp(secs, nanos)
        .map(|t| json!(t.to_rfc3339_opts(fmt, true)))
        .unwrap_or(Value::Null)
}

fn decode_message(name: &str, b: &[u8]) -> Value {
    match name {
        "io.k8s.apimachinery.pkg.apis.meta.v1.Time" => return time(b, false),
        "io.k8s.apimachinery.pkg.apis.meta.v1.MicroTime" => return time(b, true),
        "io.k8s.apimachinery.pkg.util.intstr.IntOrString" => {
            let mut r = Reader::new(b);
            let (mut ty, mut i, mut s) = (0u64, 0i64, String::new());
            while let Some((n, f)) = r.next() {
                match (n, f) {
                    (1, Field::Varint(v)) => ty = v,
                    (2, Field::Varint(v)) => i = v as i64 as i32 as i64,
                    (3, Field::Bytes(x)) => s = String::from_utf8_lossy(x).into_owned(),
                    _ => {}
                }
            }
            return if ty == 1 { json!(s) } else { json!(i) };
        }
        "io.k8s.apimachinery.pkg.api.resource.Quantity" => {
            let mut r = Reader::new(b);
            while let Some((n, f)) = r.next() {
                if let (1, Field::Bytes(x)) = (n, f) {
                    return Value::String(String::from_utf8_lossy(x).into_owned());
                }
            }
            return Value::Null;
        }
        "io.k8s.apimachinery.pkg.runtime.RawExtension"
        | "io.k8s.apimachinery.pkg.apis.meta.v1.FieldsV1"
        | "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.JSON" => {
            let mut r = Reader::new(b);
            while let Some((n, f)) = r.next() {
                if let (1, Field::Bytes(x)) = (n, f) {
                    return serde_json::from_slice(x).unwrap_or(Value::Null);
                }
            }
            return Value::Null;
        }
        "io.k8s.apimachinery.pkg.apis.meta.v1.Duration" => {
            let mut r = Reader::new(b);
            while let Some((n, f)) = r.next() {
                if let (1, Field::Varint(v)) = (n, f) {
                    return json!(format!("{}s", (v as i64) as f64 / 1e9));
                }
            }
            return Value::Null;
        }
        _ => {}
    }
    let descs = descriptors().get(name);
    let mut out = Map::new();
    let mut r = Reader::new(b);
    while let Some((n, f)) = r.next() {
        let Some(fd) = descs.and_then(|d| d.get(&n)) else {
            continue;
        };
        if fd.map {
            let Field::Bytes(entry) = f else { continue };
            let mut er = Reader::new(entry);
            let (mut k, mut v) = (String::new(), Value::Null);
            while let Some((en, ef)) = er.next() {
                match (en, &ef) {
                    (1, Field::Bytes(x)) => k = String::from_utf8_lossy(x).into_owned(),
                    (2, Field::Bytes(x)) if fd.kind == Kind::Message => {
                        v = decode_message(&fd.msg, x)
                    }
                    (2, _) => v = scalar(fd.kind, &ef),
                    _ => {}
                }
            }
            if v.is_null() && fd.kind == Kind::String {
                v = json!("");
            }
            let m = out.entry(fd.json.clone()).or_insert_with(|| json!({}));
            if let Some(m) = m.as_object_mut() {
                m.insert(k, v);
            }
            continue;
        }
        let v = match (&f, fd.kind) {
            (Field::Bytes(x), Kind::Message) => decode_message(&fd.msg, x),
            _ => scalar(fd.kind, &f),
        };
        if fd.repeated {
            let a = out.entry(fd.json.clone()).or_insert_with(|| json!([]));
            if let Some(a) = a.as_array_mut() {
                a.push(v);
            }
        } else if !v.is_null() && v != json!("") {
            out.insert(fd.json.clone(), v);
        }
    }
    Value::Object(out)
}

/// openapi definition name of a built-in kind.
fn definition(api_version: &str, kind: &str) -> String {
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    if kind == "DeleteOptions" {
        return "io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions".into();
    }
    if group == "apiextensions.k8s.io" {
        return format!("io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.{version}.{kind}");
    }
    let g = if group.is_empty() {
        "core"
    } else {
        group.split('.').next().unwrap_or(group)
    };
    format!("io.k8s.api.{g}.{version}.{kind}")
}

/// Decode a protobuf body (`k8s\0` + runtime.Unknown) into JSON.
pub fn decode(body: &[u8]) -> Result<Value, String> {
    let rest = body
        .strip_prefix(b"k8s\x00")
        .ok_or("missing protobuf magic")?;
    let mut r = Reader::new(rest);
    let (mut api_version, mut kind, mut raw): (String, String, &[u8]) =
        (String::new(), String::new(), &[]);
    while let Some((n, f)) = r.next() {
        match (n, f) {
            (1, Field::Bytes(tm)) => {
                let mut t = Reader::new(tm);
                while let Some((n, f)) = t.next() {
                    match (n, f) {
                        (1, Field::Bytes(x)) => {
                            api_version = String::from_utf8_lossy(x).into_owned()
                        }
                        (2, Field::Bytes(x)) => kind = String::from_utf8_lossy(x).into_owned(),
                        _ => {}
                    }
                }
            }
            (2, Field::Bytes(x)) => raw = x,
            _ => {}
        }
    }
    let def = definition(&api_version, &kind);
    if !descriptors().contains_key(&def) {
        return Err(format!(
            "protobuf bodies of {api_version}/{kind} are not supported by the emulator; send JSON"
        ));
    }
    let mut v = decode_message(&def, raw);
    if let Some(m) = v.as_object_mut() {
        m.insert("apiVersion".into(), json!(api_version));
        m.insert("kind".into(), json!(kind));
    }
    Ok(v)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn descriptors_resolve_json_names() {
        let d = descriptors();
        let pod_status = d.get("io.k8s.api.core.v1.PodStatus").unwrap();
        assert!(
            pod_status.values().any(|f| f.json == "podIPs"),
            "{pod_status:?}"
        );
        let c = d.get("io.k8s.api.core.v1.Container").unwrap();
        assert!(c.values().any(|f| f.json == "imagePullPolicy"));
    }
}
