//! `--output tui`: each table as a framed panel, with a bar for its first numeric column,
//! drawn with ANSI colours in the book's palette. No input is read; it draws once and exits.

use super::Report;
use std::io::Write;

const TEAL: &str = "\x1b[38;2;20;184;166m";
const MUTED: &str = "\x1b[38;2;148;163;184m";
const BOLD: &str = "\x1b[1m";
const RESET: &str = "\x1b[0m";
const BAR_WIDTH: usize = 30;

/// Draws `report` on `out`.
pub fn draw(out: &mut dyn Write, report: &Report) -> std::io::Result<()> {
    writeln!(out, "{BOLD}demo-{}{RESET}", report.demo)?;
    for table in &report.tables {
        let cells = table.cells();
        let bar_col = table.columns.iter().position(|c| c.unit.is_some());
        let values: Vec<f64> = bar_col
            .map(|i| {
                table
                    .rows
                    .iter()
                    .map(|r| {
                        r.get(&table.columns[i].key)
                            .and_then(|v| v.as_f64())
                            .unwrap_or(0.0)
                    })
                    .collect()
            })
            .unwrap_or_default();
        let max = values.iter().cloned().fold(0.0f64, f64::max);
        let label_width = cells
            .iter()
            .map(|r| r.join("  ").chars().count())
            .max()
            .unwrap_or(0);
        let width = label_width + BAR_WIDTH + 4;
        writeln!(
            out,
            "{MUTED}┌─ {BOLD}{}{RESET}{MUTED} {}┐{RESET}",
            table.title,
            "─".repeat(width.saturating_sub(table.title.chars().count() + 3))
        )?;
        for (i, row) in cells.iter().enumerate() {
            let text = row.join("  ");
            let filled = match values.get(i) {
                Some(v) if max > 0.0 => ((v / max) * BAR_WIDTH as f64).round() as usize,
                _ => 0,
            };
            let pad = label_width - text.chars().count();
            writeln!(
                out,
                "{MUTED}│{RESET} {text}{} {TEAL}{}{RESET}{} {MUTED}│{RESET}",
                " ".repeat(pad),
                "█".repeat(filled),
                " ".repeat(BAR_WIDTH - filled.min(BAR_WIDTH)),
            )?;
        }
        writeln!(out, "{MUTED}└{}┘{RESET}", "─".repeat(width + 1))?;
    }
    writeln!(
        out,
        "{MUTED}measured on: {}{RESET}",
        report.provenance.summary()
    )
}
