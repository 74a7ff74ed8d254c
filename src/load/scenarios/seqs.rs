//! What each subscriber of a room saw of the room's numbering. Every `message` carries the
//! room's `seq`; each subscriber keeps one bit per seq of the span it saw (one bit per
//! delivery expected, so a run's bitmaps take an eighth of a byte per delivery); publishers'
//! acks say which seqs were published. At the end of the drain the two are compared: a seq
//! acked to a publisher and never received by a subscriber is lost to it, unless the
//! subscriber's connection ended before it: what a closed connection is owed past the last
//! seq it received is counted apart (`after_close`), as the close told the client (a
//! reconnecting client resumes from there and gets them or a `history_gap`).
//!
//! Every subscriber followed joined before the first publish, so it is owed every seq the
//! publishers got acked; seqs it received that no ack named (another client's messages, a
//! publish whose ack never came) count neither way.

use super::super::report::SequenceStats;

/// A set of seqs as sorted, disjoint, half-open ranges (a room's seqs are mostly
/// consecutive: a few ranges).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Seqs {
    ranges: Vec<(u64, u64)>,
}

impl Seqs {
    /// Adds `seq`.
    pub(crate) fn insert(&mut self, seq: u64) {
        if let Some(last) = self.ranges.last_mut() {
            if last.1 == seq {
                last.1 += 1;
                return;
            }
        }
        // The first range that starts after `seq`.
        let i = self.ranges.partition_point(|&(start, _)| start <= seq);
        if i > 0 && seq < self.ranges[i - 1].1 {
            return;
        }
        let after_prev = i > 0 && self.ranges[i - 1].1 == seq;
        let before_next = i < self.ranges.len() && self.ranges[i].0 == seq + 1;
        match (after_prev, before_next) {
            (true, true) => {
                self.ranges[i - 1].1 = self.ranges[i].1;
                self.ranges.remove(i);
            }
            (true, false) => self.ranges[i - 1].1 = seq + 1,
            (false, true) => self.ranges[i].0 = seq,
            (false, false) => self.ranges.insert(i, (seq, seq + 1)),
        }
    }

    /// Adds every seq of `other`.
    pub(crate) fn merge(&mut self, other: Self) {
        if other.ranges.is_empty() {
            return;
        }
        self.ranges.extend(other.ranges);
        self.ranges.sort_unstable();
        let mut merged: Vec<(u64, u64)> = Vec::with_capacity(self.ranges.len());
        for (start, end) in self.ranges.drain(..) {
            match merged.last_mut() {
                Some(last) if start <= last.1 => last.1 = last.1.max(end),
                _ => merged.push((start, end)),
            }
        }
        self.ranges = merged;
    }

    /// How many seqs.
    pub(crate) fn len(&self) -> u64 {
        self.ranges.iter().map(|(start, end)| end - start).sum()
    }
}

/// One subscriber's seqs: a bitmap from `base`, grown as seqs arrive.
#[derive(Clone, Debug)]
pub(crate) struct Track {
    /// The node (index of the run's URLs) the subscriber is on.
    pub(crate) node: usize,
    /// The seq of bit 0 (a multiple of 64); meaningful once `max > 0`.
    base: u64,
    bits: Vec<u64>,
    /// The highest seq received (0: none yet).
    max: u64,
    /// Seqs received again.
    pub(crate) duplicated: u64,
    /// Seqs received after a higher one.
    pub(crate) reordered: u64,
    /// `history_gap` notices.
    pub(crate) gaps: u64,
    /// Seqs too far from the others to be of this run (more than the span apart).
    pub(crate) out_of_range: u64,
    /// The connection ended (closed by the server, or failed) before the run did.
    pub(crate) closed: bool,
}

impl Track {
    pub(crate) fn new(node: usize) -> Self {
        Self {
            node,
            base: 0,
            bits: Vec::new(),
            max: 0,
            duplicated: 0,
            reordered: 0,
            gaps: 0,
            out_of_range: 0,
            closed: false,
        }
    }

