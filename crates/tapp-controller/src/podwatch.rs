//! The controller's list+watch of its pods, in Kubernetes' protobuf encoding where the API
//! server serves it (every kube-apiserver does for pods), JSON otherwise.
//!
//! Pod events are most of what the controller reads: ten thousand pods make about fifty
//! thousand events per rollout. kube-rs reads watches as JSON only, and a JSON decoder has to
//! scan every byte of what it skips (managedFields, env, volumes, probes, the conditions and
//! container states the planner never reads); protobuf fields are stepped over by their
//! length, and the bytes on the wire are fewer. This stream asks for protobuf
//! (`Accept: application/vnd.kubernetes.protobuf, application/json`), decodes whichever
//! encoding the response's `Content-Type` names, and yields the events kube-runtime's
//! `watcher` yields (`Init`, `InitApply`, `InitDone`, `Apply`, `Delete`, errors), with its
//! state machine: paginated initial list, watch from the list's resourceVersion with
//! bookmarks, a new list after `410 Gone`, a new watch from the last seen resourceVersion
//! when a watch ends. Errors are items of the stream; `WatchStreamExt::default_backoff`
//! paces the retries.
//!
//! A pod whose hash labels are not ours (one the Go controller created, before adoption) is
//! read again as JSON (by name for a watch event; the whole page for a list): the controller
//! keeps its whole spec, which the protobuf decoder does not read (see [`crate::slim`]).

use std::collections::VecDeque;
use std::io;
use std::time::Duration;

use addon_common::protowire::{self, Fields, WireError};
use bytes::{Buf, BytesMut};
use futures::Stream;
use http::header::{ACCEPT, ACCEPT_ENCODING, CONTENT_TYPE};
use http_body_util::BodyExt;
use kube::Client;
use kube::api::{GetParams, ListParams, WatchParams};
use kube::client::Body;
use kube::core::{ObjectList, Request, Resource, Status, WatchEvent};
use kube_runtime::watcher::{Error, Event};

use crate::slim::{Decoded, SlimPod};

/// Objects per page of the initial list (kube-runtime's default).
const PAGE_SIZE: u32 = 500;
/// Server-side timeout of a watch request (kube-runtime's default).
const WATCH_TIMEOUT_SECONDS: u32 = 290;
/// A watch that sent nothing (not even a bookmark) for this long is dropped and reopened.
const IDLE_TIMEOUT: Duration = Duration::from_secs(WATCH_TIMEOUT_SECONDS as u64 + 10);

type Item = Result<Event<SlimPod>, Error>;

/// The encoding a [`watch_pods_as`] asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    /// Protobuf, or JSON where the server answers JSON.
    Protobuf,
    /// JSON only.
    Json,
}

impl Encoding {
    fn accept(self) -> &'static str {
        match self {
            Encoding::Protobuf => protowire::ACCEPT_PROTOBUF_OR_JSON,
            Encoding::Json => "application/json",
        }
    }
}

/// The pods (of namespace `ns`, or all) matching `label_selector`, as watcher events, in
/// protobuf where the server serves it.
pub fn watch_pods(
    client: Client,
    ns: Option<&str>,
    label_selector: &str,
) -> impl Stream<Item = Item> + Send + 'static {
    watch_pods_as(client, ns, label_selector, Encoding::Protobuf)
}

/// [`watch_pods`] asking for `encoding`.
pub fn watch_pods_as(
    client: Client,
    ns: Option<&str>,
    label_selector: &str,
    encoding: Encoding,
) -> impl Stream<Item = Item> + Send + 'static {
    let watch = PodWatch {
        client,
        request: Request::new(SlimPod::url_path(&(), ns)),
        label_selector: label_selector.to_owned(),
        accept: encoding.accept(),
    };
    futures::stream::unfold(
        (watch, State::Empty, VecDeque::new()),
        |(watch, mut state, mut queue)| async move {
            loop {
                if let Some(item) = queue.pop_front() {
                    return Some((item, (watch, state, queue)));
                }
                state = watch.step(state, &mut queue).await;
            }
        },
    )
}

struct PodWatch {
    client: Client,
    request: Request,
    label_selector: String,
    accept: &'static str,
}

enum State {
    /// Next: `Init` and the first page of a list.
    Empty,
    /// Next: the page after `continue_token`.
    Page { continue_token: String },
    /// Next: a watch from `rv`.
    Listed { rv: String },
    /// Reading a watch; `buf` holds the start of an event not yet complete.
    Watching {
        rv: String,
        body: Body,
        buf: BytesMut,
        protobuf: bool,
    },
}

