//! `GET /ui/stream`: server-sent events, one `snap` event per hub frame. Each event
//! is `{"snap": <the cluster picture>, "events": [...], "history": [...]}` where the
//! two lists hold only what this client has not had yet (everything in its first
//! event), so a frame a second stays a few kilobytes however long the page is open.
//!
//! The page reads it with `fetch()` and a stream reader rather than `EventSource`,
//! because `EventSource` cannot send an `Authorization` header.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use tokio::sync::mpsc;

use super::hub::{Frame, Hub, Sample};
use crate::events::Event;

/// Frames buffered per client: a client that reads slower than this is sent only
/// the newest (the hub's `watch` keeps one), never a growing queue.
const BUFFER: usize = 2;

pub async fn stream(State(hub): State<Arc<Hub>>) -> Response {
    let mut frames = hub.subscribe();
    let mut shutdown = hub.shutdown();
    let (tx, rx) = mpsc::channel::<Bytes>(BUFFER);
    tokio::spawn(async move {
        let mut sent = Sent::default();
        // Frames come from the hub's task; this one only formats and forwards, and
        // ends when the client goes (the send fails), the hub stops, or the router
        // shuts down (ending the body lets the server's graceful shutdown finish).
        loop {
            if *shutdown.borrow() {
                return;
            }
            let frame = frames.borrow_and_update().clone();
            if let Some(f) = frame {
                tokio::select! {
                    sent = tx.send(sent.event(&f)) => if sent.is_err() { return },
                    _ = shutdown.changed() => return,
                }
            }
            tokio::select! {
                changed = frames.changed() => if changed.is_err() { return },
                _ = shutdown.changed() => return,
            }
        }
    });
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
            (header::HeaderName::from_static("x-accel-buffering"), "no"),
        ],
        Body::from_stream(Frames(rx)),
    )
        .into_response()
}

/// What one client has had of the event tail and the history.
#[derive(Debug, Default)]
struct Sent {
    last_event: Option<Event>,
    last_sample_ms: Option<u64>,
}

impl Sent {
    fn event(&mut self, f: &Frame) -> Bytes {
        let events = new_events(&f.events, self.last_event.as_ref());
        if let Some(e) = f.events.last() {
            self.last_event = Some(e.clone());
        }
        let history: Vec<&Sample> = f
            .history
            .iter()
            .filter(|s| self.last_sample_ms.is_none_or(|t| s.t_ms > t))
            .collect();
        if let Some(s) = f.history.back() {
            self.last_sample_ms = Some(s.t_ms);
        }
        let lists = serde_json::json!({ "events": events, "history": history });
        // `lists` is an object: splice the shared frame in without parsing it again.
        let lists = lists.to_string();
        let data = format!("{{\"snap\":{},{}", f.snap_json, &lists[1..]);
        Bytes::from(format!("event: snap\ndata: {data}\n\n"))
    }
}

/// The events after `last` in `tail` (all of them if `last` is not there: the first
/// event, or a tail that moved on further than one frame).
fn new_events<'a>(tail: &'a [Event], last: Option<&Event>) -> &'a [Event] {
    match last.and_then(|l| tail.iter().rposition(|e| e == l)) {
        Some(i) => &tail[i + 1..],
        None => tail,
    }
}

/// The body stream: what the forwarding task sends.
struct Frames(mpsc::Receiver<Bytes>);

impl futures_core::Stream for Frames {
    type Item = Result<Bytes, Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.0.poll_recv(cx).map(|b| b.map(Ok))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use super::*;
    use crate::events::EventKind;

    fn ev(at: u64) -> Event {
        Event::new(at, EventKind::HostUp, None, None, format!("e{at}"))
    }

    fn frame(events: Vec<Event>, samples: &[u64]) -> Frame {
        Frame {
            snap_json: r#"{"at_ms":1}"#.into(),
            events: Arc::new(events),
            history: Arc::new(
                samples
                    .iter()
                    .map(|&t| Sample {
                        t_ms: t,
                        awake: 1,
                        asleep: 0,
                        watts: 0.0,
                        watts_all_on: 0.0,
                    })
                    .collect::<VecDeque<_>>(),
            ),
        }
    }

    fn data(b: &Bytes) -> serde_json::Value {
        let s = std::str::from_utf8(b).expect("utf-8");
        let line = s
            .strip_prefix("event: snap\ndata: ")
            .and_then(|r| r.strip_suffix("\n\n"))
            .expect("one SSE event");
        serde_json::from_str(line).expect("JSON data")
    }

    #[test]
    fn a_client_gets_everything_once_then_only_what_is_new() {
        let mut sent = Sent::default();
        let first = data(&sent.event(&frame(vec![ev(1), ev(2)], &[10, 20])));
        assert_eq!(first["snap"]["at_ms"], 1);
        assert_eq!(first["events"].as_array().map(Vec::len), Some(2));
        assert_eq!(first["history"].as_array().map(Vec::len), Some(2));
        let same = data(&sent.event(&frame(vec![ev(1), ev(2)], &[10, 20])));
        assert_eq!(same["events"], serde_json::json!([]));
        assert_eq!(same["history"], serde_json::json!([]));
        let more = data(&sent.event(&frame(vec![ev(2), ev(3)], &[20, 30])));
        assert_eq!(more["events"][0]["at_ms"], 3);
        assert_eq!(more["events"].as_array().map(Vec::len), Some(1));
        assert_eq!(more["history"][0]["t_ms"], 30);
    }
}
