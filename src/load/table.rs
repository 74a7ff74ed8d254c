//! The summary as a table for people: one line per concern, figures grouped by thousands.

use std::fmt::{self, Write as _};

use super::Scenario;
use super::report::{SequenceStats, Summary, group, group_f};

impl Summary {
    /// The summary as a human-readable table.
    pub fn table(&self) -> String {
        let mut t = String::new();
        let _ = self.write_table(&mut t);
        t
    }

    fn write_table(&self, t: &mut String) -> fmt::Result {
        let target =
            if self.nodes.len() > 1 { format!("{} nodes", self.nodes.len()) } else { self.url.clone() };
        write!(
            t,
            "hibiki load {} · {target} · {} thread{} · ",
            self.scenario,
            self.threads,
            if self.threads == 1 { "" } else { "s" },
        )?;
        if self.duration_secs > 0.0 {
            writeln!(t, "{:.1} s measured after {:.1} s warmup", self.duration_secs, self.warmup_secs)?;
        } else {
            writeln!(t, "no traffic: no connection opened")?;
        }
        let c = &self.connections;
        write!(t, "  {:<16}{} opened", "connections", group(c.opened))?;
        if self.scenario != Scenario::Connect {
            write!(
                t,
                " of {} in {:.2} s, {} open at the end",
                group(c.attempted),
                c.setup_secs,
                group(c.open_at_end)
            )?;
        }
        write!(t, ", {} failed", group(c.failed))?;
        if c.deflated > 0 {
            write!(t, ", {} with permessage-deflate", group(c.deflated))?;
        }
        writeln!(t)?;
        for (cause, n) in &c.failures {
            writeln!(t, "  {:<16}{:>10}  {cause}", "", group(*n))?;
        }
        if self.nodes.len() > 1 {
            self.write_nodes(t)?;
        }
        if let Some(m) = &self.messages {
            let what = if self.scenario == Scenario::Echo { "round trips" } else { "deliveries" };
            writeln!(
                t,
                "  {:<16}{} {what} · {}/s · {} B payload · {} sent · {} errors",
                "messages",
                group(m.received),
                group_f(m.per_sec),
                m.payload,
                group(m.sent),
                group(m.errors)
            )?;
            if m.unanswered > 0 || m.rate_shortfall > 0 {
                writeln!(
                    t,
                    "  {:<16}{} unanswered after the drain, {} sends skipped (no connection had room)",
                    "",
                    group(m.unanswered),
                    group(m.rate_shortfall)
                )?;
            }
        }
        if let Some(b) = &self.broadcast {
            let pace = match b.window {
                Some(w) => format!("{w} unconfirmed each (closed loop, {}/s each)", group_f(b.rate)),
                None => format!("{}/s each", group_f(b.rate)),
            };
            writeln!(
                t,
                "  {:<16}{} published by {} at {pace} · {} members · {} expected · {} delivered · {} {}",
                "broadcast",
                group(b.published),
                b.publishers,
                group(b.members),
                group(b.expected),
                group(b.delivered),
                group(b.lost),
                match self.scenario {
                    Scenario::Game => "missed ticks",
                    Scenario::Tick => "lost or replaced",
                    _ => "lost",
                }
            )?;
        }
        if let Some(r) = &self.room {
            write!(
                t,
                "  {:<16}{} · {} joined · {} join failures",
                "room",
                r.room,
                group(r.joined),
                group(r.join_failed)
            )?;
            if let (Some(batches), Some(per)) = (r.batches, r.batches_per_sec_per_client) {
                write!(t, " · {} batches · {}/s per client", group(batches), group_f(per))?;
            }
            if self.scenario == Scenario::Tick {
                match (r.late_ticks, r.server_ticks) {
                    (Some(late), Some(ticks)) => {
                        write!(t, " · {} late ticks of {}", group(late), group(ticks))?;
                    }
                    (Some(late), None) => write!(t, " · {} late ticks", group(late))?,
                    (None, _) => write!(t, " · late ticks unknown (no /metrics)")?,
                }
            }
            writeln!(t)?;
        }
        if self.scenario.app() {
            write!(t, "  {:<16}", "seqs")?;
            match &self.sequence {
                Some(q) => {
                    write_sequence(t, q)?;
                    write!(
                        t,
                        " · {} of {} subscribers affected",
                        group(q.affected_subscribers),
                        group(q.subscribers)
                    )?;
                }
                None => write!(t, "unknown: no publish was acked with a seq")?,
            }
            if let Some(r) = &self.room {
                write!(t, " · {} acked", group(r.acked))?;
                if r.ack_failed > 0 || r.unacked > 0 {
                    write!(t, " ({} failed, {} unanswered)", group(r.ack_failed), group(r.unacked))?;
                }
                if r.epochs > 1 {
                    write!(t, " · the room's numbering started over ({} epochs)", r.epochs)?;
                }
            }
            writeln!(t)?;
        }
        if let Some(k) = &self.connect {
            writeln!(
                t,
                "  {:<16}{} {}handshakes · {}/s · {} at once",
                "connect",
                group(k.handshakes),
                if k.tls { "TLS " } else { "" },
                group_f(k.per_sec),
                k.concurrency
            )?;
        }
        let label = if self.scenario == Scenario::Echo { "round trip µs" } else { "latency µs" };
        let jitter = if self.scenario == Scenario::Tick { "batch jitter µs" } else { "tick jitter µs" };
        for (name, p) in [
            (label, &self.latency),
            ("tick→batch µs", &self.tick_delay),
            (jitter, &self.jitter),
            ("handshake µs", &self.handshake),
        ] {
            if let Some(p) = p {
                writeln!(
                    t,
                    "  {name:<16}p50 {}  p90 {}  p99 {}  p99.9 {}  max {}  (mean {:.0}, n={})",
                    group(p.p50),
                    group(p.p90),
                    group(p.p99),
                    group(p.p999),
                    group(p.max),
                    p.mean,
                    group(p.count)
                )?;
            }
        }
        if let Some(mem) = &self.memory {
            writeln!(
                t,
                "  {:<16}server RSS {} KiB -> {} KiB · {:.0} B per connection",
                "memory",
                group(mem.rss_before_kib),
                group(mem.rss_after_kib),
                mem.per_connection_bytes
            )?;
        }
        let u = &self.usage;
        if !u.servers.is_empty() {
            write!(t, "  {:<16}", "server")?;
            for (i, s) in u.servers.iter().enumerate() {
                write!(t, "{}pid {}: ", if i > 0 { " · " } else { "" }, s.pid)?;
                match s.cpu_secs {
                    Some(cpu) => write!(t, "{cpu:.2} CPU s")?,
                    None => write!(t, "CPU time unavailable")?,
                }
            }
            if u.servers.len() > 1 {
                match u.server_cpu_secs {
                    Some(cpu) => write!(t, " · sum {cpu:.2} CPU s")?,
                    None => write!(t, " · sum unknown")?,
                }
            }
            if let Some(wait) = u.server_cpu_wait_secs {
                write!(t, " (+{wait:.2} s waiting for a CPU)")?;
            }
            if let Some(per) = u.per_server_cpu_sec {
                let unit = match self.scenario {
                    Scenario::Connect if self.connect.as_ref().is_some_and(|k| k.tls) => "TLS handshakes",
                    Scenario::Connect => "handshakes",
                    Scenario::Echo => "round trips",
                    _ => "deliveries",
                };
                write!(t, " · {} {unit} per server CPU-s", group_f(per))?;
            }
            writeln!(t)?;
        }
        for (i, r) in u.redis.iter().enumerate() {
            write!(t, "  {:<16}{}: ", if i == 0 { "redis" } else { "" }, r.url)?;
            match (r.cpu_secs, r.calls) {
                (Some(cpu), Some(calls)) => {
                    write!(t, "{cpu:.2} CPU s")?;
                    if let Some(scripts) = r.script_calls.filter(|&n| n > 0) {
                        write!(t, " · {} script calls", group(scripts))?;
                        match r.script_calls_per_publish {
                            Some(per) if per < 1.0 => write!(
                                t,
                                " ({per:.3} per numbered publish: {:.1} publishes per call)",
                                1.0 / per
                            )?,
                            Some(per) => write!(t, " ({per:.2} per numbered publish)")?,
                            None => {}
                        }
                    }
                    write!(t, " · {} commands counted", group(calls))?;
                    if let Some(per) = r.calls_per_publish {
                        write!(t, " ({per:.2} per numbered publish")?;
                        if r.script_calls.is_some_and(|n| n > 0) {
                            write!(t, ", those run inside scripts included")?;
                        }
                        write!(t, ")")?;
                    }
                    let mut top: Vec<(&String, &u64)> = r.commands.iter().collect();
                    top.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
                    for (j, (name, n)) in top.iter().take(4).enumerate() {
                        write!(t, "{}{name} {}", if j == 0 { " · " } else { ", " }, group(**n))?;
                    }
                }
                _ => write!(t, "unavailable ({})", r.error.as_deref().unwrap_or("no sample"))?,
            }
            writeln!(t)?;
        }
        if u.redis.len() > 1 {
            match u.redis_cpu_secs {
                Some(cpu) => writeln!(t, "  {:<16}sum {cpu:.2} CPU s", "")?,
                None => writeln!(t, "  {:<16}sum unknown", "")?,
            }
        }
        write!(t, "  {:<16}{:.2} CPU s", "load tool", u.load_cpu_secs)?;
        if let Some(wait) = u.load_cpu_wait_secs {
            write!(t, " (+{wait:.2} s waiting for a CPU)")?;
        }
        writeln!(t)?;
        if u.contended(self.duration_secs) {
            writeln!(
                t,
                "  note: other processes competed for the CPUs during the window; rates understate \
                 what idle cores would give"
            )?;
        }
        Ok(())
    }
}

