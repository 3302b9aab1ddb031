//! Reading Kubernetes' protobuf encoding (`application/vnd.kubernetes.protobuf`) without
//! generated code: the wire format's fields, the `k8s\0` + `runtime.Unknown` envelope of an
//! object, and the length-prefixed frames of a protobuf watch.
//!
//! The emulated API server's protobuf encoder and decoder (`crate::proto`) are built on it,
//! and so are its tests' readings of protobuf responses. (It lived in addon-common while
//! tapp-controller read its pod watch in protobuf; the controllers read JSON only now.)

use std::fmt;

/// The media type of Kubernetes' protobuf encoding.
pub const MEDIA_TYPE: &str = "application/vnd.kubernetes.protobuf";

/// The `Accept` header of a client that prefers protobuf and takes JSON (what a server
/// answers for kinds it cannot encode in protobuf, such as custom resources).
pub const ACCEPT_PROTOBUF_OR_JSON: &str = "application/vnd.kubernetes.protobuf, application/json";

const MAGIC: &[u8] = b"k8s\x00";

/// Malformed protobuf input.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("malformed protobuf: {0}")]
pub struct WireError(pub &'static str);

/// The value of one field as the wire carries it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wire<'a> {
    /// Wire type 0: int32, int64, uint*, bool, enum.
    Varint(u64),
    /// Wire type 1: fixed64, double.
    Fixed64(u64),
    /// Wire type 2: string, bytes, an embedded message, a map entry.
    Bytes(&'a [u8]),
    /// Wire type 5: fixed32, float.
    Fixed32(u32),
}

impl<'a> Wire<'a> {
    /// A length-delimited value as UTF-8 text.
    pub fn str(self) -> Result<&'a str, WireError> {
        match self {
            Wire::Bytes(b) => std::str::from_utf8(b).map_err(|_| WireError("invalid UTF-8")),
            _ => Err(WireError("expected a length-delimited string")),
        }
    }

    /// A length-delimited value (an embedded message, bytes).
    pub fn bytes(self) -> Result<&'a [u8], WireError> {
        match self {
            Wire::Bytes(b) => Ok(b),
            _ => Err(WireError("expected a length-delimited field")),
        }
    }

    /// A varint as a signed 64-bit integer (int64, or int32 sign-extended on the wire).
    pub fn int(self) -> Result<i64, WireError> {
        match self {
            Wire::Varint(v) => Ok(v as i64),
            _ => Err(WireError("expected a varint")),
        }
    }

    /// A varint as a bool.
    pub fn bool(self) -> Result<bool, WireError> {
        match self {
            Wire::Varint(v) => Ok(v != 0),
            _ => Err(WireError("expected a varint")),
        }
    }
}

/// The fields of one message, in wire order: `(field number, value)`.
#[derive(Clone, Debug)]
pub struct Fields<'a> {
    buf: &'a [u8],
}

impl<'a> Fields<'a> {
    /// The fields of the message `buf` holds.
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf }
    }

    fn varint(&mut self) -> Result<u64, WireError> {
        let mut v: u64 = 0;
        for (i, &b) in self.buf.iter().enumerate().take(10) {
            v |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                self.buf = &self.buf[i + 1..];
                return Ok(v);
            }
        }
        Err(WireError("truncated or overlong varint"))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        if n > self.buf.len() {
            return Err(WireError("field runs past the end of its message"));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    fn field(&mut self) -> Result<(u32, Wire<'a>), WireError> {
        let key = self.varint()?;
        let number = u32::try_from(key >> 3).map_err(|_| WireError("field number too large"))?;
        let value = match key & 7 {
            0 => Wire::Varint(self.varint()?),
            1 => {
                let b = self.take(8)?;
                Wire::Fixed64(u64::from_le_bytes(
                    b.try_into().map_err(|_| WireError("fixed64"))?,
                ))
            }
            2 => {
                let len =
                    usize::try_from(self.varint()?).map_err(|_| WireError("length too large"))?;
                Wire::Bytes(self.take(len)?)
            }
            5 => {
                let b = self.take(4)?;
                Wire::Fixed32(u32::from_le_bytes(
                    b.try_into().map_err(|_| WireError("fixed32"))?,
                ))
            }
            _ => return Err(WireError("unsupported wire type")),
        };
        Ok((number, value))
    }
}

impl<'a> Iterator for Fields<'a> {
    type Item = Result<(u32, Wire<'a>), WireError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.buf.is_empty() {
            return None;
        }
        let item = self.field();
        if item.is_err() {
            // A malformed message ends its iteration.
            self.buf = &[];
        }
        Some(item)
    }
}

