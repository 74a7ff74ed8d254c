//! `/metrics` in the Prometheus text format.

use std::fmt::Write;
use std::sync::atomic::Ordering;

use crate::hub::Hub;
use crate::reactor::{COUNTED_CLOSE_CODES, REJECTIONS, Rejection, StatsSnapshot};

fn metric(out: &mut String, name: &str, kind: &str, help: &str, value: u64) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}");
}

/// Renders every counter of the engine and the hub.
pub fn render(stats: &StatsSnapshot, hub: &Hub) -> String {
    let mut out = String::with_capacity(4096);
    metric(&mut out, "hibiki_connections", "gauge", "WebSocket and SSE connections open.", stats.connections);
    metric(&mut out, "hibiki_connections_total", "counter", "Connections opened.", stats.connections_total);
    metric(&mut out, "hibiki_tcp_accepted_total", "counter", "TCP connections accepted.", stats.accepted);
    metric(
        &mut out,
        "hibiki_connections_abnormal_total",
        "counter",
        "Connections ended without a close handshake.",
        stats.abnormal,
    );
    let _ = writeln!(
        out,
        "# HELP hibiki_connections_closed_total Connections closed, by close code.\n# TYPE hibiki_connections_closed_total counter"
    );
    for (code, n) in COUNTED_CLOSE_CODES.iter().zip(stats.close_codes) {
        let label = if *code == 0 { "other".to_string() } else { code.to_string() };
        let _ = writeln!(out, "hibiki_connections_closed_total{{code=\"{label}\"}} {n}");
    }
    let _ = writeln!(
        out,
        "# HELP hibiki_handshakes_rejected_total Requests refused before the upgrade, by cause.\n# TYPE hibiki_handshakes_rejected_total counter"
    );
    for ((_, label), n) in REJECTIONS.iter().zip(stats.rejections) {
        let _ = writeln!(out, "hibiki_handshakes_rejected_total{{cause=\"{label}\"}} {n}");
    }
    metric(
        &mut out,
        "hibiki_per_ip_rejections_total",
        "counter",
        "Connections refused with 429 (per-IP cap).",
        stats.rejected(Rejection::PerIp),
    );
    metric(&mut out, "hibiki_messages_in_total", "counter", "Messages received.", stats.messages_in);
    metric(
        &mut out,
        "hibiki_messages_out_total",
        "counter",
        "Messages and frames queued to peers.",
        stats.messages_out,
    );
    metric(&mut out, "hibiki_bytes_in_total", "counter", "Bytes read from sockets.", stats.bytes_in);
    metric(&mut out, "hibiki_bytes_out_total", "counter", "Bytes written to sockets.", stats.bytes_out);
    metric(
        &mut out,
        "hibiki_dropped_volatile_total",
        "counter",
        "Volatile messages dropped for slow consumers.",
        stats.dropped_volatile,
    );
    metric(
        &mut out,
        "hibiki_slow_consumer_closes_total",
        "counter",
        "Connections closed with 1008 past the outbound cap.",
        stats.slow_consumer_closes,
    );
    metric(
        &mut out,
        "hibiki_heartbeat_timeouts_total",
        "counter",
        "Connections closed for not answering pings.",
        stats.heartbeat_timeouts,
    );
    let c = &hub.counters;
    let rooms = c.rooms.load(Ordering::Relaxed);
    metric(&mut out, "hibiki_rooms", "gauge", "Rooms with members on this node (counted per worker).", rooms);
    let members = c.members.load(Ordering::Relaxed);
    metric(&mut out, "hibiki_room_members", "gauge", "Room memberships on this node (connections).", members);
    if let Some(kept) = hub.stores().broker.kept() {
        metric(
            &mut out,
            "hibiki_history_messages",
            "gauge",
            "Messages kept in room history by this node.",
            kept,
        );
    }
    let errors = c.store_errors.load(Ordering::Relaxed);
    metric(&mut out, "hibiki_store_errors_total", "counter", "Room-state calls that failed.", errors);
    let holes = c.holes_filled.load(Ordering::Relaxed);
    metric(
        &mut out,
        "hibiki_holes_filled_total",
        "counter",
        "Holes in live streams fetched from history.",
        holes,
    );
    let gaps = c.gaps.load(Ordering::Relaxed);
    metric(&mut out, "hibiki_gaps_total", "counter", "Gaps members were told of.", gaps);
    let healthy = u64::from(hub.health().is_ok());
    metric(&mut out, "hibiki_stores_up", "gauge", "1 while room state is reachable, else 0.", healthy);
    metric(
        &mut out,
        "hibiki_published_total",
        "counter",
        "Messages published to rooms.",
        c.published.load(Ordering::Relaxed),
    );
    metric(
        &mut out,
        "hibiki_ticks_total",
        "counter",
        "Ticks run (per worker).",
        c.ticks.load(Ordering::Relaxed),
    );
    metric(
        &mut out,
        "hibiki_late_ticks_total",
        "counter",
        "Ticks later than 1.5 periods.",
        c.late_ticks.load(Ordering::Relaxed),
    );
    metric(
        &mut out,
        "hibiki_batches_total",
        "counter",
        "Batch frames sent from tick rooms.",
        c.batches.load(Ordering::Relaxed),
    );
    metric(
        &mut out,
        "hibiki_replaced_total",
        "counter",
        "Keyed messages replaced by a newer state before sending.",
        c.replaced.load(Ordering::Relaxed),
    );
    metric(
        &mut out,
        "hibiki_tick_deferred_total",
        "counter",
        "Tick-room members whose batch waited for a later tick (the tick's work budget was spent).",
        c.deferred.load(Ordering::Relaxed),
    );
    out
}
