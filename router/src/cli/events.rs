//! `router events`: the newest events, filtered by host, VM, kind and age, and
//! `--follow` to keep printing new ones as they happen. The daemon serves the events
//! it keeps in memory; filtering happens here, so the API stays one plain list.

use std::collections::BTreeSet;
use std::time::Duration;

use clap::Args;

use super::{print_or_json, table, time, Api, Client, ClientError};
use crate::api::types::Event;
use crate::events::EventKind;

/// How often `--follow` asks for new events: a person reading along notices nothing
/// slower than a second, and the request is a snapshot read in the daemon.
const FOLLOW_POLL: Duration = Duration::from_millis(1000);

/// Ask for this many when filtering, so the filter sees everything the daemon keeps
/// (it caps the answer at what it holds in memory).
const ALL: usize = 100_000;

#[derive(Debug, Clone, Args)]
pub struct EventsArgs {
    /// How many of the newest matching events to show.
    #[arg(long, default_value_t = 50)]
    pub limit: usize,
    /// Keep running and print new events as they happen (Ctrl-C to stop).
    #[arg(long, short)]
    pub follow: bool,
    /// Only events about this host.
    #[arg(long)]
    pub host: Option<String>,
    /// Only events about this VM.
    #[arg(long)]
    pub vm: Option<String>,
    /// Only events of this kind (e.g. host_down, failover, vm_migrated); repeatable.
    #[arg(long, value_parser = parse_kind)]
    pub kind: Vec<EventKind>,
    /// Only events since an age (90s, 10m, 2h, 1d) or an RFC 3339 time.
    #[arg(long)]
    pub since: Option<String>,
    /// Print JSON (the shapes in docs/CONTRACTS.md) instead of text; with --follow,
    /// one event per line.
    #[arg(long)]
    pub json: bool,
}

fn parse_kind(s: &str) -> Result<EventKind, String> {
    serde_json::from_value(serde_json::Value::String(s.to_owned()))
        .map_err(|_| format!("unknown event kind {s:?} (see `router events` for the names)"))
}

/// Which events an invocation wants.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub host: Option<String>,
    pub vm: Option<String>,
    pub kinds: Vec<EventKind>,
    pub since_ms: Option<u64>,
}

impl Filter {
    pub fn matches(&self, e: &Event) -> bool {
        self.host
            .as_deref()
            .is_none_or(|h| e.host.as_ref().is_some_and(|x| x.as_str() == h))
            && self
                .vm
                .as_deref()
                .is_none_or(|v| e.vm.as_ref().is_some_and(|x| x.as_str() == v))
            && (self.kinds.is_empty() || self.kinds.contains(&e.kind))
            && self.since_ms.is_none_or(|s| e.at_ms >= s)
    }

    fn is_empty(&self) -> bool {
        self.host.is_none() && self.vm.is_none() && self.kinds.is_empty() && self.since_ms.is_none()
    }
}

pub fn run(api: &Api, a: &EventsArgs) -> Result<(), ClientError> {
    let since_ms = a
        .since
        .as_deref()
        .map(|s| time::parse_since(s, wisp_common::time::unix_ms()))
        .transpose()
        .map_err(|message| ClientError::Api { status: 0, message })?;
    let filter = Filter {
        host: a.host.clone(),
        vm: a.vm.clone(),
        kinds: a.kind.clone(),
        since_ms,
    };
    let c = Client::new(api, None);
    let fetch = |limit: usize| -> Result<Vec<Event>, ClientError> {
        let n = if filter.is_empty() { limit } else { ALL };
        let evs: Vec<Event> = c.get(&format!("/v1/events?limit={n}"))?;
        let mut evs: Vec<Event> = evs.into_iter().filter(|e| filter.matches(e)).collect();
        let skip = evs.len().saturating_sub(limit);
        Ok(evs.split_off(skip))
    };
    let first = fetch(a.limit)?;
    if !a.follow {
        return print_or_json(a.json, &first, |e| events_table(e));
    }
    let mut seen: BTreeSet<Key> = BTreeSet::new();
    print_new(a.json, true, &first, &mut seen);
    loop {
        std::thread::sleep(FOLLOW_POLL);
        // A daemon restarting for a moment is not a reason to stop following.
        if let Ok(evs) = fetch(ALL) {
            print_new(a.json, false, &evs, &mut seen);
        }
    }
}

