//! Results: throughput, latency percentiles (hdrhistogram), and their three renderings —
//! a text table (one broker, or two side by side with ratios), JSON, and an SVG chart of
//! the latency percentile distribution.

use hdrhistogram::Histogram;
use serde_json::{json, Value};

/// Latencies are recorded in nanoseconds, from 1 ns to an hour, with 3 significant digits.
pub const LATENCY_NS_MAX: u64 = 3_600_000_000_000;

pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_NS_MAX, 3).expect("valid histogram bounds")
}

/// Percentiles reported, in order.
pub const PERCENTILES: [(&str, f64); 5] = [
    ("p50", 50.0),
    ("p90", 90.0),
    ("p99", 99.0),
    ("p99.9", 99.9),
    ("p99.99", 99.99),
];

/// Messages and bytes moved in one direction over a span of time.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Throughput {
    pub messages: u64,
    /// Message value bytes (what the user asked to move), not wire bytes.
    pub bytes: u64,
    pub seconds: f64,
}

impl Throughput {
    pub fn messages_per_s(&self) -> f64 {
        if self.seconds > 0.0 {
            self.messages as f64 / self.seconds
        } else {
            0.0
        }
    }

    pub fn mb_per_s(&self) -> f64 {
        if self.seconds > 0.0 {
            self.bytes as f64 / self.seconds / 1e6
        } else {
            0.0
        }
    }
}

/// Everything one workload run against one broker measured.
pub struct RunReport {
    pub label: String,
    pub produced: Option<Throughput>,
    pub consumed: Option<Throughput>,
    /// Intended send → acknowledgement (acks=0: → written to the socket).
    pub ack_latency: Option<Histogram<u64>>,
    /// Intended send → received by a consumer.
    pub e2e_latency: Option<Histogram<u64>>,
    pub errors: Vec<String>,
}