/// One page of a list: its pods, resourceVersion and continue token.
struct Page {
    pods: Vec<SlimPod>,
    rv: Option<String>,
    next: Option<String>,
}

/// What the next part of a watch response held.
enum Read {
    Data(bytes::Bytes),
    End,
    Failed(kube::Error),
    Idle,
}

fn invalid(e: impl std::error::Error + Send + Sync + 'static) -> kube::Error {
    kube::Error::ReadEvents(io::Error::new(io::ErrorKind::InvalidData, e))
}

fn with_accept(req: http::Request<Vec<u8>>, accept: &'static str) -> http::Request<Body> {
    let mut req = req.map(Body::from);
    let headers = req.headers_mut();
    headers.insert(ACCEPT, http::HeaderValue::from_static(accept));
    // A watch is read as it arrives: no compression (as kube-client does for its watches).
    headers.insert(ACCEPT_ENCODING, http::HeaderValue::from_static("identity"));
    req
}

impl PodWatch {
    async fn step(&self, state: State, queue: &mut VecDeque<Item>) -> State {
        match state {
            State::Empty => {
                queue.push_back(Ok(Event::Init));
                self.page(None, queue).await
            }
            State::Page { continue_token } => self.page(Some(continue_token), queue).await,
            State::Listed { rv } => self.open_watch(rv, queue).await,
            State::Watching {
                rv,
                body,
                buf,
                protobuf,
            } => self.read_watch(rv, body, buf, protobuf, queue).await,
        }
    }

    /// Sends a GET and returns the response, an API error for a status other than 2xx.
    async fn get(&self, req: http::Request<Body>) -> Result<http::Response<Body>, kube::Error> {
        let res = self.client.send(req).await?;
        if res.status().is_success() {
            return Ok(res);
        }
        let code = res.status().as_u16();
        let protobuf = content_type_is_protobuf(&res);
        let bytes = res.into_body().collect().await?.to_bytes();
        let status = if protobuf {
            protowire::envelope(&bytes)
                .and_then(|env| protowire::status(env.raw))
                .ok()
        } else {
            serde_json::from_slice::<Status>(&bytes).ok()
        };
        let status = status.unwrap_or_else(|| {
            Status::failure(String::from_utf8_lossy(&bytes).trim(), "Unknown").with_code(code)
        });
        let status = if status.code == 0 {
            status.with_code(code)
        } else {
            status
        };
        Err(kube::Error::Api(status.boxed()))
    }

    /// One page of the initial list.
    async fn page(&self, continue_token: Option<String>, queue: &mut VecDeque<Item>) -> State {
        match self.list_page(continue_token).await {
            Ok(Page { pods, rv, next }) => {
                queue.extend(pods.into_iter().map(|p| Ok(Event::InitApply(p))));
                let nonempty = |s: Option<String>| s.filter(|s| !s.is_empty());
                match (nonempty(next), nonempty(rv)) {
                    (Some(continue_token), _) => State::Page { continue_token },
                    (None, Some(rv)) => {
                        queue.push_back(Ok(Event::InitDone));
                        State::Listed { rv }
                    }
                    (None, None) => {
                        queue.push_back(Err(Error::NoResourceVersion));
                        State::Empty
                    }
                }
            }
            Err(e) => {
                log_error("list", &e);
                queue.push_back(Err(Error::InitialListFailed(e)));
                State::Empty
            }
        }
    }

    /// One page of pods.
    async fn list_page(&self, continue_token: Option<String>) -> Result<Page, kube::Error> {
        let mut lp = ListParams::default()
            .labels(&self.label_selector)
            .limit(PAGE_SIZE);
        lp.continue_token = continue_token;
        let mut accept = self.accept;
        loop {
            let req = self.request.list(&lp).map_err(kube::Error::BuildRequest)?;
            let res = self.get(with_accept(req, accept)).await?;
            let protobuf = content_type_is_protobuf(&res);
            let bytes = res.into_body().collect().await?.to_bytes();
            if !protobuf {
                let list: ObjectList<SlimPod> =
                    serde_json::from_slice(&bytes).map_err(kube::Error::SerdeError)?;
                return Ok(Page {
                    pods: list.items,
                    rv: list.metadata.resource_version,
                    next: list.metadata.continue_,
                });
            }
            match decode_proto_list(&bytes).map_err(invalid)? {
                Some(page) => return Ok(page),
                // Pods of the Go controller: their whole specs are read from this page as
                // JSON (one request, not one per pod).
                None => accept = "application/json",
            }
        }
    }

