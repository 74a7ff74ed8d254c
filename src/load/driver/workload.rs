//! What a scenario plugs into the driver: the calls it gets on its thread.

use super::{Conns, Timeline};
use crate::load::scenarios::Tally;

/// What a scenario does with its connections. The driver calls it on its thread.
pub(crate) trait Workload {
    /// Per-connection state.
    type Peer;

    /// The state of the connection in slot `slot` (a global index over all threads).
    fn peer(&mut self, slot: usize) -> Self::Peer;

    /// The handshake of `key` completed.
    fn on_open(&mut self, conns: &mut Conns<Self::Peer>, key: usize, now: u64) {
        let _ = (conns, key, now);
    }

    /// Whether this thread's connections are ready for the run once open (room: every join
    /// answered); asked while the thread sets up, until true.
    fn settled(&mut self, now: u64) -> bool {
        let _ = now;
        true
    }

    /// Every thread has its connections: traffic starts.
    fn start(&mut self, conns: &mut Conns<Self::Peer>, timeline: Timeline, now: u64) {
        let _ = (conns, timeline, now);
    }

    /// A message arrived on `key`.
    fn on_message(&mut self, conns: &mut Conns<Self::Peer>, key: usize, payload: &[u8], now: u64) {
        let _ = (conns, key, payload, now);
    }

    /// An open connection failed; `peer` was its state.
    fn on_lost(&mut self, key: usize, peer: &Self::Peer) {
        let _ = (key, peer);
    }

    /// Timer-driven sends during the run; returns when to be called next.
    fn on_tick(&mut self, conns: &mut Conns<Self::Peer>, now: u64) -> Option<u64> {
        let _ = (conns, now);
        None
    }

    /// The window ended: send nothing more.
    fn stop(&mut self, now: u64) {
        let _ = now;
    }

    /// Whether every answer still expected has arrived (the drain can end early).
    fn drained(&self) -> bool {
        true
    }

    /// Whether [`on_tick`](Self::on_tick) must run on time to the microsecond rather than
    /// the millisecond of the poll timeout (game ticks): the loop then spins the last
    /// millisecond before each wake.
    fn precise(&self) -> bool {
        false
    }

    /// Messages counted so far (progress).
    fn received(&self) -> u64 {
        0
    }

    /// The counts of this thread.
    fn finish(self) -> Tally;
}
