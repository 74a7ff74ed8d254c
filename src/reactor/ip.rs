//! Connections per IP address, shared by the workers (touched on connect and disconnect only).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::sync::atomic::AtomicUsize;

#[derive(Debug)]
pub(crate) struct IpCounter {
    max: usize,
    counts: Mutex<HashMap<IpAddr, usize>>,
    /// TCP connections held by the whole server, for `max_connections`.
    pub(crate) total: AtomicUsize,
}

impl IpCounter {
    pub(crate) fn new(max: usize) -> Self {
        Self { max, counts: Mutex::new(HashMap::new()), total: AtomicUsize::new(0) }
    }

    /// Counts one more connection from `ip`, unless that would pass the cap.
    pub(crate) fn acquire(&self, ip: IpAddr) -> bool {
        if self.max == usize::MAX {
            return true;
        }
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let count = counts.entry(ip).or_insert(0);
        if *count >= self.max {
            return false;
        }
        *count += 1;
        true
    }

    pub(crate) fn release(&self, ip: IpAddr) {
        if self.max == usize::MAX {
            return;
        }
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = counts.get_mut(&ip) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&ip);
            }
        }
    }
}
