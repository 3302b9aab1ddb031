//! Kubernetes protobuf (`application/vnd.kubernetes.protobuf`) for built-in kinds, both ways.
//!
//! kubectl's typed commands (`kubectl create deployment|namespace|configmap|job|...`,
//! `kubectl expose`) send protobuf and client-go does not fall back to JSON, so the emulator
//! decodes request bodies ([`decode`]). Clients that put protobuf first in `Accept` get it back,
//! as from kube-apiserver: GET of one object and lists are answered with [`encode`] /
//! [`encode_list`] (`k8s\0` + `runtime.Unknown`), watches with [`watch_frame`] frames; every
//! other response (writes, errors, CRDs, tables) stays JSON.
//! Field numbers come from `descriptors.txt`, generated from the prost code of the `k8s-pb`
//! crate by `gen_descriptors.py`; JSON field names come from the k8s-openapi schemas. The
//! encoder mirrors the decoder over the same table: fields in ascending tag order, proto2
//! (repeated fields unpacked), map entries sorted by key, JSON keys without a field dropped.
//! Embedded Go structs (`json:",inline"`: Probe's handler, Volume's source, the
//! LocalObjectReference of key selectors) are recognised from the schemas and flattened into
//! their parent's JSON object both ways.

use std::collections::HashMap;
use std::sync::OnceLock;

use crate::protowire::{self, Fields, Wire};
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
    /// Embedded struct: its fields sit in the parent's JSON object.
    inline: bool,
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

/// JSON name of a field the openapi definitions do not know, from prost's snake case
/// (`target_cpu_utilization_percentage`, `a_pi_group` for the proto name `aPIGroup`).
fn camel(snake: &str) -> String {
    let snake = match snake.strip_prefix("a_pi_") {
        Some(rest) => format!("api_{rest}"),
        None => snake.to_string(),
    };
    let mut out = String::new();
    for (i, w) in snake.split('_').enumerate() {
        match w {
            _ if i == 0 => out.push_str(w),
            "api" | "cidr" | "cpu" | "id" | "io" | "ip" | "tls" | "uid" | "url" => {
                out.push_str(&w.to_ascii_uppercase())
            }
            "ips" => out.push_str("IPs"),
            _ => {
                let mut c = w.chars();
                if let Some(f) = c.next() {
                    out.push(f.to_ascii_uppercase());
                    out.push_str(c.as_str());
                }
            }
        }
    }
    out
}

fn descriptors() -> &'static Descriptors {
    static D: OnceLock<Descriptors> = OnceLock::new();
    D.get_or_init(|| {
        let defs = crate::openapi::definitions();
        // prost spells acronyms differently (HttpGetAction for HTTPGetAction)
        let by_norm: HashMap<String, &Value> =
            defs.iter().map(|(k, v)| (normalize(k), v)).collect();
        // (message, [(tag, snake, kind, label, type)])
        let mut msgs: Vec<(&str, Vec<[&str; 5]>)> = Vec::new();
        for line in include_str!("descriptors.txt").lines() {
            let parts: Vec<&str> = line.split(' ').collect();
            match parts.as_slice() {
                ["M", name] => msgs.push((name, Vec::new())),
                ["F", tag, snake, kind, label, ty] => {
                    if let Some((_, fields)) = msgs.last_mut() {
                        fields.push([tag, snake, kind, label, ty]);
                    }
                }
                _ => {}
            }
        }
        // normalized property name -> JSON name, per message
        let mut props: HashMap<&str, HashMap<String, String>> = msgs
            .iter()
            .map(|(m, _)| {
                let p = defs
                    .get(*m)
                    .or_else(|| by_norm.get(&normalize(m)).copied())
                    .and_then(|d| d.get("properties"))
                    .and_then(Value::as_object)
                    .map(|p| p.keys().map(|k| (normalize(k), k.clone())).collect())
                    .unwrap_or_default();
                (*m, p)
            })
            .collect();
        let snakes: HashMap<&str, Vec<&str>> = msgs
            .iter()
            .map(|(m, fields)| (*m, fields.iter().map(|f| f[1]).collect()))
            .collect();
        // An embedded Go struct (`json:",inline"`: Probe.handler, Volume.volumeSource, ...) has
        // no property of its own and most of its fields are properties of the parent.
        let mut inline: Vec<(&str, &str, &str)> = Vec::new();
        for (msg, fields) in &msgs {
            let Some(p) = props.get(msg) else { continue };
            for [_, snake, kind, label, ty] in fields {
                if *kind != "message" || *label != "single" || p.contains_key(&normalize(snake)) {
                    continue;
                }
                let sub = snakes.get(ty).map(Vec::as_slice).unwrap_or_default();
                let hits = sub.iter().filter(|f| p.contains_key(&normalize(f))).count();
                if hits > 0 && hits * 2 >= sub.len() {
                    inline.push((msg, snake, ty));
                }
            }
        }
        // the embedded struct's fields are named by the parent's properties
        for (parent, _, ty) in &inline {
            let pp = props.get(parent).cloned().unwrap_or_default();
            props.entry(ty).or_default().extend(pp);
        }
        let mut out: Descriptors = HashMap::new();
        for (msg, fields) in &msgs {
            let p = props.get(msg);
            let entry = out.entry(msg.to_string()).or_default();
            for [tag, snake, kind, label, ty] in fields {
                let Ok(tag) = tag.parse::<u64>() else {
                    continue;
                };
                let json = p
                    .and_then(|p| p.get(&normalize(snake)))
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
                    inline: inline.contains(&(msg, snake, ty)),
                    msg: ty.to_string(),
                };
                entry.insert(tag, fd);
            }
        }
        out
    })
}

