//! A hand-written SVG of the latency distribution: latency against percentile, with the
//! percentile axis stretched as `log10(1 / (1 - p))` so that 90 %, 99 %, 99.9 % ... are
//! evenly spaced and the tail is visible.

use std::fmt::Write as _;

use hdrhistogram::Histogram;

use super::report::Summary;

const WIDTH: f64 = 820.0;
const HEIGHT: f64 = 480.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 170.0;
const TOP: f64 = 50.0;
const BOTTOM: f64 = 60.0;
const COLORS: [&str; 3] = ["#1f6feb", "#d1242f", "#2da44e"];

/// The percentile curves of a summary's latency histograms (latency, tick jitter, handshake)
/// as an SVG document, or `None` when none has samples.
pub fn svg(summary: &Summary) -> Option<String> {
    let what = match summary.scenario {
        super::Scenario::Echo => "round trip",
        _ => "latency",
    };
    let curves = &summary.curves;
    let mut series: Vec<(&str, &Histogram<u64>)> = Vec::new();
    for (name, h) in [(what, &curves.latency), ("tick jitter", &curves.jitter)] {
        if let Some(h) = h.as_ref().filter(|h| !h.is_empty()) {
            series.push((name, h));
        }
    }
    // Connect and idle send no messages: their curve is the handshake's.
    if series.is_empty() {
        if let Some(h) = curves.handshake.as_ref().filter(|h| !h.is_empty()) {
            series.push(("handshake", h));
        }
    }
    if series.is_empty() {
        return None;
    }
    let count = series.iter().map(|(_, h)| h.len()).max().unwrap_or(1).max(10);
    // Up to the percentile the samples can support: 1 - 1/count.
    let x_max = (count as f64).log10().clamp(1.0, 6.0);
    let y_max = nice_ceil(series.iter().map(|(_, h)| h.max()).max().unwrap_or(1).max(1) as f64);
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let px = |x: f64| LEFT + x / x_max * plot_w;
    let py = |y: f64| TOP + plot_h - y / y_max * plot_h;

    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r##"<rect width="100%" height="100%" fill="#ffffff"/>"##);
    let _ = writeln!(
        s,
        r#"<text x="{LEFT}" y="22" font-size="15" font-weight="bold">hibiki load {}: {} by percentile (µs)</text>"#,
        summary.scenario, what
    );
    let _ = writeln!(
        s,
        r##"<text x="{LEFT}" y="38" fill="#57606a">{} · {} thread(s) · {:.1} s measured</text>"##,
        escape(&summary.url),
        summary.threads,
        summary.duration_secs
    );
    // Grid and axes.
    for i in 0..=x_max.floor() as u32 {
        let x = px(f64::from(i));
        let _ = writeln!(
            s,
            r##"<line x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{:.1}" stroke="#d0d7de"/><text x="{x:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
            TOP + plot_h,
            TOP + plot_h + 18.0,
            percentile_label(i)
        );
    }
    for i in 0..=5 {
        let v = y_max * f64::from(i) / 5.0;
        let y = py(v);
        let _ = writeln!(
            s,
            r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#d0d7de"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            LEFT + plot_w,
            LEFT - 6.0,
            y + 4.0,
            super::report::group(v.round() as u64)
        );
    }
    let _ = writeln!(
        s,
        r##"<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#57606a"/>"##
    );
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">percentile</text>"#,
        LEFT + plot_w / 2.0,
        HEIGHT - 16.0
    );
    let _ = writeln!(
        s,
        r#"<text transform="translate(20 {:.1}) rotate(-90)" text-anchor="middle">µs</text>"#,
        TOP + plot_h / 2.0
    );
    // Curves and legend.
    for (i, (name, h)) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let mut points = String::new();
        const STEPS: u32 = 400;
        for step in 0..=STEPS {
            let x = x_max * f64::from(step) / f64::from(STEPS);
            let q = 1.0 - 10f64.powf(-x);
            let v = h.value_at_quantile(q) as f64;
            let _ = write!(points, "{:.1},{:.1} ", px(x), py(v));
        }
        let _ = writeln!(
            s,
            r#"<polyline fill="none" stroke="{color}" stroke-width="2" points="{}"/>"#,
            points.trim_end()
        );
        let ly = TOP + 10.0 + i as f64 * 62.0;
        let lx = LEFT + plot_w + 14.0;
        let _ = writeln!(
            s,
            r#"<rect x="{lx}" y="{:.1}" width="12" height="12" fill="{color}"/><text x="{:.1}" y="{:.1}">{name}</text>"#,
            ly,
            lx + 18.0,
            ly + 10.0
        );
        for (j, (label, q)) in [("p50", 0.5), ("p99", 0.99), ("max", 1.0)].into_iter().enumerate() {
            let _ = writeln!(
                s,
                r##"<text x="{:.1}" y="{:.1}" fill="#57606a">{label} {} µs</text>"##,
                lx + 18.0,
                ly + 26.0 + j as f64 * 14.0,
                super::report::group(h.value_at_quantile(q))
            );
        }
    }
    s.push_str("</svg>\n");
    Some(s)
}

fn percentile_label(nines: u32) -> &'static str {
    ["0%", "90%", "99%", "99.9%", "99.99%", "99.999%", "99.9999%"][nines.min(6) as usize]
}

/// The smallest of 1, 2, 2.5, 5 × 10^k at or above `v`.
fn nice_ceil(v: f64) -> f64 {
    let magnitude = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 2.5, 5.0, 10.0].into_iter().map(|m| m * magnitude).find(|&n| n >= v).unwrap_or(v)
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nice_numbers() {
        assert_eq!(nice_ceil(1.0), 1.0);
        assert_eq!(nice_ceil(7.0), 10.0);
        assert_eq!(nice_ceil(180.0), 200.0);
        assert_eq!(nice_ceil(2100.0), 2500.0);
        assert_eq!(escape("a&b<c>"), "a&amp;b&lt;c&gt;");
    }
}
