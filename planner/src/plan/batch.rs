//! Orders the planned migrations into batches of bounded parallelism.
//!
//! A migration into host X may rely on room freed by an earlier migration out of X, so it
//! goes in a later batch than that one; otherwise migrations keep their planning order
//! (overload relief first) and fill the earliest batch with room.

use crate::model::{HostIx, VmIx};
use crate::plan::state::{State, NONE};
use crate::plan::types::Migration;

pub(crate) fn order(s: &State, max_parallel: usize) -> Vec<Migration> {
    let cap = max_parallel.max(1);
    // Last batch in which something left each host.
    let mut left_in: Vec<Option<usize>> = vec![None; s.view.hosts.len()];
    let mut fill: Vec<usize> = Vec::new();
    let mut first_open = 0usize;
    let mut out = Vec::new();
    for mv in s.moves.iter().filter(|m| m.from != NONE) {
        let lo = left_in[mv.to as usize].map_or(0, |b| b + 1).max(first_open);
        let mut b = lo;
        while fill.get(b).is_some_and(|&n| n >= cap) {
            b += 1;
        }
        if fill.len() <= b {
            fill.resize(b + 1, 0);
        }
        fill[b] += 1;
        while fill.get(first_open).is_some_and(|&n| n >= cap) {
            first_open += 1;
        }
        let f = mv.from as usize;
        left_in[f] = Some(left_in[f].map_or(b, |x| x.max(b)));
        out.push(Migration {
            vm: VmIx(mv.vm),
            from: HostIx(mv.from),
            to: HostIx(mv.to),
            reason: mv.reason,
            batch: b,
            waits_for_wake: s.waking[mv.to as usize],
        });
    }
    out.sort_by_key(|m| m.batch);
    out
}
