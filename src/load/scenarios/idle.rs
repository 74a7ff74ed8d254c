//! Idle: connections opened and held without a message (pings from the server are answered
//! by the protocol core). The driver reports how many are still open at the end.

use super::super::driver::Workload;
use super::Tally;

/// The idle workload of one thread.
#[derive(Debug)]
pub(crate) struct Idle;

impl Workload for Idle {
    type Peer = ();

    fn peer(&mut self, _slot: usize) {}

    fn finish(self) -> Tally {
        Tally::new()
    }
}
