//! Watch streams: newline-delimited JSON events (or length-prefixed protobuf WatchEvent frames
//! for clients that ask for protobuf) with bookmarks, timeouts, selectors and 410 on expired
//! resourceVersions.

use std::borrow::Cow;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::response::Response;
use bytes::{BufMut, Bytes, BytesMut};
use serde_json::{Value, json};
use tokio::sync::broadcast::error::{RecvError, TryRecvError};

use crate::errors::{ApiError, ApiResult};
use crate::registry::ResourceInfo;
use crate::selectors::{FieldSelector, LabelSelector};
use crate::server::{Api, Ctx};
use crate::store::{EventType, StoredEvent, key_of};
use crate::table;

struct Filter {
    /// events.k8s.io: selectors apply to the converted object
    convert_events: bool,
    ns: Option<String>,
    label: LabelSelector,
    field: FieldSelector,
}

impl Filter {
    fn matches(&self, obj: &Value) -> bool {
        if let Some(ns) = &self.ns
            && key_of(obj).0 != *ns
        {
            return false;
        }
        if self.convert_events && !self.field.is_empty() {
            let c = crate::convert::event_from_core(obj);
            return self.label.matches(obj) && self.field.matches(&c);
        }
        self.label.matches(obj) && self.field.matches(obj)
    }

    fn trivial(&self) -> bool {
        self.ns.is_none() && self.label.is_empty() && self.field.is_empty()
    }
}

struct Encoder {
    info: Arc<ResourceInfo>,
    api_version: String,
    table: bool,
    /// Objects as PartialObjectMetadata (`as=PartialObjectMetadata`).
    metadata_only: bool,
    /// Protobuf frames instead of JSON lines.
    proto: bool,
}

impl Encoder {
    /// Whether the stored object is in the watch's version (and can be sent as stored).
    fn same_version(&self, ev: &StoredEvent) -> bool {
        ev.obj.get("apiVersion").and_then(Value::as_str) == Some(self.api_version.as_str())
    }

    /// The object in the watch's version: as stored, converted (events.k8s.io), or with the
    /// apiVersion rewritten (another served version of the same schema).
    fn presented<'a>(&self, ev: &'a StoredEvent) -> Cow<'a, Value> {
        if self.same_version(ev) {
            Cow::Borrowed(&*ev.obj)
        } else if self.info.is_new_events() {
            Cow::Owned(crate::convert::event_from_core(&ev.obj))
        } else {
            let mut o = (*ev.obj).clone();
            o["apiVersion"] = json!(self.api_version);
            Cow::Owned(o)
        }
    }

    fn event(&self, ty: &str, ev: &StoredEvent) -> Bytes {
        if self.proto {
            return self.event_proto(ty, ev);
        }
        if !self.table && !self.metadata_only && ty == ev.kind.as_str() && self.same_version(ev) {
            return ev.line_json();
        }
        let mut buf = BytesMut::with_capacity(256);
        buf.put_slice(b"{\"type\":\"");
        buf.put_slice(ty.as_bytes());
        buf.put_slice(b"\",\"object\":");
        if self.table {
            let t = table::table(
                &self.info,
                std::slice::from_ref(&ev.obj),
                &ev.rv.to_string(),
                "",
            );
            buf.put_slice(&serde_json::to_vec(&t).unwrap_or_default());
        } else if self.metadata_only {
            buf.put_slice(
                &serde_json::to_vec(&table::partial_metadata(&ev.obj)).unwrap_or_default(),
            );
        } else if self.same_version(ev) {
            buf.put_slice(&ev.obj_json());
        } else {
            buf.put_slice(&serde_json::to_vec(&self.presented(ev)).unwrap_or_default());
        }
        buf.put_slice(b"}\n");
        buf.freeze()
    }

    fn event_proto(&self, ty: &str, ev: &StoredEvent) -> Bytes {
        let frame = if ty == ev.kind.as_str() && self.same_version(ev) {
            ev.line_proto()
        } else {
            crate::proto::watch_frame(ty, &self.presented(ev)).map(Bytes::from)
        };
        frame.unwrap_or_else(|e| {
            // the stream is protobuf already: tell the client instead of skipping the event
            let err = ApiError::internal(format!("encoding the watch event: {e}"));
            self.raw("ERROR", &err.to_status())
        })
    }

    fn raw(&self, ty: &str, obj: &Value) -> Bytes {
        if self.proto {
            return crate::proto::watch_frame(ty, obj)
                .map(Bytes::from)
                .unwrap_or_default();
        }
        // "type" first, as kube-apiserver writes it: clients decode the object in place.
        let mut v = format!("{{\"type\":\"{ty}\",\"object\":").into_bytes();
        v.extend_from_slice(&serde_json::to_vec(obj).unwrap_or_default());
        v.extend_from_slice(b"}\n");
        Bytes::from(v)
    }

    fn bookmark(&self, rv: u64, initial_end: bool) -> Bytes {
        let mut meta = json!({"resourceVersion": rv.to_string()});
        if initial_end {
            meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        self.raw(
            "BOOKMARK",
            &json!({"kind": self.info.kind, "apiVersion": self.api_version, "metadata": meta}),
        )
    }
}