/// What makes an event unique among those the daemon serves.
type Key = (u64, String, String);

fn key(e: &Event) -> Key {
    (e.at_ms, e.kind.as_str().to_owned(), e.message.clone())
}

fn print_new(json: bool, header: bool, evs: &[Event], seen: &mut BTreeSet<Key>) {
    let newest_seen = seen.last().map(|k| k.0).unwrap_or(0);
    let fresh: Vec<&Event> = evs
        .iter()
        .filter(|e| e.at_ms >= newest_seen && !seen.contains(&key(e)))
        .collect();
    for e in &fresh {
        if json {
            println!("{}", serde_json::to_string(e).expect("events serialise"));
        } else {
            println!("{}", row(e).join("  "));
        }
    }
    if header && !json && fresh.is_empty() {
        eprintln!("(no matching events yet; waiting for new ones)");
    }
    for e in fresh {
        seen.insert(key(e));
    }
    // Only the newest millisecond's keys are needed to avoid printing twice.
    let newest = seen.last().map(|k| k.0).unwrap_or(0);
    seen.retain(|k| k.0 >= newest);
}

fn row(e: &Event) -> Vec<String> {
    vec![
        time::rfc3339(e.at_ms),
        e.kind.as_str().into(),
        e.host
            .as_ref()
            .map(|h| h.to_string())
            .unwrap_or_else(|| "-".into()),
        e.vm.as_ref()
            .map(|v| v.to_string())
            .unwrap_or_else(|| "-".into()),
        e.message.clone(),
    ]
}

pub fn events_table(evs: &[Event]) -> String {
    let rows: Vec<Vec<String>> = evs.iter().map(row).collect();
    table::render(&["TIME (UTC)", "EVENT", "HOST", "VM", "MESSAGE"], &rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use wisp_common::{HostId, VmId};

    fn ev(at_ms: u64, kind: EventKind, host: Option<&str>, vm: Option<&str>) -> Event {
        Event::new(
            at_ms,
            kind,
            host.map(|h| HostId::new(h).expect("host id")),
            vm.map(|v| VmId::new(v).expect("vm id")),
            "m",
        )
    }

    #[test]
    fn filters_by_host_vm_kind_and_age() {
        let evs = [
            ev(1000, EventKind::HostDown, Some("h1"), None),
            ev(2000, EventKind::VmMigrated, Some("h2"), Some("a")),
            ev(3000, EventKind::Failover, None, Some("a")),
        ];
        let pick = |f: Filter| -> Vec<u64> {
            evs.iter()
                .filter(|e| f.matches(e))
                .map(|e| e.at_ms)
                .collect()
        };
        assert_eq!(pick(Filter::default()), vec![1000, 2000, 3000]);
        let host = |h: &str| Filter {
            host: Some(h.into()),
            ..Default::default()
        };
        assert_eq!(pick(host("h1")), vec![1000]);
        assert_eq!(
            pick(Filter {
                vm: Some("a".into()),
                ..Default::default()
            }),
            vec![2000, 3000]
        );
        assert_eq!(
            pick(Filter {
                kinds: vec![EventKind::Failover, EventKind::HostDown],
                ..Default::default()
            }),
            vec![1000, 3000]
        );
        assert_eq!(
            pick(Filter {
                since_ms: Some(2000),
                ..Default::default()
            }),
            vec![2000, 3000]
        );
        assert_eq!(parse_kind("host_down"), Ok(EventKind::HostDown));
        assert!(parse_kind("hostdown").is_err());
    }

    #[test]
    fn table_times_carry_the_date() {
        let t = events_table(&[ev(1_796_179_664_123, EventKind::HostUp, Some("h1"), None)]);
        assert!(t.contains("2026-12-02T02:47:44.123Z"), "{t}");
    }

    #[test]
    fn follow_prints_each_event_once() {
        let mut seen = BTreeSet::new();
        let a = ev(1000, EventKind::HostUp, Some("h1"), None);
        let b = ev(2000, EventKind::HostDown, Some("h1"), None);
        print_new(true, false, std::slice::from_ref(&a), &mut seen);
        assert_eq!(seen.len(), 1);
        print_new(true, false, &[a.clone(), b.clone()], &mut seen);
        assert!(seen.contains(&key(&b)) && !seen.contains(&key(&a)));
    }
}
