//! The statistics page's chart, drawn on the server as SVG: the
//! repository's size after each snapshot (the sum of what each stored new)
//! as a line, and each snapshot's new data as a bar.

use std::fmt::Write as _;

use super::pages::esc;
use crate::cli::human_bytes;
use snap::Snapshot;

const W: f64 = 720.0;
const H: f64 = 240.0;
const PAD: f64 = 48.0;

pub fn growth_chart(snaps: &[Snapshot]) -> String {
    if snaps.is_empty() {
        return "<p>No snapshots yet.</p>".into();
    }
    let mut total = 0u64;
    let points: Vec<(u64, u64)> = snaps
        .iter()
        .map(|s| {
            total += s.stats.new_stored_bytes;
            (total, s.stats.new_stored_bytes)
        })
        .collect();
    let max = points.iter().map(|p| p.0).max().unwrap_or(1).max(1) as f64;
    let n = points.len() as f64;
    let x = |i: usize| PAD + (W - 2.0 * PAD) * (i as f64 + 0.5) / n;
    let y = |v: u64| H - PAD - (H - 2.0 * PAD) * v as f64 / max;
    let bar = ((W - 2.0 * PAD) / n * 0.6).max(1.0);
    let mut svg = format!(
        "<svg id=growth xmlns=http://www.w3.org/2000/svg width={W} height={H} viewBox=\"0 0 {W} {H}\" role=img>\
         <title>repository size after each snapshot</title>\
         <line x1={PAD} y1={b} x2={r} y2={b} class=axis />\
         <text x=4 y={t} class=label>{top}</text><text x=4 y={b} class=label>0</text>",
        b = H - PAD,
        r = W - PAD,
        t = PAD,
        top = esc(&human_bytes(max as u64)),
    );
    for (i, (_, new)) in points.iter().enumerate() {
        let _ = write!(
            svg,
            "<rect class=new x={:.1} y={:.1} width={bar:.1} height={:.1}><title>{}: {} new</title></rect>",
            x(i) - bar / 2.0,
            y(*new),
            H - PAD - y(*new),
            snaps[i].id.short(),
            esc(&human_bytes(*new)),
        );
    }
    let line: Vec<String> = points
        .iter()
        .enumerate()
        .map(|(i, (t, _))| format!("{:.1},{:.1}", x(i), y(*t)))
        .collect();
    let _ = write!(
        svg,
        "<polyline class=total points=\"{}\" />",
        line.join(" ")
    );
    svg.push_str("</svg><p class=legend><span class=total>&#9472;</span> repository size &nbsp; <span class=new>&#9632;</span> new data of each snapshot</p>");
    svg
}
