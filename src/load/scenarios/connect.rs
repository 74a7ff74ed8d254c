//! Connect: each slot opens a connection, completes the handshake, starts the close handshake
//! at once, and opens the next when the server has closed. The driver counts the handshakes
//! and times them; failures pause the slot briefly and count by cause.

use super::super::driver::{Conns, Workload};
use super::Tally;

/// The connect workload of one thread.
#[derive(Debug)]
pub(crate) struct Connect;

impl Workload for Connect {
    type Peer = ();

    fn peer(&mut self, _slot: usize) {}

    fn on_open(&mut self, conns: &mut Conns<()>, key: usize, now: u64) {
        conns.close(key, now);
    }

    fn finish(self) -> Tally {
        Tally::new()
    }
}