/// A map entry (`{1: key, 2: value}`) as its key and its value's wire form, if any.
pub fn map_entry(entry: &[u8]) -> Result<(&str, Option<Wire<'_>>), WireError> {
    let (mut key, mut value) = ("", None);
    for field in Fields::new(entry) {
        match field? {
            (1, w) => key = w.str()?,
            (2, w) => value = Some(w),
            _ => {}
        }
    }
    Ok((key, value))
}

/// A `meta.v1.Time` or `MicroTime` message: seconds and nanoseconds since the epoch; `None`
/// for the zero time (Go's `Time{}`, which JSON writes as `null`).
pub fn time(msg: &[u8]) -> Result<Option<(i64, i32)>, WireError> {
    let (mut seconds, mut nanos) = (0i64, 0i32);
    for field in Fields::new(msg) {
        match field? {
            (1, w) => seconds = w.int()?,
            (2, w) => nanos = w.int()? as i32,
            _ => {}
        }
    }
    Ok((seconds != 0 || nanos != 0).then_some((seconds, nanos)))
}

/// An object as a protobuf body carries it: `k8s\0` then a `runtime.Unknown` holding the
/// object's apiVersion, kind and message bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Envelope<'a> {
    /// `apiVersion` of the object.
    pub api_version: &'a str,
    /// `kind` of the object.
    pub kind: &'a str,
    /// The object's message.
    pub raw: &'a [u8],
}

impl fmt::Display for Envelope<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.api_version, self.kind)
    }
}

/// Opens the envelope of a protobuf-encoded object.
pub fn envelope(body: &[u8]) -> Result<Envelope<'_>, WireError> {
    let rest = body
        .strip_prefix(MAGIC)
        .ok_or(WireError("missing the k8s\\0 prefix"))?;
    let mut env = Envelope {
        api_version: "",
        kind: "",
        raw: &[],
    };
    for field in Fields::new(rest) {
        match field? {
            (1, w) => {
                for tm in Fields::new(w.bytes()?) {
                    match tm? {
                        (1, w) => env.api_version = w.str()?,
                        (2, w) => env.kind = w.str()?,
                        _ => {}
                    }
                }
            }
            (2, w) => env.raw = w.bytes()?,
            _ => {}
        }
    }
    Ok(env)
}

/// One event of a protobuf watch (a `meta.v1.WatchEvent`, written without an envelope).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WatchEvent<'a> {
    /// `ADDED`, `MODIFIED`, `DELETED`, `BOOKMARK` or `ERROR`.
    pub type_: &'a str,
    /// The object, in its envelope (a `Status` for `ERROR`).
    pub object: &'a [u8],
}

/// Decodes a watch event.
pub fn watch_event(msg: &[u8]) -> Result<WatchEvent<'_>, WireError> {
    let mut ev = WatchEvent {
        type_: "",
        object: &[],
    };
    for field in Fields::new(msg) {
        match field? {
            (1, w) => ev.type_ = w.str()?,
            (2, w) => {
                // runtime.RawExtension {1: raw}
                for raw in Fields::new(w.bytes()?) {
                    if let (1, w) = raw? {
                        ev.object = w.bytes()?;
                    }
                }
            }
            _ => {}
        }
    }
    Ok(ev)
}

/// Splits length-prefixed frames (a 4-byte big-endian length, then that many bytes) off the
/// front of `buf`: the complete frames, and how many bytes of `buf` they took.
pub fn frames(buf: &[u8]) -> (Vec<&[u8]>, usize) {
    let mut out = Vec::new();
    let mut pos = 0;
    while let Some(len) = buf.get(pos..pos + 4) {
        let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
        let Some(frame) = buf.get(pos + 4..pos + 4 + len) else {
            break;
        };
        out.push(frame);
        pos += 4 + len;
    }
    (out, pos)
}

/// Whether a response's `Content-Type` is Kubernetes protobuf.
pub fn is_protobuf(content_type: Option<&str>) -> bool {
    content_type.is_some_and(|c| {
        c.split(';')
            .next()
            .is_some_and(|m| m.trim().eq_ignore_ascii_case(MEDIA_TYPE))
    })
}