impl Summary {
    /// One line per node: the connections that went there and, for room and tick, what its
    /// subscribers saw.
    fn write_nodes(&self, t: &mut String) -> fmt::Result {
        let others = match self.scenario {
            Scenario::Broadcast | Scenario::Room => "subscribers",
            Scenario::Game | Scenario::Tick => "clients",
            _ => "connections",
        };
        let width = self.nodes.iter().map(|n| n.url.len()).max().unwrap_or(0);
        for (i, node) in self.nodes.iter().enumerate() {
            write!(t, "  {:<16}{:<width$}  ", if i == 0 { "nodes" } else { "" }, node.url)?;
            let mut parts = Vec::new();
            if node.publishers > 0 {
                let s = if node.publishers == 1 { "" } else { "s" };
                parts.push(format!("{} publisher{s}", group(node.publishers)));
            }
            if node.subscribers > 0 || node.publishers == 0 {
                parts.push(format!("{} {others}", group(node.subscribers)));
            }
            if let Some(joined) = node.joined.filter(|_| node.subscribers > 0) {
                parts.push(format!("{} joined", group(joined)));
            }
            t.push_str(&parts.join(" · "));
            if let Some(q) = node.sequence.as_ref().filter(|_| node.subscribers > 0) {
                t.push_str(" · ");
                write_sequence(t, q)?;
            }
            writeln!(t)?;
        }
        Ok(())
    }
}

/// `3 lost (2 subscribers) · 0 duplicated · 0 reordered · 0 gaps announced` (and replaced, tick).
fn write_sequence(t: &mut String, q: &SequenceStats) -> fmt::Result {
    let items = [
        (q.lost, q.lost_subscribers, "lost"),
        (q.duplicated, q.duplicated_subscribers, "duplicated"),
        (q.reordered, q.reordered_subscribers, "reordered"),
        (q.gaps, q.gap_subscribers, "gaps announced"),
    ];
    for (i, (n, subscribers, what)) in items.into_iter().enumerate() {
        write!(t, "{}{} {what}", if i > 0 { " · " } else { "" }, group(n))?;
        if n > 0 {
            let s = if subscribers == 1 { "" } else { "s" };
            write!(t, " ({} subscriber{s})", group(subscribers))?;
        }
    }
    if let Some(replaced) = q.replaced {
        write!(t, " · {} replaced (keyed)", group(replaced))?;
    }
    if q.closed_subscribers > 0 {
        let s = if q.closed_subscribers == 1 { "" } else { "s" };
        write!(
            t,
            " · {} owed to {} subscriber{s} after their connection ended",
            group(q.after_close),
            group(q.closed_subscribers)
        )?;
    }
    Ok(())
}