    /// Counts a delivery of `seq` (not 0); the bitmap spans at most `span` seqs. Returns
    /// whether `seq` is new to this subscriber (not a repeat, not out of range).
    pub(crate) fn see(&mut self, seq: u64, span: u64) -> bool {
        if self.max == 0 {
            self.base = seq & !63;
            self.max = seq;
            self.bits.push(1 << (seq - self.base));
            return true;
        }
        if seq < self.base {
            let words = (self.base - seq).div_ceil(64);
            if (self.bits.len() as u64 + words) * 64 > span {
                self.out_of_range += 1;
                return false;
            }
            self.bits.splice(0..0, std::iter::repeat_n(0, words as usize));
            self.base -= words * 64;
        }
        let at = seq - self.base;
        if at >= span {
            self.out_of_range += 1;
            return false;
        }
        let word = (at / 64) as usize;
        if word >= self.bits.len() {
            self.bits.resize(word + 1, 0);
        }
        let bit = 1u64 << (at % 64);
        if self.bits[word] & bit != 0 {
            self.duplicated += 1;
            return false;
        }
        self.bits[word] |= bit;
        if seq < self.max {
            self.reordered += 1;
        } else {
            self.max = seq;
        }
        true
    }

    /// How many seqs of `[start, end)` were received.
    fn received_in(&self, start: u64, end: u64) -> u64 {
        if self.max == 0 {
            return 0;
        }
        let top = self.base + self.bits.len() as u64 * 64;
        let (start, end) = (start.max(self.base), end.min(top));
        let mut count = 0;
        let mut at = start;
        while at < end {
            let offset = at - self.base;
            let (word, bit) = ((offset / 64) as usize, offset % 64);
            let n = (64 - bit).min(end - at);
            let mask = if n == 64 { u64::MAX } else { ((1u64 << n) - 1) << bit };
            count += u64::from((self.bits[word] & mask).count_ones());
            at += n;
        }
        count
    }

    /// How many seqs of `seqs` were not received.
    pub(crate) fn missing(&self, seqs: &Seqs) -> u64 {
        let received: u64 = seqs.ranges.iter().map(|&(start, end)| self.received_in(start, end)).sum();
        seqs.len() - received
    }

    /// Of [`missing`](Self::missing), how many are above the highest seq received (all of
    /// them when none was).
    fn missing_above_max(&self, seqs: &Seqs) -> u64 {
        seqs.ranges
            .iter()
            .map(|&(start, end)| {
                let start = start.max(self.max + 1);
                if start >= end { 0 } else { end - start - self.received_in(start, end) }
            })
            .sum()
    }
}