/// Largest chunk of events already waiting that a watch sends at once.
const MAX_BATCH: usize = 256 * 1024;

/// Decide what (if anything) a watcher sees for a stored event.
fn translate(f: &Filter, ev: &StoredEvent) -> Option<&'static str> {
    if f.trivial() {
        return Some(ev.kind.as_str());
    }
    let now = f.matches(&ev.obj);
    let before = ev.prev.as_ref().is_some_and(|p| f.matches(p));
    match ev.kind {
        EventType::Added => now.then_some("ADDED"),
        EventType::Deleted => (now || before).then_some("DELETED"),
        EventType::Modified => match (before, now) {
            (true, true) => Some("MODIFIED"),
            (false, true) => Some("ADDED"),
            (true, false) => Some("DELETED"),
            (false, false) => None,
        },
    }
}

/// Serve `?watch=true`.
pub(crate) fn serve(api: &Api, ctx: &Ctx) -> ApiResult<Response> {
    let filter = Filter {
        convert_events: api.info.is_new_events(),
        ns: (api.info.namespaced && !api.ns.is_empty()).then(|| api.ns.clone()),
        label: LabelSelector::parse(ctx.q("labelSelector").unwrap_or_default())?,
        field: FieldSelector::parse(ctx.q("fieldSelector").unwrap_or_default())?,
    };
    let rv_param = ctx.q("resourceVersion").unwrap_or_default();
    let from: Option<u64> = match rv_param {
        "" | "0" => None,
        s => Some(
            s.parse()
                .map_err(|_| ApiError::bad_request(format!("invalid resource version: {s}")))?,
        ),
    };
    let send_initial = ctx.q("sendInitialEvents") == Some("true");
    let bookmarks = ctx.q("allowWatchBookmarks") == Some("true");
    let timeout = ctx
        .q("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .map(Duration::from_secs)
        .unwrap_or(api.shared.config.default_watch_timeout);
    let enc = Encoder {
        info: api.info.clone(),
        api_version: api.info.api_version(),
        table: ctx.wants_table(),
        metadata_only: ctx.wants_metadata(),
        proto: ctx.wants_protobuf(&api.info),
    };
    let content_type = if enc.proto {
        "application/vnd.kubernetes.protobuf;stream=watch"
    } else {
        "application/json"
    };
    let shared = api.shared.clone();
    let gr = api.info.gr();
    let bookmark_interval = shared.config.bookmark_interval;
    let (mut tx, rx) = tokio::sync::mpsc::channel::<Bytes>(64);
    let mut closer = shared.faults.watch_closer();
    let start = shared.store.watch(&gr, from, send_initial);
    tokio::spawn(async move {
        let mut start = match start {
            Ok(s) => s,
            Err(e) => {
                let _ = tx.send(enc.raw("ERROR", &e.to_status())).await;
                return;
            }
        };
        let mut last_rv = from.unwrap_or(0);
        for ev in &start.backlog {
            if let Some(ty) = translate(&filter, ev)
                && tx.send(enc.event(ty, ev)).await.is_err()
            {
                return;
            }
            last_rv = last_rv.max(ev.rv);
        }
        last_rv = last_rv.max(start.rv);
        if send_initial && bookmarks && tx.send(enc.bookmark(start.rv, true)).await.is_err() {
            return;
        }
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let mut tick = tokio::time::interval(bookmark_interval);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = &mut deadline => break,
                // the client went away: stop at once instead of at the next event
                _ = tx.closed() => break,
                _ = closer.changed() => break,
                _ = tick.tick(), if bookmarks => {
                    let rv = shared.store.current_rv();
                    // deliver everything up to rv first
                    loop {
                        match start.rx.try_recv() {
                            Ok(ev) => {
                                if ev.rv <= last_rv { continue; }
                                last_rv = ev.rv;
                                if let Some(ty) = translate(&filter, &ev)
                                    && tx.send(enc.event(ty, &ev)).await.is_err() { return; }
                            }
                            Err(TryRecvError::Lagged(_)) => {
                                match resync(&shared, &gr, last_rv, &filter, &enc, &mut tx, &mut start).await {
                                    Some(rv) => last_rv = rv,
                                    None => return,
                                }
                            }
                            Err(_) => break,
                        }
                    }
                    if rv > last_rv { last_rv = rv; }
                    if tx.send(enc.bookmark(last_rv, false)).await.is_err() { return; }
                }
                r = start.rx.recv() => match r {
                    Ok(ev) => {
                        // Events already waiting go out in the same chunk (one channel send,
                        // one HTTP chunk, one TLS record instead of one each): under a burst of
                        // writes a per-event hand-off made watchers fall seconds behind.
                        let mut batch = BytesMut::new();
                        let mut next = Some(ev);
                        let mut lagged = false;
                        while let Some(ev) = next.take() {
                            if ev.rv > last_rv {
                                last_rv = ev.rv;
                                if let Some(ty) = translate(&filter, &ev) {
                                    batch.put_slice(&enc.event(ty, &ev));
                                }
                            }
                            if batch.len() < MAX_BATCH {
                                match start.rx.try_recv() {
                                    Ok(ev) => next = Some(ev),
                                    Err(TryRecvError::Lagged(_)) => lagged = true,
                                    Err(_) => {}
                                }
                            }
                        }
                        if !batch.is_empty() && tx.send(batch.freeze()).await.is_err() { return; }
                        if lagged {
                            match resync(&shared, &gr, last_rv, &filter, &enc, &mut tx, &mut start).await {
                                Some(rv) => last_rv = rv,
                                None => return,
                            }
                        }
                    }
                    Err(RecvError::Lagged(_)) => {
                        match resync(&shared, &gr, last_rv, &filter, &enc, &mut tx, &mut start).await {
                            Some(rv) => last_rv = rv,
                            None => return,
                        }
                    }
                    Err(RecvError::Closed) => break,
                }
            }
        }
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, Infallible>(b), rx))
    });
    let body = Body::from_stream(stream);
    Response::builder()
        .status(200)
        .header(http::header::CONTENT_TYPE, content_type)
        .header("Transfer-Encoding", "chunked")
        .body(body)
        .map_err(|e| ApiError::internal(e.to_string()))
}

/// A slow watcher fell behind the broadcast buffer: replay from history (or 410).
async fn resync(
    shared: &Arc<crate::server::Shared>,
    gr: &crate::registry::GroupResource,
    last_rv: u64,
    filter: &Filter,
    enc: &Encoder,
    tx: &mut tokio::sync::mpsc::Sender<Bytes>,
    start: &mut crate::store::WatchStart,
) -> Option<u64> {
    match shared.store.watch(gr, Some(last_rv), false) {
        Ok(s) => {
            *start = s;
            let mut rv = last_rv;
            for ev in &start.backlog {
                if let Some(ty) = translate(filter, ev)
                    && tx.send(enc.event(ty, ev)).await.is_err()
                {
                    return None;
                }
                rv = rv.max(ev.rv);
            }
            Some(rv)
        }
        Err(e) => {
            let _ = tx.send(enc.raw("ERROR", &e.to_status())).await;
            None
        }
    }
}
