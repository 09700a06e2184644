//! The per-layer, per-operation table `securenn run --report table` prints.

use super::OpReport;
use comfy_table::presets::UTF8_FULL_CONDENSED;
use comfy_table::{CellAlignment, ContentArrangement, Table};

/// Rows down to `max_level` (0 is the job; `None`: all), one column group for what was
/// measured and one for the paper, with the difference. `time_label` names the clock.
pub fn render(rows: &[OpReport], max_level: Option<usize>, time_label: &str) -> String {
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(vec![
            "operation".to_string(),
            "shape".into(),
            "calls".into(),
            "bytes".into(),
            "paper bytes".into(),
            "Δ bytes".into(),
            "msgs".into(),
            "rounds/call".into(),
            "paper".into(),
            "Δ".into(),
            format!("{time_label} s"),
            "CPU s P0/P1/P2".into(),
        ]);
    for r in rows
        .iter()
        .filter(|r| max_level.is_none_or(|m| r.level <= m))
    {
        let delta_bytes = r.paper_bytes.map_or(String::new(), |p| {
            if p == 0 {
                String::new()
            } else {
                format!("{:+.1}%", 100.0 * (r.bytes as f64 - p as f64) / p as f64)
            }
        });
        let delta_rounds = r.paper_rounds.map_or(String::new(), |p| {
            format!("{:+}", r.rounds as i64 - p as i64)
        });
        t.add_row(vec![
            format!("{}{}", "  ".repeat(r.level), r.name),
            r.shape.clone().unwrap_or_default(),
            r.calls.to_string(),
            group(r.bytes),
            r.paper_bytes.map_or(String::new(), group),
            delta_bytes,
            r.messages.to_string(),
            r.rounds.to_string(),
            r.paper_rounds.map_or(String::new(), |p| p.to_string()),
            delta_rounds,
            format!("{:.4}", r.seconds),
            r.party_cpu_seconds
                .iter()
                .map(|c| format!("{c:.3}"))
                .collect::<Vec<_>>()
                .join("/"),
        ]);
    }
    for c in 2..12 {
        if let Some(col) = t.column_mut(c) {
            col.set_cell_alignment(CellAlignment::Right);
        }
    }
    t.to_string()
}

/// 1234567 as `1 234 567` (readable byte counts).
fn group(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(' ');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn groups_digits() {
        assert_eq!(super::group(2_100_984), "2 100 984");
        assert_eq!(super::group(984), "984");
        assert_eq!(super::group(0), "0");
    }
}
