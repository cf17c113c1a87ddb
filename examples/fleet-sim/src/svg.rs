//! A small SVG line-chart writer (no dependencies): utilisation over time and cumulative loss
//! events per policy.

use std::fmt::Write as _;

use crate::report::Report;

/// One line of a chart.
#[derive(Debug, Clone)]
pub struct Series {
    /// Legend label.
    pub label: String,
    /// Points (x, y), x ascending.
    pub points: Vec<(f64, f64)>,
}

const COLOURS: [&str; 6] = [
    "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b",
];

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A line chart as an SVG document. `step` draws each series as a step function (counts).
pub fn line_chart(
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
    step: bool,
) -> String {
    let (w, h) = (720.0, 420.0);
    let (l, r, t, b) = (70.0, 160.0, 40.0, 50.0);
    let pw = w - l - r;
    let ph = h - t - b;
    let xs = series.iter().flat_map(|s| s.points.iter().map(|p| p.0));
    let ys = series.iter().flat_map(|s| s.points.iter().map(|p| p.1));
    let xmax = xs.fold(0.0f64, f64::max).max(1e-9);
    let ymax = ys.fold(0.0f64, f64::max);
    let ymax = if ymax <= 0.0 { 1.0 } else { ymax * 1.05 };
    let px = |x: f64| l + x / xmax * pw;
    let py = |y: f64| t + ph - y / ymax * ph;
    let mut o = String::new();
    let _ = writeln!(
        o,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(o, r#"<rect width="{w}" height="{h}" fill="white"/>"#);
    let _ = writeln!(
        o,
        r#"<text x="{}" y="22" text-anchor="middle" font-size="15">{}</text>"#,
        l + pw / 2.0,
        escape(title)
    );
    // Axes and ticks.
    let _ = writeln!(
        o,
        r#"<path d="M{l} {t} V{} H{}" fill="none" stroke="black"/>"#,
        t + ph,
        l + pw
    );
    for i in 0..=5 {
        let f = i as f64 / 5.0;
        let (x, y) = (l + f * pw, t + ph - f * ph);
        let _ = writeln!(
            o,
            r##"<line x1="{x:.1}" y1="{}" x2="{x:.1}" y2="{}" stroke="black"/><text x="{x:.1}" y="{}" text-anchor="middle">{}</text>"##,
            t + ph,
            t + ph + 5.0,
            t + ph + 18.0,
            fmt_tick(f * xmax)
        );
        let _ = writeln!(
            o,
            r##"<line x1="{}" y1="{y:.1}" x2="{}" y2="{y:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
            l,
            l + pw,
            l - 6.0,
            y + 4.0,
            fmt_tick(f * ymax)
        );
    }
    let _ = writeln!(
        o,
        r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#,
        l + pw / 2.0,
        h - 12.0,
        escape(x_label)
    );
    let _ = writeln!(
        o,
        r#"<text transform="translate(16 {}) rotate(-90)" text-anchor="middle">{}</text>"#,
        t + ph / 2.0,
        escape(y_label)
    );
    for (i, s) in series.iter().enumerate() {
        let c = COLOURS[i % COLOURS.len()];
        let mut d = String::new();
        let mut prev: Option<(f64, f64)> = None;
        for &(x, y) in &s.points {
            match prev {
                None => {
                    let _ = write!(d, "M{:.1} {:.1}", px(x), py(y));
                }
                Some((_, py0)) if step => {
                    let _ = write!(
                        d,
                        " L{:.1} {:.1} L{:.1} {:.1}",
                        px(x),
                        py(py0),
                        px(x),
                        py(y)
                    );
                }
                Some(_) => {
                    let _ = write!(d, " L{:.1} {:.1}", px(x), py(y));
                }
            }
            prev = Some((x, y));
        }
        if !d.is_empty() {
            let _ = writeln!(
                o,
                r#"<path d="{d}" fill="none" stroke="{c}" stroke-width="1.8"/>"#
            );
        }
        let ly = t + 16.0 + i as f64 * 18.0;
        let _ = writeln!(
            o,
            r#"<line x1="{}" y1="{ly}" x2="{}" y2="{ly}" stroke="{c}" stroke-width="3"/><text x="{}" y="{}">{}</text>"#,
            l + pw + 12.0,
            l + pw + 32.0,
            l + pw + 38.0,
            ly + 4.0,
            escape(&s.label)
        );
    }
    o.push_str("</svg>\n");
    o
}

/// A tick label: three significant digits at any scale (fixed decimals labelled every tick
/// of a 0.001-year run `0.00`).
fn fmt_tick(v: f64) -> String {
    crate::num::human(v)
}

/// Utilisation (percent of in-service capacity) over time, one line per policy.
pub fn utilisation_chart(r: &Report) -> String {
    let series: Vec<Series> = r
        .policies
        .iter()
        .map(|p| Series {
            label: p.policy.to_string(),
            points: p
                .utilisation
                .iter()
                .map(|s| (s.years, s.utilisation * 100.0))
                .collect(),
        })
        .collect();
    line_chart(
        "Capacity utilisation",
        "years",
        "% of in-service capacity",
        &series,
        false,
    )
}

/// Cumulative data-loss events over time, one step line per policy.
pub fn losses_chart(r: &Report) -> String {
    let series: Vec<Series> = r
        .policies
        .iter()
        .map(|p| {
            let mut pts = vec![(0.0, 0.0)];
            pts.extend(p.cumulative_losses.iter().map(|&(t, n)| (t, n as f64)));
            pts.push((r.years, p.loss.events as f64));
            Series {
                label: format!("{} ({})", p.policy, p.loss.events),
                points: pts,
            }
        })
        .collect();
    line_chart(
        "Cumulative data-loss events",
        "years",
        "loss events",
        &series,
        true,
    )
}