/// The fields of a message, in wire order; a malformed message ends early (the decoder is
/// lenient: what it cannot read is left out of the JSON).
fn fields(msg: &[u8]) -> impl Iterator<Item = (u32, Wire<'_>)> {
    Fields::new(msg).map_while(Result::ok)
}

fn scalar(kind: Kind, f: &Wire<'_>) -> Value {
    match (kind, f) {
        (Kind::String, Wire::Bytes(b)) => Value::String(String::from_utf8_lossy(b).into_owned()),
        (Kind::Bytes, Wire::Bytes(b)) => {
            json!(base64::engine::general_purpose::STANDARD.encode(b))
        }
        (Kind::Int32, Wire::Varint(v)) => json!(*v as i64 as i32),
        (Kind::Int64, Wire::Varint(v)) => json!(*v as i64),
        (Kind::Bool, Wire::Varint(v)) => json!(*v != 0),
        (Kind::Double, Wire::Fixed64(v)) => json!(f64::from_bits(*v)),
        _ => Value::Null,
    }
}

fn time(b: &[u8], micro: bool) -> Value {
    let Ok(Some((secs, nanos))) = protowire::time(b) else {
        return Value::Null;
    };
    let fmt = if micro {
        chrono::SecondsFormat::Micros
    } else {
        chrono::SecondsFormat::Secs
    };
    chrono::DateTime::from_timestamp(secs, nanos as u32)
        .map(|t| json!(t.to_rfc3339_opts(fmt, true)))
        .unwrap_or(Value::Null)
}

const SCHEMA_PROPS: &str =
    "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.JsonSchemaProps";

/// Messages whose JSON is one of several shapes: a schema or a list of schemas / a bool /
/// a list of strings (JSONSchemaPropsOr*), a list of strings (ExtraValue).
fn decode_union(name: &str, b: &[u8]) -> Value {
    let short = name.rsplit('.').next().unwrap_or_default();
    let (mut schema, mut list, mut allows) = (None, Vec::new(), false);
    for (n, f) in fields(b) {
        match (short, n, f) {
            ("ExtraValue", 1, Wire::Bytes(x))
            | ("JsonSchemaPropsOrStringArray", 2, Wire::Bytes(x)) => {
                list.push(json!(String::from_utf8_lossy(x)))
            }
            ("JsonSchemaPropsOrArray", 2, Wire::Bytes(x)) => {
                list.push(decode_message(SCHEMA_PROPS, x))
            }
            ("JsonSchemaPropsOrBool", 1, Wire::Varint(v)) => allows = v != 0,
            ("JsonSchemaPropsOrBool", 2, Wire::Bytes(x)) | (_, 1, Wire::Bytes(x)) => {
                schema = Some(decode_message(SCHEMA_PROPS, x))
            }
            _ => {}
        }
    }
    match short {
        "ExtraValue" => Value::Array(list),
        "JsonSchemaPropsOrBool" => schema.unwrap_or(json!(allows)),
        _ if !list.is_empty() => Value::Array(list),
        _ => schema.unwrap_or(Value::Null),
    }
}

fn encode_union(name: &str, v: &Value, out: &mut Vec<u8>) -> Result<(), String> {
    let short = name.rsplit('.').next().unwrap_or_default();
    let string = |x: &Value| {
        x.as_str()
            .map(str::to_string)
            .ok_or_else(|| format!("expected a string, got {x}"))
    };
    match (short, v) {
        ("ExtraValue", Value::Array(a)) => {
            for x in a {
                put_len(out, 1, string(x)?.as_bytes());
            }
        }
        ("JsonSchemaPropsOrStringArray", Value::Array(a)) => {
            for x in a {
                put_len(out, 2, string(x)?.as_bytes());
            }
        }
        ("JsonSchemaPropsOrArray", Value::Array(a)) => {
            for x in a {
                encode_value(out, 2, Kind::Message, SCHEMA_PROPS, x)?;
            }
        }
        ("JsonSchemaPropsOrBool", Value::Bool(b)) => put_int(out, 1, i64::from(*b)),
        ("JsonSchemaPropsOrBool", Value::Object(_)) => {
            put_int(out, 1, 1);
            encode_value(out, 2, Kind::Message, SCHEMA_PROPS, v)?;
        }
        (s, Value::Object(_)) if s != "ExtraValue" => {
            encode_value(out, 1, Kind::Message, SCHEMA_PROPS, v)?
        }
        _ => return Err(format!("unexpected {v} for {short}")),
    }
    Ok(())
}