/// The latency summary in milliseconds, in [`PERCENTILES`] order, then max.
pub fn latency_ms(h: &Histogram<u64>) -> Vec<(&'static str, f64)> {
    let mut out: Vec<(&'static str, f64)> = PERCENTILES
        .iter()
        .map(|&(name, q)| (name, h.value_at_quantile(q / 100.0) as f64 / 1e6))
        .collect();
    out.push(("max", h.max() as f64 / 1e6));
    out
}

fn throughput_json(t: &Option<Throughput>) -> Value {
    match t {
        None => Value::Null,
        Some(t) => json!({
            "messages": t.messages,
            "bytes": t.bytes,
            "seconds": t.seconds,
            "messages_per_s": t.messages_per_s(),
            "mb_per_s": t.mb_per_s(),
        }),
    }
}

fn latency_json(h: &Option<Histogram<u64>>) -> Value {
    match h {
        None => Value::Null,
        Some(h) if h.is_empty() => Value::Null,
        Some(h) => {
            let mut map = serde_json::Map::new();
            map.insert("count".into(), json!(h.len()));
            map.insert("mean_ms".into(), json!(h.mean() / 1e6));
            for (name, ms) in latency_ms(h) {
                map.insert(format!("{name}_ms").replace('.', "_"), json!(ms));
            }
            // The percentile curve the SVG draws, as [percentile, ms] pairs, so other
            // tools can chart or compare whole distributions.
            let curve: Vec<[f64; 2]> = distribution(h).into_iter().map(|(p, ms)| [p, ms]).collect();
            map.insert("distribution".into(), json!(curve));
            Value::Object(map)
        }
    }
}

impl RunReport {
    pub fn to_json(&self) -> Value {
        json!({
            "label": self.label,
            "produce": throughput_json(&self.produced),
            "consume": throughput_json(&self.consumed),
            "ack_latency": latency_json(&self.ack_latency),
            "e2e_latency": latency_json(&self.e2e_latency),
            "errors": self.errors,
        })
    }

    /// Rows of (name, value) for the table, in display order.
    fn rows(&self) -> Vec<(String, Option<f64>)> {
        let mut rows = Vec::new();
        let mut through = |name: &str, t: &Option<Throughput>| {
            if let Some(t) = t {
                rows.push((format!("{name} msg/s"), Some(t.messages_per_s())));
                rows.push((format!("{name} MB/s"), Some(t.mb_per_s())));
                rows.push((format!("{name} messages"), Some(t.messages as f64)));
            }
        };
        through("produce", &self.produced);
        through("consume", &self.consumed);
        for (name, h) in [("ack", &self.ack_latency), ("e2e", &self.e2e_latency)] {
            if let Some(h) = h.as_ref().filter(|h| !h.is_empty()) {
                for (p, ms) in latency_ms(h) {
                    rows.push((format!("{name} latency {p} ms"), Some(ms)));
                }
            }
        }
        rows
    }
}

fn format_value(name: &str, value: Option<f64>) -> String {
    match value {
        None => "-".into(),
        Some(v) if name.ends_with(" ms") => format!("{v:.3}"),
        Some(v) if name.ends_with("MB/s") => format!("{v:.1}"),
        Some(v) => format!("{v:.0}"),
    }
}

/// The table of one run, or of two runs of the same workload side by side with the ratio
/// first/second.
pub fn table(runs: &[&RunReport]) -> String {
    assert!(!runs.is_empty() && runs.len() <= 2);
    let mut names: Vec<String> = Vec::new();
    for run in runs {
        for (name, _) in run.rows() {
            if !names.contains(&name) {
                names.push(name);
            }
        }
    }
    let value = |run: &RunReport, name: &str| {
        run.rows()
            .into_iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, v)| v)
    };
    let mut header = vec!["metric".to_string()];
    header.extend(runs.iter().map(|r| r.label.clone()));
    if runs.len() == 2 {
        header.push("ratio".into());
    }
    let mut lines = vec![header];
    for name in &names {
        let mut line = vec![name.clone()];
        let values: Vec<Option<f64>> = runs.iter().map(|r| value(r, name)).collect();
        line.extend(values.iter().map(|v| format_value(name, *v)));
        if runs.len() == 2 {
            line.push(match (values[0], values[1]) {
                (Some(a), Some(b)) if b != 0.0 => format!("{:.2}x", a / b),
                _ => "-".into(),
            });
        }
        lines.push(line);
    }
    let widths: Vec<usize> = (0..lines[0].len())
        .map(|c| lines.iter().map(|l| l[c].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for (i, line) in lines.iter().enumerate() {
        let cells: Vec<String> = line
            .iter()
            .enumerate()
            .map(|(c, cell)| {
                if c == 0 {
                    format!("{cell:<w$}", w = widths[c])
                } else {
                    format!("{cell:>w$}", w = widths[c])
                }
            })
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
        if i == 0 {
            let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
            out.push_str(&rule.join("  "));
            out.push('\n');
        }
    }
    for run in runs {
        for err in &run.errors {
            out.push_str(&format!("error ({}): {err}\n", run.label));
        }
    }
    out
}

/// Points of the percentile distribution: (percentile, latency ms), spaced evenly in
/// "nines" (x = log10(1 / (1 - p))) up to the largest percentile the sample supports.
pub fn distribution(h: &Histogram<u64>) -> Vec<(f64, f64)> {
    if h.is_empty() {
        return Vec::new();
    }
    let nines_max = (h.len() as f64).log10().clamp(1.0, 6.0);
    let steps = 120;
    (0..=steps)
        .map(|i| {
            let nines = nines_max * i as f64 / steps as f64;
            let q = 1.0 - 10f64.powf(-nines);
            let q = if i == steps { 1.0 } else { q };
            (q * 100.0, h.value_at_quantile(q) as f64 / 1e6)
        })
        .collect()
}

/// An SVG chart of latency by percentile: x in nines (50%, 90%, 99%, …, log scale), y in
/// milliseconds (log scale), one line per series.
pub fn svg(title: &str, series: &[(String, &Histogram<u64>)]) -> String {
    const W: f64 = 900.0;
    const H: f64 = 520.0;
    const LEFT: f64 = 80.0;
    const RIGHT: f64 = 220.0;
    const TOP: f64 = 50.0;
    const BOTTOM: f64 = 60.0;
    const COLORS: [&str; 6] = [
        "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b",
    ];
    let curves: Vec<(&String, Vec<(f64, f64)>)> = series
        .iter()
        .map(|(name, h)| (name, distribution(h)))
        .filter(|(_, points)| !points.is_empty())
        .collect();
    let nines = |p: f64| -> f64 {
        let rest = (1.0 - p / 100.0).max(1e-6);
        -rest.log10()
    };
    let x_max = curves
        .iter()
        .flat_map(|(_, pts)| pts.iter().map(|&(p, _)| nines(p)))
        .fold(1.0f64, f64::max)
        .ceil();
    let (mut y_lo, mut y_hi) = (f64::MAX, f64::MIN);
    for (_, pts) in &curves {
        for &(_, ms) in pts {
            y_lo = y_lo.min(ms.max(1e-3));
            y_hi = y_hi.max(ms.max(1e-3));
        }
    }
    if curves.is_empty() {
        (y_lo, y_hi) = (0.01, 1.0);
    }
    let y_lo = 10f64.powf(y_lo.log10().floor());
    let y_hi = 10f64.powf(y_hi.log10().ceil().max(y_lo.log10() + 1.0));
    let px = |x: f64| LEFT + (W - LEFT - RIGHT) * (x / x_max);
    let py = |ms: f64| {
        let f = (ms.max(y_lo).log10() - y_lo.log10()) / (y_hi.log10() - y_lo.log10());
        H - BOTTOM - (H - TOP - BOTTOM) * f
    };
    let mut out = String::new();
    out.push_str(&format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" viewBox=\"0 0 {W} {H}\" font-family=\"sans-serif\" font-size=\"12\">\n"
    ));
    out.push_str(&format!(
        "<rect width=\"{W}\" height=\"{H}\" fill=\"white\"/>\n<text x=\"{}\" y=\"28\" font-size=\"16\" text-anchor=\"middle\">{}</text>\n",
        (LEFT + W - RIGHT) / 2.0,
        escape(title)
    ));
    // Grid and axis labels.
    let mut nine = 0.0;
    while nine <= x_max + 1e-9 {
        let x = px(nine);
        let label = match nine as u32 {
            0 => "0%".to_string(),
            n => {
                let p = 100.0 - 100.0 * 10f64.powi(-(n as i32));
                format!("{}%", trim_float(p))
            }
        };
        out.push_str(&format!(
            "<line x1=\"{x:.1}\" y1=\"{TOP}\" x2=\"{x:.1}\" y2=\"{:.1}\" stroke=\"#ddd\"/>\n<text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{label}</text>\n",
            H - BOTTOM,
            H - BOTTOM + 18.0
        ));
        nine += 1.0;
    }
    let mut decade = y_lo;
    while decade <= y_hi * 1.0001 {
        let y = py(decade);
        out.push_str(&format!(
            "<line x1=\"{LEFT}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" stroke=\"#ddd\"/>\n<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>\n",
            W - RIGHT,
            LEFT - 6.0,
            y + 4.0,
            trim_float(decade)
        ));
        decade *= 10.0;
    }
    out.push_str(&format!(
        "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">percentile</text>\n<text x=\"18\" y=\"{:.1}\" text-anchor=\"middle\" transform=\"rotate(-90 18 {:.1})\">latency (ms, log scale)</text>\n",
        (LEFT + W - RIGHT) / 2.0,
        H - 16.0,
        (TOP + H - BOTTOM) / 2.0,
        (TOP + H - BOTTOM) / 2.0
    ));
    for (i, (name, pts)) in curves.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let path: Vec<String> = pts
            .iter()
            .map(|&(p, ms)| format!("{:.1},{:.1}", px(nines(p)), py(ms)))
            .collect();
        out.push_str(&format!(
            "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"2\" points=\"{}\"/>\n",
            path.join(" ")
        ));
        let ly = TOP + 20.0 * i as f64;
        out.push_str(&format!(
            "<line x1=\"{:.1}\" y1=\"{ly:.1}\" x2=\"{:.1}\" y2=\"{ly:.1}\" stroke=\"{color}\" stroke-width=\"3\"/>\n<text x=\"{:.1}\" y=\"{:.1}\">{}</text>\n",
            W - RIGHT + 12.0,
            W - RIGHT + 32.0,
            W - RIGHT + 38.0,
            ly + 4.0,
            escape(name)
        ));
    }
    out.push_str("</svg>\n");
    out
}