    /// The pod with its whole spec when it needs one (read as JSON); `None` when the pod is
    /// gone by then (its deletion follows in the watch).
    async fn complete(&self, decoded: Decoded) -> Result<Option<SlimPod>, kube::Error> {
        let pod = match decoded {
            Decoded::Complete(pod) => return Ok(Some(pod)),
            Decoded::NeedsWholeSpec(pod) => pod,
        };
        let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
        let name = pod.metadata.name.as_deref().unwrap_or_default();
        let req = Request::new(SlimPod::url_path(&(), Some(ns)))
            .get(name, &GetParams::default())
            .map_err(kube::Error::BuildRequest)?;
        match self.get(with_accept(req, "application/json")).await {
            Ok(res) => {
                let bytes = res.into_body().collect().await?.to_bytes();
                serde_json::from_slice(&bytes)
                    .map(Some)
                    .map_err(kube::Error::SerdeError)
            }
            Err(kube::Error::Api(s)) if s.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn open_watch(&self, rv: String, queue: &mut VecDeque<Item>) -> State {
        let wp = WatchParams::default()
            .labels(&self.label_selector)
            .timeout(WATCH_TIMEOUT_SECONDS);
        let req = match self.request.watch(&wp, &rv) {
            Ok(req) => req,
            Err(e) => {
                queue.push_back(Err(Error::WatchStartFailed(kube::Error::BuildRequest(e))));
                return State::Listed { rv };
            }
        };
        match self.get(with_accept(req, self.accept)).await {
            Ok(res) => State::Watching {
                rv,
                protobuf: content_type_is_protobuf(&res),
                body: res.into_body(),
                buf: BytesMut::new(),
            },
            Err(e) => {
                log_error("watch", &e);
                let gone = matches!(&e, kube::Error::Api(s) if s.code == 410);
                queue.push_back(Err(Error::WatchStartFailed(e)));
                if gone {
                    State::Empty
                } else {
                    State::Listed { rv }
                }
            }
        }
    }

    async fn read_watch(
        &self,
        mut rv: String,
        mut body: Body,
        mut buf: BytesMut,
        protobuf: bool,
        queue: &mut VecDeque<Item>,
    ) -> State {
        let read = match tokio::time::timeout(IDLE_TIMEOUT, body.frame()).await {
            Err(_) => Read::Idle,
            Ok(None) => Read::End,
            Ok(Some(Err(e))) => Read::Failed(e),
            Ok(Some(Ok(frame))) => match frame.into_data() {
                Ok(data) => Read::Data(data),
                // trailers
                Err(_) => Read::End,
            },
        };
        let data = match read {
            Read::Data(data) => data,
            Read::End | Read::Idle => return State::Listed { rv },
            Read::Failed(e) => {
                log_error("watch", &e);
                queue.push_back(Err(Error::WatchFailed(e)));
                return State::Listed { rv };
            }
        };
        buf.extend_from_slice(&data);
        // The complete events in `buf`, in order, as (type, decoded object).
        let mut events = Vec::new();
        let used = if protobuf {
            let (frames, used) = protowire::frames(&buf);
            for frame in frames {
                events.push(decode_proto_event(frame));
            }
            used
        } else {
            let mut used = 0;
            while let Some(end) = buf[used..].iter().position(|b| *b == b'\n') {
                let line = &buf[used..used + end];
                used += end + 1;
                if !line.iter().all(u8::is_ascii_whitespace) {
                    events.push(decode_json_event(line));
                }
            }
            used
        };
        buf.advance(used);
        for event in events {
            match event {
                Err(e) => {
                    log_error("watch", &e);
                    queue.push_back(Err(Error::WatchFailed(e)));
                    return State::Listed { rv };
                }
                Ok(Incoming::Bookmark(new_rv)) => rv = new_rv,
                Ok(Incoming::Error(status)) => {
                    tracing::debug!(?status, "pod watch: error event");
                    let gone = status.code == 410;
                    queue.push_back(Err(Error::WatchError(Box::new(status))));
                    if gone {
                        return State::Empty;
                    }
                }
                Ok(Incoming::Object { deleted, pod }) => {
                    let pod = match (deleted, pod) {
                        (true, Decoded::Complete(p) | Decoded::NeedsWholeSpec(p)) => Some(p),
                        (false, pod) => match self.complete(pod).await {
                            Ok(pod) => pod,
                            Err(e) => {
                                // Watch again from before this event, which comes again.
                                log_error("get", &e);
                                queue.push_back(Err(Error::WatchFailed(e)));
                                return State::Listed { rv };
                            }
                        },
                    };
                    let Some(pod) = pod else { continue };
                    match pod.metadata.resource_version.clone() {
                        Some(new_rv) if !new_rv.is_empty() => rv = new_rv,
                        _ => {
                            queue.push_back(Err(Error::NoResourceVersion));
                            return State::Empty;
                        }
                    }
                    queue.push_back(Ok(if deleted {
                        Event::Delete(pod)
                    } else {
                        Event::Apply(pod)
                    }));
                }
            }
        }
        State::Watching {
            rv,
            body,
            buf,
            protobuf,
        }
    }
}

/// A watch event, decoded.
#[expect(
    clippy::large_enum_variant,
    reason = "nearly every event is an object: boxing it would add an allocation per event"
)]
enum Incoming {
    Object { deleted: bool, pod: Decoded },
    Bookmark(String),
    Error(Status),
}