/// A `meta.v1.Status` message, as an `ERROR` watch event or a protobuf error response holds it.
pub fn status(msg: &[u8]) -> Result<kube::core::Status, WireError> {
    let mut s = kube::core::Status::default();
    for field in Fields::new(msg) {
        match field? {
            (2, w) => {
                s.status = match w.str()? {
                    "Success" => Some(kube::core::response::StatusSummary::Success),
                    "Failure" => Some(kube::core::response::StatusSummary::Failure),
                    _ => None,
                }
            }
            (3, w) => s.message = w.str()?.to_string(),
            (4, w) => s.reason = w.str()?.to_string(),
            (6, w) => s.code = u16::try_from(w.int()?).unwrap_or_default(),
            _ => {}
        }
    }
    Ok(s)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn key(n: u32, wire_type: u8) -> u8 {
        (n << 3) as u8 | wire_type
    }

    fn string(n: u32, s: &str) -> Vec<u8> {
        let mut v = vec![key(n, 2), s.len() as u8];
        v.extend_from_slice(s.as_bytes());
        v
    }

    fn message(n: u32, body: &[u8]) -> Vec<u8> {
        let mut v = vec![key(n, 2), body.len() as u8];
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn fields_of_every_wire_type_in_order() {
        let mut msg = string(1, "a");
        msg.extend([key(2, 0), 0xac, 0x02]); // 300
        msg.extend([key(3, 1), 1, 0, 0, 0, 0, 0, 0, 0]);
        msg.extend([key(4, 5), 2, 0, 0, 0]);
        // -1 as a sign-extended int32 varint (ten bytes)
        msg.extend([
            key(5, 0),
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
            0x01,
        ]);
        let fields: Vec<_> = Fields::new(&msg).map(Result::unwrap).collect();
        assert_eq!(
            fields,
            vec![
                (1, Wire::Bytes(b"a")),
                (2, Wire::Varint(300)),
                (3, Wire::Fixed64(1)),
                (4, Wire::Fixed32(2)),
                (5, Wire::Varint(u64::MAX)),
            ]
        );
        assert_eq!(fields[4].1.int().unwrap(), -1);
        assert_eq!(fields[0].1.str().unwrap(), "a");
        assert!(fields[1].1.str().is_err());
    }

    #[test]
    fn malformed_input_is_an_error_and_ends_the_fields() {
        // a string field claiming 5 bytes with 1 left
        let msg = [key(1, 2), 5, b'a'];
        let mut f = Fields::new(&msg);
        assert!(f.next().unwrap().is_err());
        assert!(f.next().is_none());
        // wire type 3 (groups) is not used by Kubernetes
        assert!(Fields::new(&[key(1, 3)]).next().unwrap().is_err());
        // an unterminated varint
        assert!(Fields::new(&[key(1, 0), 0x80]).next().unwrap().is_err());
        assert!(envelope(b"{\"kind\":\"Pod\"}").is_err());
    }

    #[test]
    fn envelope_watch_event_and_frames() {
        let pod = string(1, "p"); // the raw bytes are carried as they are
        let mut type_meta = string(1, "v1");
        type_meta.extend(string(2, "Pod"));
        let mut unknown = message(1, &type_meta);
        unknown.extend(message(2, &pod));
        let mut object = MAGIC.to_vec();
        object.extend(&unknown);
        let env = envelope(&object).unwrap();
        assert_eq!(
            (env.api_version, env.kind, env.raw),
            ("v1", "Pod", &pod[..])
        );
        assert_eq!(env.to_string(), "v1/Pod");

        let mut event = string(1, "ADDED");
        event.extend(message(2, &message(1, &object)));
        let ev = watch_event(&event).unwrap();
        assert_eq!(ev.type_, "ADDED");
        assert_eq!(ev.object, &object[..]);

        let mut stream = Vec::new();
        for _ in 0..2 {
            stream.extend((event.len() as u32).to_be_bytes());
            stream.extend(&event);
        }
        stream.extend([0, 0, 0, 9, 1, 2]); // the start of a third frame
        let (complete, used) = frames(&stream);
        assert_eq!(complete, vec![&event[..], &event[..]]);
        assert_eq!(used, 2 * (4 + event.len()));
        assert_eq!(frames(&[0, 0]), (vec![], 0));
    }

    #[test]
    fn map_entries_times_and_status() {
        let mut entry = string(1, "app");
        entry.extend(string(2, "web"));
        let (k, v) = map_entry(&entry).unwrap();
        assert_eq!((k, v.unwrap().str().unwrap()), ("app", "web"));

        assert_eq!(time(&[]).unwrap(), None);
        assert_eq!(
            time(&[key(1, 0), 0x80, 0x01, key(2, 0), 5]).unwrap(),
            Some((128, 5))
        );

        let mut st = string(2, "Failure");
        st.extend(string(3, "too old resource version"));
        st.extend(string(4, "Expired"));
        st.extend([key(6, 0), 0x9a, 0x03]); // 410
        let s = status(&st).unwrap();
        assert_eq!(s.code, 410);
        assert_eq!(s.reason, "Expired");
        assert_eq!(s.message, "too old resource version");
        assert!(s.is_failure());

        assert!(is_protobuf(Some(
            "application/vnd.kubernetes.protobuf;stream=watch"
        )));
        assert!(!is_protobuf(Some("application/json")));
        assert!(!is_protobuf(None));
    }
}