fn trim_float(v: f64) -> String {
    let s = format!("{v:.4}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    s.to_string()
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Histogram<u64> {
        let mut h = new_histogram();
        // 1..=10_000 µs, once each.
        for us in 1..=10_000u64 {
            h.record(us * 1000).unwrap();
        }
        h
    }

    fn run(label: &str, msgs: u64, h: Histogram<u64>) -> RunReport {
        RunReport {
            label: label.into(),
            produced: Some(Throughput {
                messages: msgs,
                bytes: msgs * 100,
                seconds: 2.0,
            }),
            consumed: None,
            ack_latency: Some(h),
            e2e_latency: None,
            errors: vec![],
        }
    }

    #[test]
    fn percentiles_in_milliseconds() {
        let h = sample();
        let ms = latency_ms(&h);
        let names: Vec<&str> = ms.iter().map(|(n, _)| *n).collect();
        assert_eq!(names, ["p50", "p90", "p99", "p99.9", "p99.99", "max"]);
        // Three significant digits.
        let close = |got: f64, want: f64| (got - want).abs() <= want * 0.001 + 1e-9;
        assert!(close(ms[0].1, 5.0), "{ms:?}");
        assert!(close(ms[2].1, 9.9), "{ms:?}");
        assert!(close(ms[5].1, 10.0), "{ms:?}");
    }

    #[test]
    fn json_has_throughput_and_percentiles() {
        let report = run("strand", 1_000_000, sample());
        let v = report.to_json();
        assert_eq!(v["label"], "strand");
        assert_eq!(v["produce"]["messages"], 1_000_000);
        assert_eq!(v["produce"]["messages_per_s"], 500_000.0);
        assert_eq!(v["produce"]["mb_per_s"], 50.0);
        assert_eq!(v["consume"], Value::Null);
        assert_eq!(v["ack_latency"]["count"], 10_000);
        assert!(v["ack_latency"]["p99_9_ms"].as_f64().unwrap() > 9.9);
        assert!(v["ack_latency"]["max_ms"].as_f64().unwrap() >= 10.0);
        assert_eq!(v["e2e_latency"], Value::Null);
        let curve = v["ack_latency"]["distribution"].as_array().unwrap();
        assert_eq!(curve.first().unwrap()[0], 0.0);
        assert_eq!(curve.last().unwrap()[0], 100.0);
        assert!(curve.last().unwrap()[1].as_f64().unwrap() >= 10.0);
    }

    #[test]
    fn side_by_side_table_has_ratios() {
        let a = run("a", 3_000_000, sample());
        let b = run("b", 1_000_000, sample());
        let text = table(&[&a, &b]);
        let line = text
            .lines()
            .find(|l| l.starts_with("produce msg/s"))
            .unwrap();
        assert!(
            line.contains("1500000") && line.contains("500000"),
            "{text}"
        );
        assert!(line.trim_end().ends_with("3.00x"), "{text}");
        assert!(text.contains("ack latency p99.99 ms"), "{text}");
        let single = table(&[&a]);
        assert!(!single.contains("ratio"));
    }

    #[test]
    fn svg_draws_one_line_per_series() {
        let h = sample();
        let doc = svg("t <1>", &[("a".into(), &h), ("b".into(), &h)]);
        assert!(doc.starts_with("<svg"));
        assert_eq!(doc.matches("<polyline").count(), 2);
        assert!(doc.contains("t &lt;1&gt;"));
        assert!(doc.contains("99.9%"));
        let points = distribution(&h);
        assert!(points.windows(2).all(|w| w[0].1 <= w[1].1));
        assert_eq!(points.last().unwrap().0, 100.0);
    }
}