/// A protobuf `PodList` (`None` if one of its pods needs its whole spec).
fn decode_proto_list(bytes: &[u8]) -> Result<Option<Page>, WireError> {
    let env = protowire::envelope(bytes)?;
    let (mut rv, mut next) = (None, None);
    let mut pods = Vec::new();
    for field in Fields::new(env.raw) {
        match field? {
            // ListMeta {2: resourceVersion, 3: continue}
            (1, w) => {
                for m in Fields::new(w.bytes()?) {
                    match m? {
                        (2, w) => rv = Some(w.str()?.to_owned()),
                        (3, w) => next = Some(w.str()?.to_owned()),
                        _ => {}
                    }
                }
            }
            (2, w) => match SlimPod::from_protobuf(w.bytes()?)? {
                Decoded::Complete(p) => pods.push(p),
                // read the page again as JSON
                Decoded::NeedsWholeSpec(_) => return Ok(None),
            },
            _ => {}
        }
    }
    Ok(Some(Page { pods, rv, next }))
}

fn decode_proto_event(frame: &[u8]) -> Result<Incoming, kube::Error> {
    let ev = protowire::watch_event(frame).map_err(invalid)?;
    let env = protowire::envelope(ev.object).map_err(invalid)?;
    let deleted = match ev.type_ {
        "ADDED" | "MODIFIED" => false,
        "DELETED" => true,
        "ERROR" => {
            return Ok(Incoming::Error(
                protowire::status(env.raw).map_err(invalid)?,
            ));
        }
        "BOOKMARK" => {
            let pod = match SlimPod::from_protobuf(env.raw).map_err(invalid)? {
                Decoded::Complete(p) | Decoded::NeedsWholeSpec(p) => p,
            };
            return Ok(Incoming::Bookmark(
                pod.metadata.resource_version.unwrap_or_default(),
            ));
        }
        other => {
            return Err(invalid(io::Error::other(format!(
                "unknown watch event type {other:?}"
            ))));
        }
    };
    Ok(Incoming::Object {
        deleted,
        pod: SlimPod::from_protobuf(env.raw).map_err(invalid)?,
    })
}

fn decode_json_event(line: &[u8]) -> Result<Incoming, kube::Error> {
    let ev: WatchEvent<SlimPod> = serde_json::from_slice(line).map_err(kube::Error::SerdeError)?;
    Ok(match ev {
        WatchEvent::Added(pod) | WatchEvent::Modified(pod) => Incoming::Object {
            deleted: false,
            pod: Decoded::Complete(pod),
        },
        WatchEvent::Deleted(pod) => Incoming::Object {
            deleted: true,
            pod: Decoded::Complete(pod),
        },
        WatchEvent::Bookmark(b) => Incoming::Bookmark(b.metadata.resource_version),
        WatchEvent::Error(status) => Incoming::Error(*status),
    })
}

fn content_type_is_protobuf(res: &http::Response<Body>) -> bool {
    protowire::is_protobuf(
        res.headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok()),
    )
}

fn log_error(what: &str, e: &kube::Error) {
    if matches!(e, kube::Error::Api(s) if s.is_forbidden()) {
        tracing::warn!(error = %e, "pod {what} forbidden");
    } else {
        tracing::debug!(error = %e, "pod {what} failed");
    }
}