/// The totals over `tracks`, and per node (`nodes` of them): lost are the seqs of
/// `published` not received; with `keyed` (tick) those of `keyed` are counted apart, as
/// replaced.
pub(crate) fn account(
    tracks: &[Track],
    published: &Seqs,
    keyed: Option<&Seqs>,
    nodes: usize,
) -> (SequenceStats, Vec<SequenceStats>) {
    let blank = SequenceStats { replaced: keyed.map(|_| 0), ..SequenceStats::default() };
    let mut total = blank.clone();
    let mut per_node = vec![blank; nodes];
    for track in tracks {
        let missing = track.missing(published);
        let replaced = keyed.map(|k| track.missing(k));
        // A closed connection is owed nothing silently past its last seq.
        let after_close = if track.closed {
            track.missing_above_max(published) - keyed.map_or(0, |k| track.missing_above_max(k))
        } else {
            0
        };
        let lost = missing - replaced.unwrap_or(0) - after_close;
        for stats in [&mut total, &mut per_node[track.node]] {
            stats.subscribers += 1;
            let add = |n: u64, sum: &mut u64, affected: &mut u64| {
                *sum += n;
                *affected += u64::from(n > 0);
            };
            add(lost, &mut stats.lost, &mut stats.lost_subscribers);
            add(track.duplicated, &mut stats.duplicated, &mut stats.duplicated_subscribers);
            add(track.reordered, &mut stats.reordered, &mut stats.reordered_subscribers);
            add(track.gaps, &mut stats.gaps, &mut stats.gap_subscribers);
            add(after_close, &mut stats.after_close, &mut stats.closed_subscribers);
            if let (Some(sum), Some(n)) = (stats.replaced.as_mut(), replaced) {
                *sum += n;
            }
            let affected = lost + track.duplicated + track.reordered + track.gaps > 0;
            stats.affected_subscribers += u64::from(affected);
        }
    }
    (total, per_node)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seqs(list: impl IntoIterator<Item = u64>) -> Seqs {
        let mut s = Seqs::default();
        for seq in list {
            s.insert(seq);
        }
        s
    }

    #[test]
    fn seq_sets_keep_ranges() {
        let s = seqs([5, 6, 7, 1, 3, 2, 10, 9, 6]);
        assert_eq!(s.ranges, [(1, 4), (5, 8), (9, 11)]);
        assert_eq!(s.len(), 8);
        let mut a = seqs([1, 2, 3]);
        a.merge(seqs([3, 4, 8]));
        a.merge(Seqs::default());
        assert_eq!(a.ranges, [(1, 5), (8, 9)]);
        assert_eq!(seqs([4, 2, 3]).ranges, [(2, 5)]);
    }

    #[test]
    fn tracks_count_what_went_wrong() {
        let span = 1 << 16;
        let mut t = Track::new(0);
        // 1..=200 except 50, 120 twice, 150 after 151, 70 after everything.
        for seq in (1..=200).filter(|s| ![50, 70, 150].contains(s)) {
            assert!(t.see(seq, span));
            if seq == 120 {
                assert!(!t.see(120, span), "a repeat");
            }
            if seq == 151 {
                assert!(t.see(150, span), "late, but new");
            }
        }
        assert!(t.see(70, span));
        let published = seqs(1..=200);
        assert_eq!(t.missing(&published), 1, "50");
        assert_eq!((t.duplicated, t.reordered, t.out_of_range), (1, 2, 0));
        // Seqs below the first one received grow the bitmap downwards.
        let mut late = Track::new(1);
        assert!(late.see(300, span) && late.see(100, span) && late.see(301, span));
        assert_eq!(late.reordered, 1);
        assert_eq!(late.missing(&seqs([100, 300, 301, 302])), 1);
        assert_eq!(Track::new(0).missing(&published), 200, "nothing received");
        // A seq of another life of the room, far away, is not tracked.
        assert!(!late.see(300 + span, span) && !late.see(1, 64));
        assert_eq!(late.out_of_range, 2);
    }

    #[test]
    fn accounts_per_node_and_keyed_apart() {
        let span = 1 << 16;
        let published = seqs(1..=10);
        let keyed = seqs([2, 4]);
        let mut a = Track::new(0);
        let mut b = Track::new(1);
        for seq in 1..=10 {
            a.see(seq, span);
            if seq != 2 && seq != 7 {
                b.see(seq, span);
            }
        }
        b.gaps = 1;
        let (total, nodes) = account(&[a.clone(), b.clone()], &published, None, 2);
        assert_eq!((total.subscribers, total.lost, total.lost_subscribers), (2, 2, 1));
        assert_eq!((total.gaps, total.gap_subscribers, total.affected_subscribers), (1, 1, 1));
        assert_eq!(total.replaced, None);
        assert_eq!((nodes[0].lost, nodes[1].lost, nodes[1].subscribers), (0, 2, 1));
        let (total, _) = account(&[a, b.clone()], &published, Some(&keyed), 2);
        assert_eq!((total.lost, total.replaced), (1, Some(1)), "7 lost, 2 replaced");
        // Closed after 6: 7 is still a silent loss (a hole below what it received), 8..=10
        // are owed after the close.
        let mut closed = Track::new(0);
        for seq in [1, 2, 3, 4, 5, 6] {
            closed.see(seq, span);
        }
        closed.closed = true;
        let (total, _) = account(&[closed.clone(), b], &published, None, 2);
        assert_eq!((total.lost, total.lost_subscribers), (2, 1), "b's 2 and 7");
        assert_eq!((total.after_close, total.closed_subscribers), (4, 1), "7..=10 after 6");
        let mut holed = Track::new(0);
        for seq in [1, 2, 4] {
            holed.see(seq, span);
        }
        holed.closed = true;
        let (total, _) = account(&[holed], &published, None, 1);
        assert_eq!((total.lost, total.after_close), (1, 6), "3 lost silently; 5..=10 after the close");
        let mut never = Track::new(0);
        never.closed = true;
        let (total, _) = account(&[never], &published, None, 1);
        assert_eq!((total.lost, total.after_close, total.affected_subscribers), (0, 10, 0));
    }
}