fn decode_message(name: &str, b: &[u8]) -> Value {
    match name {
        "io.k8s.apimachinery.pkg.apis.meta.v1.Time" => return time(b, false),
        "io.k8s.apimachinery.pkg.apis.meta.v1.MicroTime" => return time(b, true),
        "io.k8s.apimachinery.pkg.util.intstr.IntOrString" => {
            let (mut ty, mut i, mut s) = (0u64, 0i64, String::new());
            for (n, f) in fields(b) {
                match (n, f) {
                    (1, Wire::Varint(v)) => ty = v,
                    (2, Wire::Varint(v)) => i = v as i64 as i32 as i64,
                    (3, Wire::Bytes(x)) => s = String::from_utf8_lossy(x).into_owned(),
                    _ => {}
                }
            }
            return if ty == 1 { json!(s) } else { json!(i) };
        }
        "io.k8s.apimachinery.pkg.api.resource.Quantity" => {
            for (n, f) in fields(b) {
                if let (1, Wire::Bytes(x)) = (n, f) {
                    return Value::String(String::from_utf8_lossy(x).into_owned());
                }
            }
            return Value::Null;
        }
        "io.k8s.apimachinery.pkg.runtime.RawExtension"
        | "io.k8s.apimachinery.pkg.apis.meta.v1.FieldsV1"
        | "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.Json" => {
            for (n, f) in fields(b) {
                if let (1, Wire::Bytes(x)) = (n, f) {
                    return serde_json::from_slice(x).unwrap_or(Value::Null);
                }
            }
            return Value::Null;
        }
        "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.JsonSchemaPropsOrArray"
        | "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.JsonSchemaPropsOrBool"
        | "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.JsonSchemaPropsOrStringArray"
        | "io.k8s.api.authentication.v1.ExtraValue"
        | "io.k8s.api.authorization.v1.ExtraValue" => return decode_union(name, b),
        "io.k8s.apimachinery.pkg.apis.meta.v1.Duration" => {
            for (n, f) in fields(b) {
                if let (1, Wire::Varint(v)) = (n, f) {
                    return json!(format!("{}s", (v as i64) as f64 / 1e9));
                }
            }
            return Value::Null;
        }
        _ => {}
    }
    let descs = descriptors().get(name);
    let mut out = Map::new();
    for (n, f) in fields(b) {
        let Some(fd) = descs.and_then(|d| d.get(&u64::from(n))) else {
            continue;
        };
        if fd.map {
            let Wire::Bytes(entry) = f else { continue };
            let (mut k, mut v) = (String::new(), Value::Null);
            for (en, ef) in fields(entry) {
                match (en, &ef) {
                    (1, Wire::Bytes(x)) => k = String::from_utf8_lossy(x).into_owned(),
                    (2, Wire::Bytes(x)) if fd.kind == Kind::Message => {
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
            (Wire::Bytes(x), Kind::Message) => decode_message(&fd.msg, x),
            _ => scalar(fd.kind, &f),
        };
        if fd.inline {
            if let Value::Object(m) = v {
                out.extend(m);
            }
        } else if fd.repeated {
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
    if matches!(kind, "DeleteOptions" | "Status" | "WatchEvent") {
        return format!("io.k8s.apimachinery.pkg.apis.meta.v1.{kind}");
    }
    if group == "meta.k8s.io" {
        return format!("io.k8s.apimachinery.pkg.apis.meta.{version}.{kind}");
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
    let protowire::Envelope {
        api_version,
        kind,
        raw,
    } = protowire::envelope(body).map_err(|e| e.to_string())?;
    let def = definition(api_version, kind);
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

/// A message's fields by JSON name (the reverse of [`descriptors`]), and its inline fields.
#[derive(Default)]
struct ReverseMsg {
    by_json: HashMap<&'static str, (u64, &'static FieldDesc)>,
    inline: Vec<(u64, &'static FieldDesc)>,
}

fn reverse() -> &'static HashMap<&'static str, ReverseMsg> {
    static R: OnceLock<HashMap<&'static str, ReverseMsg>> = OnceLock::new();
    R.get_or_init(|| {
        descriptors()
            .iter()
            .map(|(msg, fields)| {
                let mut r = ReverseMsg::default();
                for (tag, fd) in fields {
                    if fd.inline {
                        r.inline.push((*tag, fd));
                    } else {
                        r.by_json.insert(fd.json.as_str(), (*tag, fd));
                    }
                }
                (msg.as_str(), r)
            })
            .collect()
    })
}

/// Is there a protobuf message for this built-in kind?
pub fn supports(api_version: &str, kind: &str) -> bool {
    descriptors().contains_key(&definition(api_version, kind))
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_key(out: &mut Vec<u8>, tag: u64, wire: u64) {
    put_varint(out, (tag << 3) | wire);
}

fn put_len(out: &mut Vec<u8>, tag: u64, b: &[u8]) {
    put_key(out, tag, 2);
    put_varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

fn put_int(out: &mut Vec<u8>, tag: u64, v: i64) {
    put_key(out, tag, 0);
    // negative values are sign-extended to 10 bytes, as Go writes int32/int64
    put_varint(out, v as u64);
}

fn int_of(v: &Value) -> Option<i64> {
    v.as_i64().or_else(|| {
        v.as_f64()
            .filter(|f| f.fract() == 0.0 && *f >= i64::MIN as f64 && *f <= i64::MAX as f64)
            .map(|f| f as i64)
    })
}

/// Go duration syntax (`1h2m3.5s`, `300ms`, `-1.5h`) to nanoseconds
/// (`addon_common::duration`, Go's `time.ParseDuration` rules).
fn parse_duration(s: &str) -> Option<i64> {
    addon_common::duration::parse_go_duration_nanos(s).ok()
}

fn encode_time(v: &Value, micro: bool, out: &mut Vec<u8>) -> Result<(), String> {
    let s = v
        .as_str()
        .ok_or_else(|| format!("expected a time string, got {v}"))?;
    if s.is_empty() {
        return Ok(());
    }
    let t = chrono::DateTime::parse_from_rfc3339(s).map_err(|e| format!("time {s:?}: {e}"))?;
    let secs = t.timestamp();
    let mut nanos = t.timestamp_subsec_nanos();
    if micro {
        nanos -= nanos % 1000;
    }
    if secs != 0 {
        put_int(out, 1, secs);
    }
    if nanos != 0 {
        put_int(out, 2, i64::from(nanos));
    }
    Ok(())
}

/// One value of a field (one element of a repeated field, the value of a map entry).
fn encode_value(
    out: &mut Vec<u8>,
    tag: u64,
    kind: Kind,
    msg: &str,
    v: &Value,
) -> Result<(), String> {
    let mismatch = || format!("expected {kind:?}, got {v}");
    match kind {
        Kind::String => put_len(out, tag, v.as_str().ok_or_else(mismatch)?.as_bytes()),
        Kind::Int32 => {
            let i = int_of(v)
                .and_then(|i| i32::try_from(i).ok())
                .ok_or_else(mismatch)?;
            put_int(out, tag, i64::from(i));
        }
        Kind::Int64 => put_int(out, tag, int_of(v).ok_or_else(mismatch)?),
        Kind::Bool => {
            put_key(out, tag, 0);
            put_varint(out, u64::from(v.as_bool().ok_or_else(mismatch)?));
        }
        Kind::Double => {
            put_key(out, tag, 1);
            out.extend_from_slice(&v.as_f64().ok_or_else(mismatch)?.to_bits().to_le_bytes());
        }
        Kind::Bytes => {
            let b = base64::engine::general_purpose::STANDARD
                .decode(v.as_str().ok_or_else(mismatch)?)
                .map_err(|e| format!("invalid base64: {e}"))?;
            put_len(out, tag, &b);
        }
        Kind::Message => {
            let mut m = Vec::new();
            encode_message(msg, v, &mut m)?;
            put_len(out, tag, &m);
        }
    }
    Ok(())
}

fn encode_field(out: &mut Vec<u8>, tag: u64, fd: &FieldDesc, v: &Value) -> Result<(), String> {
    if fd.map {
        let m = v
            .as_object()
            .ok_or_else(|| format!("expected a map, got {v}"))?;
        let mut keys: Vec<&String> = m.keys().collect();
        keys.sort();
        let mut entry = Vec::new();
        for k in keys {
            let Some(val) = m.get(k).filter(|x| !x.is_null()) else {
                continue;
            };
            entry.clear();
            put_len(&mut entry, 1, k.as_bytes());
            encode_value(&mut entry, 2, fd.kind, &fd.msg, val).map_err(|e| format!("{k}: {e}"))?;
            put_len(out, tag, &entry);
        }
    } else if fd.repeated {
        let a = v
            .as_array()
            .ok_or_else(|| format!("expected a list, got {v}"))?;
        for (i, x) in a.iter().enumerate().filter(|(_, x)| !x.is_null()) {
            encode_value(out, tag, fd.kind, &fd.msg, x).map_err(|e| format!("[{i}]: {e}"))?;
        }
    } else {
        encode_value(out, tag, fd.kind, &fd.msg, v)?;
    }
    Ok(())
}

/// Append the message `name` built from `v` (without a length prefix).
fn encode_message(name: &str, v: &Value, out: &mut Vec<u8>) -> Result<(), String> {
    match name {
        "io.k8s.apimachinery.pkg.apis.meta.v1.Time" => return encode_time(v, false, out),
        "io.k8s.apimachinery.pkg.apis.meta.v1.MicroTime" => return encode_time(v, true, out),
        "io.k8s.apimachinery.pkg.util.intstr.IntOrString" => {
            match v {
                Value::String(s) => {
                    put_int(out, 1, 1);
                    put_len(out, 3, s.as_bytes());
                }
                _ => {
                    let i = int_of(v)
                        .and_then(|i| i32::try_from(i).ok())
                        .ok_or_else(|| format!("expected an int or string, got {v}"))?;
                    put_int(out, 1, 0);
                    put_int(out, 2, i64::from(i));
                }
            }
            return Ok(());
        }
        "io.k8s.apimachinery.pkg.api.resource.Quantity" => {
            match v {
                Value::String(s) => put_len(out, 1, s.as_bytes()),
                Value::Number(n) => put_len(out, 1, n.to_string().as_bytes()),
                _ => return Err(format!("expected a quantity, got {v}")),
            }
            return Ok(());
        }
        "io.k8s.apimachinery.pkg.runtime.RawExtension"
        | "io.k8s.apimachinery.pkg.apis.meta.v1.FieldsV1"
        | "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.Json" => {
            let raw = serde_json::to_vec(v).map_err(|e| e.to_string())?;
            put_len(out, 1, &raw);
            return Ok(());
        }
        "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.JsonSchemaPropsOrArray"
        | "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.JsonSchemaPropsOrBool"
        | "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.JsonSchemaPropsOrStringArray"
        | "io.k8s.api.authentication.v1.ExtraValue"
        | "io.k8s.api.authorization.v1.ExtraValue" => return encode_union(name, v, out),
        "io.k8s.apimachinery.pkg.apis.meta.v1.Duration" => {
            let s = v
                .as_str()
                .ok_or_else(|| format!("expected a duration, got {v}"))?;
            let ns = parse_duration(s).ok_or_else(|| format!("invalid duration {s:?}"))?;
            put_int(out, 1, ns);
            return Ok(());
        }
        _ => {}
    }
    let fields = reverse()
        .get(name)
        .ok_or_else(|| format!("no protobuf message {name}"))?;
    let obj = v
        .as_object()
        .ok_or_else(|| format!("expected an object for {name}, got {v}"))?;
    let mut present: Vec<(u64, &FieldDesc, &Value)> = obj
        .iter()
        .filter(|(_, x)| !x.is_null())
        .filter_map(|(k, x)| {
            fields
                .by_json
                .get(k.as_str())
                .map(|(tag, fd)| (*tag, *fd, x))
        })
        .collect();
    // embedded structs read their fields from this same object (always written, as Go does)
    present.extend(fields.inline.iter().map(|(tag, fd)| (*tag, *fd, v)));
    present.sort_by_key(|(tag, _, _)| *tag);
    for (tag, fd, x) in present {
        encode_field(out, tag, fd, x).map_err(|e| format!("{}: {e}", fd.json))?;
    }
    Ok(())
}

fn str_field<'a>(obj: &'a Value, k: &str) -> &'a str {
    obj.get(k).and_then(Value::as_str).unwrap_or_default()
}

/// `k8s\0` + runtime.Unknown{typeMeta, raw}.
fn envelope(api_version: &str, kind: &str, raw: &[u8]) -> Vec<u8> {
    let mut tm = Vec::with_capacity(api_version.len() + kind.len() + 4);
    put_len(&mut tm, 1, api_version.as_bytes());
    put_len(&mut tm, 2, kind.as_bytes());
    let mut out = Vec::with_capacity(raw.len() + tm.len() + 16);
    out.extend_from_slice(b"k8s\x00");
    put_len(&mut out, 1, &tm);
    put_len(&mut out, 2, raw);
    out
}

fn definition_of(api_version: &str, kind: &str) -> Result<String, String> {
    let def = definition(api_version, kind);
    if descriptors().contains_key(&def) {
        Ok(def)
    } else {
        Err(format!(
            "{api_version}/{kind} has no protobuf encoding in the emulator"
        ))
    }
}

/// Encode a built-in object (its `apiVersion` and `kind` say which) as kube-apiserver does:
/// `k8s\0` followed by a runtime.Unknown {1: TypeMeta{1: apiVersion, 2: kind}, 2: raw message}.
/// Err for kinds without a protobuf message (custom resources) and for values that do not fit
/// their field.
pub fn encode(obj: &Value) -> Result<Vec<u8>, String> {
    let (av, kind) = (str_field(obj, "apiVersion"), str_field(obj, "kind"));
    let def = definition_of(av, kind)?;
    let mut raw = Vec::with_capacity(512);
    encode_message(&def, obj, &mut raw)?;
    Ok(envelope(av, kind, &raw))
}

/// Encode a list without assembling it as one JSON value first: the same bytes as [`encode`]
/// of `{"apiVersion", "kind", "metadata", "items"}`.
pub fn encode_list<'a>(
    api_version: &str,
    list_kind: &str,
    metadata: &Value,
    items: impl IntoIterator<Item = &'a Value>,
) -> Result<Vec<u8>, String> {
    let def = definition_of(api_version, list_kind)?;
    let fields = reverse()
        .get(def.as_str())
        .ok_or_else(|| format!("no protobuf message {def}"))?;
    let mut raw = Vec::with_capacity(4096);
    if let Some((tag, fd)) = fields.by_json.get("metadata")
        && !metadata.is_null()
    {
        encode_field(&mut raw, *tag, fd, metadata).map_err(|e| format!("metadata: {e}"))?;
    }
    let (tag, fd) = fields
        .by_json
        .get("items")
        .ok_or_else(|| format!("{def} has no items"))?;
    let mut item = Vec::with_capacity(1024);
    for (i, x) in items.into_iter().enumerate() {
        item.clear();
        encode_message(&fd.msg, x, &mut item).map_err(|e| format!("items[{i}]: {e}"))?;
        put_len(&mut raw, *tag, &item);
    }
    Ok(envelope(api_version, list_kind, &raw))
}

/// One protobuf watch frame as kube-apiserver streams them
/// (`application/vnd.kubernetes.protobuf;stream=watch`): a 4-byte big-endian length, then a
/// meta.v1.WatchEvent written without envelope, {1: type, 2: RawExtension{1: [`encode`]`(obj)`}}.
pub fn watch_frame(event_type: &str, obj: &Value) -> Result<Vec<u8>, String> {
    let inner = encode(obj)?;
    let mut ext = Vec::with_capacity(inner.len() + 8);
    put_len(&mut ext, 1, &inner);
    let mut ev = Vec::with_capacity(ext.len() + event_type.len() + 12);
    ev.extend_from_slice(&[0; 4]);
    put_len(&mut ev, 1, event_type.as_bytes());
    put_len(&mut ev, 2, &ext);
    let len = u32::try_from(ev.len() - 4).map_err(|_| "watch event too large".to_string())?;
    ev[..4].copy_from_slice(&len.to_be_bytes());
    Ok(ev)
}

/// Split protobuf watch frames: (type, object decoded with [`decode`]) per complete frame;
/// the bytes of an incomplete last frame stay in `buf`.
pub fn decode_watch_frames(buf: &mut Vec<u8>) -> Result<Vec<(String, Value)>, String> {
    let (frames, used) = protowire::frames(buf);
    let events = frames
        .into_iter()
        .map(|frame| {
            let ev = protowire::watch_event(frame).map_err(|e| e.to_string())?;
            Ok((ev.type_.to_string(), decode(ev.object)?))
        })
        .collect::<Result<Vec<_>, String>>()?;
    buf.drain(..used);
    Ok(events)
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
        let json_of = |msg: &str, tag: u64| d.get(msg).unwrap().get(&tag).unwrap().json.as_str();
        // acronyms: via the parent of an embedded struct, via a definition spelled differently,
        // or from prost's snake case
        assert_eq!(
            json_of("io.k8s.api.core.v1.VolumeSource", 16),
            "downwardAPI"
        );
        assert_eq!(json_of("io.k8s.api.core.v1.HttpGetAction", 1), "path");
        assert_eq!(json_of("io.k8s.api.storage.v1.CSINodeDriver", 2), "nodeID");
        assert_eq!(
            json_of(
                "io.k8s.api.networking.v1.IngressClassParametersReference",
                1
            ),
            "apiGroup"
        );
        assert_eq!(
            json_of("io.k8s.api.autoscaling.v1.HorizontalPodAutoscalerSpec", 4),
            "targetCPUUtilizationPercentage"
        );
        let inline: Vec<String> = d
            .iter()
            .flat_map(|(m, f)| {
                f.values()
                    .filter(|f| f.inline)
                    .map(move |f| format!("{m}.{}", f.json))
            })
            .collect();
        for want in [
            "io.k8s.api.core.v1.Probe.handler",
            "io.k8s.api.core.v1.Volume.volumeSource",
            "io.k8s.api.core.v1.ConfigMapKeySelector.localObjectReference",
            "io.k8s.api.core.v1.PersistentVolumeSpec.persistentVolumeSource",
            "io.k8s.api.networking.v1.IngressRule.ingressRuleValue",
        ] {
            assert!(
                inline.iter().any(|i| i == want),
                "{want} not inline: {inline:?}"
            );
        }
        assert!(
            !inline.iter().any(|i| i.contains("PodStatus")),
            "{inline:?}"
        );
    }

    fn pod() -> Value {
        json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": "web-0",
                "namespace": "default",
                "uid": "0b9f1c9e-1111-4222-8333-944455556666",
                "resourceVersion": "42",
                "generation": 1,
                "creationTimestamp": "2024-05-06T07:08:09Z",
                "deletionTimestamp": "2024-05-06T08:00:00Z",
                "deletionGracePeriodSeconds": 30,
                "labels": {"app": "web", "tier": "frontend", "empty": ""},
                "annotations": {"note": "x", "a.example.com/b": "{\"k\":1}"},
                "finalizers": ["example.com/keep"],
                "ownerReferences": [{
                    "apiVersion": "apps/v1",
                    "kind": "StatefulSet",
                    "name": "web",
                    "uid": "7a7a7a7a-0000-4000-8000-000000000001",
                    "controller": true,
                    "blockOwnerDeletion": true
                }],
                "managedFields": [{
                    "manager": "kubectl",
                    "operation": "Update",
                    "apiVersion": "v1",
                    "time": "2024-05-06T07:08:09Z",
                    "fieldsType": "FieldsV1",
                    "fieldsV1": {"f:metadata": {"f:labels": {".": {}, "f:app": {}}}}
                }]
            },
            "spec": {
                "initContainers": [{
                    "name": "init",
                    "image": "busybox:1",
                    "command": ["sh", "-c", "true"]
                }],
                "containers": [
                    {
                        "name": "app",
                        "image": "nginx:1.27",
                        "imagePullPolicy": "IfNotPresent",
                        "args": ["--port", "8080"],
                        "env": [
                            {"name": "MODE", "value": "prod"},
                            {"name": "POD_IP", "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "status.podIP"}}},
                            {"name": "PASS", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "password", "optional": true}}}
                        ],
                        "envFrom": [{"configMapRef": {"name": "settings"}, "prefix": "S_"}],
                        "volumeMounts": [{"name": "data", "mountPath": "/data"}, {"name": "conf", "mountPath": "/etc/conf", "readOnly": true}],
                        "ports": [
                            {"name": "http", "containerPort": 8080, "protocol": "TCP"},
                            {"name": "metrics", "containerPort": 9090, "protocol": "TCP"}
                        ],
                        "resources": {
                            "requests": {"cpu": "100m", "memory": "128Mi"},
                            "limits": {"cpu": "1", "memory": "1Gi"}
                        },
                        "livenessProbe": {
                            "httpGet": {"path": "/healthz", "port": 8080, "scheme": "HTTP"},
                            "initialDelaySeconds": 5,
                            "periodSeconds": 10,
                            "timeoutSeconds": 1,
                            "successThreshold": 1,
                            "failureThreshold": 3
                        },
                        "readinessProbe": {
                            "httpGet": {"path": "/ready", "port": "http"},
                            "periodSeconds": 2
                        },
                        "startupProbe": {"exec": {"command": ["cat", "/tmp/ok"]}},
                        "securityContext": {},
                        "terminationMessagePath": "/dev/termination-log",
                        "terminationMessagePolicy": "File"
                    },
                    {
                        "name": "sidecar",
                        "image": "busybox:1",
                        "stdin": false,
                        "tty": false
                    }
                ],
                "volumes": [
                    {"name": "data", "emptyDir": {}},
                    {"name": "conf", "configMap": {"name": "settings", "defaultMode": 420, "items": [{"key": "a", "path": "a.conf"}]}},
                    {"name": "info", "downwardAPI": {"items": [{"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}}]}},
                    {"name": "pvc", "persistentVolumeClaim": {"claimName": "data-web-0"}}
                ],
                "restartPolicy": "Always",
                "terminationGracePeriodSeconds": 30,
                "dnsPolicy": "ClusterFirst",
                "nodeName": "node-1",
                "serviceAccountName": "default",
                "priority": 0,
                "tolerations": [{"key": "k", "operator": "Exists", "effect": "NoSchedule", "tolerationSeconds": 300}],
                "readinessGates": [{"conditionType": "example.com/ready"}]
            },
            "status": {
                "phase": "Running",
                "conditions": [
                    {"type": "Ready", "status": "True", "lastTransitionTime": "2024-05-06T07:09:00Z"},
                    {"type": "PodScheduled", "status": "True", "lastTransitionTime": "2024-05-06T07:08:10Z"}
                ],
                "hostIP": "10.0.0.1",
                "podIP": "10.244.0.5",
                "podIPs": [{"ip": "10.244.0.5"}, {"ip": "fd00::5"}],
                "startTime": "2024-05-06T07:08:10Z",
                "containerStatuses": [{
                    "name": "app",
                    "ready": true,
                    "started": true,
                    "restartCount": 0,
                    "image": "nginx:1.27",
                    "imageID": "docker-pullable://nginx@sha256:0123abcd",
                    "containerID": "containerd://abc",
                    "state": {"running": {"startedAt": "2024-05-06T07:08:30Z"}}
                }],
                "qosClass": "Burstable"
            }
        })
    }

    #[test]
    fn pod_round_trips() {
        let p = pod();
        let b = encode(&p).unwrap();
        let back = decode(&b).unwrap();
        // the decoder drops empty strings of singular fields, not of map values
        assert_eq!(back, p);
    }

    #[test]
    fn minimal_pod_bytes_and_tag_order() {
        let b =
            encode(&json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "a"}})).unwrap();
        let mut want = b"k8s\x00".to_vec();
        want.extend_from_slice(&[0x0a, 9, 0x0a, 2, b'v', b'1', 0x12, 3, b'P', b'o', b'd']);
        want.extend_from_slice(&[0x12, 5, 0x0a, 3, 0x0a, 1, b'a']);
        assert_eq!(b, want);
        // metadata (1) before spec (2) before status (3), whatever the JSON order;
        // unknown keys and nulls dropped; an empty nested object is written
        let b = encode(
            &json!({"status": {"phase": "Pending"}, "apiVersion": "v1", "kind": "Pod",
                               "bogus": 1, "spec": {"nodeName": null, "securityContext": {}},
                               "metadata": {"name": "a"}}),
        )
        .unwrap();
        let raw_at = b.len() - 2 - 5 - 4 - 11;
        assert_eq!(
            &b[raw_at..],
            &[
                0x12, 20, 0x0a, 3, 0x0a, 1, b'a', 0x12, 2, 0x72, 0, 0x1a, 9, 0x0a, 7, b'P', b'e',
                b'n', b'd', b'i', b'n', b'g'
            ]
        );
    }

    #[test]
    fn scalars_are_written_as_go_writes_them() {
        let mut out = Vec::new();
        encode_value(&mut out, 1, Kind::Int32, "", &json!(-1)).unwrap();
        assert_eq!(
            out,
            [
                0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01
            ]
        );
        out.clear();
        encode_value(&mut out, 2, Kind::Double, "", &json!(0.5)).unwrap();
        assert_eq!(out, [0x11, 0, 0, 0, 0, 0, 0, 0xe0, 0x3f]);
        out.clear();
        encode_value(&mut out, 3, Kind::Bool, "", &json!(true)).unwrap();
        assert_eq!(out, [0x18, 1]);
        out.clear();
        let q = "io.k8s.apimachinery.pkg.api.resource.Quantity";
        encode_value(&mut out, 1, Kind::Message, q, &json!(2)).unwrap();
        assert_eq!(out, [0x0a, 3, 0x0a, 1, b'2']);
        out.clear();
        let ios = "io.k8s.apimachinery.pkg.util.intstr.IntOrString";
        encode_value(&mut out, 1, Kind::Message, ios, &json!("http")).unwrap();
        assert_eq!(out, [0x0a, 8, 0x08, 1, 0x1a, 4, b'h', b't', b't', b'p']);
        assert!(encode_value(&mut out, 1, Kind::Int32, "", &json!(1u64 << 40)).is_err());
        assert!(encode_value(&mut out, 1, Kind::String, "", &json!(1)).is_err());
        assert_eq!(parse_duration("1h2m3.5s"), Some(3_723_500_000_000));
        assert_eq!(parse_duration("-300ms"), Some(-300_000_000));
        assert_eq!(parse_duration("0"), Some(0));
        assert_eq!(parse_duration("5x"), None);
    }

    #[test]
    fn maps_bytes_micro_times_and_errors() {
        let s = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"},
                       "type": "Opaque", "data": {"b": "AAEC", "a": "aGk="}});
        assert_eq!(decode(&encode(&s).unwrap()).unwrap(), s);
        let lease = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                           "metadata": {"name": "l"},
                           "spec": {"holderIdentity": "me", "leaseDurationSeconds": 15,
                                    "renewTime": "2024-05-06T07:08:09.123456Z"}});
        assert_eq!(decode(&encode(&lease).unwrap()).unwrap(), lease);
        let status = json!({"apiVersion": "v1", "kind": "Status", "metadata": {},
                            "status": "Failure", "message": "gone", "reason": "Expired",
                            "code": 410, "details": {"causes": [{"reason": "R"}], "retryAfterSeconds": 1}});
        assert_eq!(decode(&encode(&status).unwrap()).unwrap(), status);
        let w =
            json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}});
        assert!(encode(&w).is_err(), "custom resources stay JSON");
        assert!(!supports("example.com/v1", "Widget"));
        assert!(supports("apps/v1", "DeploymentList"));
        let bad = json!({"apiVersion": "v1", "kind": "Pod", "spec": {"priority": "high"}});
        assert!(encode(&bad).unwrap_err().contains("spec: priority"));
    }

    #[test]
    fn crd_schemas_round_trip() {
        let crd = json!({
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
            "metadata": {"name": "widgets.example.com"},
            "spec": {
                "group": "example.com",
                "scope": "Namespaced",
                "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "shortNames": ["wd"]},
                "versions": [{
                    "name": "v1", "served": true, "storage": true,
                    "subresources": {"status": {}, "scale": {"specReplicasPath": ".spec.replicas", "statusReplicasPath": ".status.replicas"}},
                    "schema": {"openAPIV3Schema": {
                        "type": "object",
                        "required": ["spec"],
                        "properties": {
                            "spec": {
                                "type": "object",
                                "properties": {
                                    "replicas": {"type": "integer", "minimum": 0.0, "maximum": 100.0, "default": 1},
                                    "size": {"type": "string", "enum": ["S", "M"]},
                                    "port": {"x-kubernetes-int-or-string": true},
                                    "tags": {"type": "array", "items": {"type": "string"}},
                                    "tuple": {"type": "array", "items": [{"type": "string"}, {"type": "integer"}]},
                                    "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                                    "closed": {"type": "object", "additionalProperties": false},
                                    "extra": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                                    "dep": {"type": "object", "dependencies": {"a": ["b", "c"], "d": {"required": ["e"]}}}
                                },
                                "x-kubernetes-validations": [{"rule": "self.replicas >= 0", "message": "m"}]
                            }
                        }
                    }}
                }]
            }
        });
        assert_eq!(decode(&encode(&crd).unwrap()).unwrap(), crd);
        let tr = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
                        "metadata": {}, "spec": {"token": "t"},
                        "status": {"authenticated": true,
                                   "user": {"username": "u", "extra": {"k": ["a", "b"]}}}});
        assert_eq!(decode(&encode(&tr).unwrap()).unwrap(), tr);
    }

    #[test]
    fn pod_list_round_trips() {
        let mut a = pod();
        let mut b = pod();
        for p in [&mut a, &mut b] {
            let m = p.as_object_mut().unwrap();
            m.remove("apiVersion");
            m.remove("kind");
        }
        b["metadata"]["name"] = json!("web-1");
        let list = json!({"apiVersion": "v1", "kind": "PodList",
                          "metadata": {"resourceVersion": "77", "continue": "abc", "remainingItemCount": 3},
                          "items": [a, b]});
        let bytes = encode(&list).unwrap();
        // list items carry no apiVersion/kind in protobuf (as with kube-apiserver)
        assert_eq!(decode(&bytes).unwrap(), list);
        let items = list["items"].as_array().unwrap();
        assert_eq!(
            encode_list("v1", "PodList", &list["metadata"], items).unwrap(),
            bytes,
            "encode_list writes what encode writes"
        );
    }

    #[test]
    fn watch_frames_nest_the_enveloped_object() {
        let p = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "a"}});
        let f = watch_frame("ADDED", &p).unwrap();
        let inner = encode(&p).unwrap();
        assert_eq!(&f[..4], &u32::try_from(f.len() - 4).unwrap().to_be_bytes());
        assert_eq!(&f[4..11], &[0x0a, 5, b'A', b'D', b'D', b'E', b'D']);
        assert_eq!(f[11], 0x12);
        assert_eq!(&f[f.len() - inner.len()..], inner.as_slice());
        let mut buf = f.clone();
        buf.extend_from_slice(&watch_frame("DELETED", &p).unwrap());
        buf.extend_from_slice(&f[..6]);
        let evs = decode_watch_frames(&mut buf).unwrap();
        assert_eq!(evs.len(), 2);
        assert_eq!(evs[0], ("ADDED".to_string(), p.clone()));
        assert_eq!(evs[1].0, "DELETED");
        assert_eq!(buf.len(), 6, "the partial frame stays buffered");
    }
}
