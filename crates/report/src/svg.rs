//! Inline SVG plots for the report page: no script, no external file.

use std::fmt::Write;

use super::Histogram;
use super::html::escape;

const WIDTH: f32 = 520.0;
const HEIGHT: f32 = 220.0;
const LEFT: f32 = 44.0;
const RIGHT: f32 = 12.0;
const TOP: f32 = 28.0;
const BOTTOM: f32 = 34.0;
pub const SAME_COLOUR: &str = "#2b8a3e";
pub const DIFFERENT_COLOUR: &str = "#c92a2a";

/// The distance histogram of same and different pairs, each series scaled to its own total
/// (there are far more different pairs), with the best threshold as a dashed line.
pub fn histogram(histogram: &Histogram, threshold: Option<f32>, title: &str, id: &str) -> String {
    let bins = histogram.same.len().max(1);
    let fractions = |counts: &[u64]| -> Vec<f32> {
        let total = counts.iter().sum::<u64>().max(1) as f32;
        counts.iter().map(|&c| c as f32 / total).collect()
    };
    let (same, different) = (fractions(&histogram.same), fractions(&histogram.different));
    let peak = same.iter().chain(&different).copied().fold(0.0f32, f32::max).max(f32::MIN_POSITIVE);
    let (plot_w, plot_h) = (WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM);
    let bin_w = plot_w / bins as f32;
    let x_of = |d: f32| LEFT + plot_w * (d / histogram.max.max(f32::MIN_POSITIVE)).clamp(0.0, 1.0);

    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" id="{id}" class="histogram" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" role="img" data-same-pairs="{}" data-different-pairs="{}" data-bins="{bins}"><title>{}</title>"#,
        histogram.same.iter().sum::<u64>(),
        histogram.different.iter().sum::<u64>(),
        escape(title)
    );
    let _ =
        write!(svg, r#"<text x="{LEFT}" y="16" font-size="13" font-weight="bold">{}</text>"#, escape(title));
    // Axes and ticks.
    let _ = write!(
        svg,
        r##"<line x1="{LEFT}" y1="{y0}" x2="{x1}" y2="{y0}" stroke="#444"/><line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{y0}" stroke="#444"/>"##,
        y0 = TOP + plot_h,
        x1 = LEFT + plot_w
    );
    for k in 0..=4 {
        let d = histogram.max * k as f32 / 4.0;
        let x = x_of(d);
        let _ = write!(
            svg,
            r##"<line x1="{x:.1}" y1="{y0}" x2="{x:.1}" y2="{y1}" stroke="#444"/><text x="{x:.1}" y="{ty}" font-size="10" text-anchor="middle">{d:.2}</text>"##,
            y0 = TOP + plot_h,
            y1 = TOP + plot_h + 4.0,
            ty = TOP + plot_h + 15.0
        );
    }
    for k in 0..=2 {
        let f = peak * k as f32 / 2.0;
        let y = TOP + plot_h * (1.0 - k as f32 / 2.0);
        let _ = write!(
            svg,
            r#"<text x="{x:.1}" y="{y:.1}" font-size="10" text-anchor="end" dominant-baseline="middle">{p:.0}%</text>"#,
            x = LEFT - 4.0,
            p = f * 100.0
        );
    }
    let _ = write!(
        svg,
        r#"<text x="{x:.1}" y="{y:.1}" font-size="10" text-anchor="middle">distance</text>"#,
        x = LEFT + plot_w / 2.0,
        y = HEIGHT - 4.0
    );
    // Bars: the two series side by side within each bin.
    for (i, (s, d)) in same.iter().zip(&different).enumerate() {
        for (k, (fraction, colour, class)) in
            [(s, SAME_COLOUR, "same"), (d, DIFFERENT_COLOUR, "different")].into_iter().enumerate()
        {
            if *fraction <= 0.0 {
                continue;
            }
            let h = plot_h * fraction / peak;
            let _ = write!(
                svg,
                r#"<rect class="{class}" x="{x:.2}" y="{y:.2}" width="{w:.2}" height="{h:.2}" fill="{colour}" fill-opacity="0.8"/>"#,
                x = LEFT + bin_w * i as f32 + bin_w * k as f32 / 2.0,
                y = TOP + plot_h - h,
                w = bin_w / 2.0
            );
        }
    }
    if let Some(t) = threshold {
        let x = x_of(t);
        let _ = write!(
            svg,
            r##"<line class="threshold" x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{y0}" stroke="#1c7ed6" stroke-dasharray="4 3"/><text x="{tx:.1}" y="{ty}" font-size="10" fill="#1c7ed6">t={t:.3}</text>"##,
            y0 = TOP + plot_h,
            tx = x + 3.0,
            ty = TOP + 10.0
        );
    }
    // Legend.
    let lx = LEFT + plot_w - 150.0;
    let _ = write!(
        svg,
        r#"<rect x="{lx}" y="6" width="10" height="10" fill="{SAME_COLOUR}"/><text x="{tx}" y="15" font-size="10">same</text><rect x="{lx2}" y="6" width="10" height="10" fill="{DIFFERENT_COLOUR}"/><text x="{tx2}" y="15" font-size="10">different</text>"#,
        tx = lx + 14.0,
        lx2 = lx + 60.0,
        tx2 = lx + 74.0
    );
    svg.push_str("</svg>");
    svg
}
