//! A demo's results: tables of measured values plus provenance, printed as text, JSON or a
//! terminal view. `cargo xtask bench` stores each table as `benchmarks/<name>.json`.

use super::{OutputMode, Provenance};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::io::Write;

/// One column of a [`Table`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Column {
    /// Key of the value in each row (stable; scripts read it).
    pub key: String,
    /// Header shown to readers.
    pub label: String,
    /// Unit appended to the header, e.g. `GB/s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    /// Digits after the decimal point for numbers (default: 3 significant digits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decimals: Option<usize>,
}

impl Column {
    pub fn new(key: &str, label: &str) -> Column {
        Column {
            key: key.into(),
            label: label.into(),
            unit: None,
            decimals: None,
        }
    }

    pub fn unit(mut self, unit: &str) -> Column {
        self.unit = Some(unit.into());
        self
    }

    pub fn decimals(mut self, decimals: usize) -> Column {
        self.decimals = Some(decimals);
        self
    }

    /// Header text: label plus unit in parentheses.
    pub fn header(&self) -> String {
        match &self.unit {
            Some(unit) => format!("{} ({unit})", self.label),
            None => self.label.clone(),
        }
    }

    /// A cell as readers see it.
    pub fn format(&self, value: Option<&Value>) -> String {
        match value {
            None | Some(Value::Null) => "—".into(),
            Some(Value::String(s)) => s.clone(),
            Some(Value::Bool(b)) => if *b { "yes" } else { "no" }.into(),
            Some(Value::Number(n)) => match (n.as_i64(), n.as_f64()) {
                (Some(i), _) if self.decimals.is_none() => i.to_string(),
                (_, Some(f)) => format_number(f, self.decimals),
                _ => n.to_string(),
            },
            Some(other) => other.to_string(),
        }
    }
}

/// `decimals` digits after the point, or 3 significant digits (no exponent) when `None`.
pub fn format_number(x: f64, decimals: Option<usize>) -> String {
    if !x.is_finite() {
        return if x.is_nan() { "NaN" } else { "∞" }.into();
    }
    let decimals = decimals.unwrap_or_else(|| {
        let magnitude = if x == 0.0 {
            0
        } else {
            x.abs().log10().floor() as i32
        };
        (2 - magnitude).max(0) as usize
    });
    format!("{x:.decimals$}")
}

/// A table of results. Rows are objects keyed by [`Column::key`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Table {
    /// File name under `benchmarks/` and marker name in chapters: `<!-- bench:NAME -->`.
    pub name: String,
    pub title: String,
    pub columns: Vec<Column>,
    pub rows: Vec<Map<String, Value>>,
    /// Sentences printed under the table (how to read it, caveats).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// Most columns a Markdown table of the book shows side by side; wider ones are split.
pub const MARKDOWN_COLUMNS: usize = 8;

/// How many leading columns each part of a split table repeats: the fewest whose cells tell
/// every row apart (task, threads and method, say), at most half of [`MARKDOWN_COLUMNS`]; one
/// when no such prefix is that short.
fn key_columns(cells: &[Vec<String>], columns: usize) -> usize {
    let most = (MARKDOWN_COLUMNS / 2).min(columns.saturating_sub(1)).max(1);
    (1..=most)
        .find(|&n| {
            let mut seen = std::collections::HashSet::new();
            cells.iter().all(|row| seen.insert(&row[..n]))
        })
        .unwrap_or(1)
}

impl Table {
    pub fn new(name: &str, title: &str, columns: Vec<Column>) -> Table {
        Table {
            name: name.into(),
            title: title.into(),
            columns,
            rows: Vec::new(),
            notes: Vec::new(),
        }
    }

    /// Appends a row given as values in column order.
    pub fn push(&mut self, values: Vec<Value>) {
        let row = self
            .columns
            .iter()
            .map(|c| c.key.clone())
            .zip(values)
            .collect();
        self.rows.push(row);
    }

    /// The cells of every row as display strings, in column order.
    pub fn cells(&self) -> Vec<Vec<String>> {
        self.rows
            .iter()
            .map(|row| {
                self.columns
                    .iter()
                    .map(|c| c.format(row.get(&c.key)))
                    .collect()
            })
            .collect()
    }

    /// A GitHub-flavoured Markdown table (pipes in cells escaped).
    pub fn to_markdown(&self) -> String {
        // A table wider than a laptop's column is split: its key columns, then at most
        // MARKDOWN_COLUMNS - keys others per part.
        let cells = self.cells();
        let parts: Vec<Vec<usize>> = if self.columns.len() <= MARKDOWN_COLUMNS {
            vec![(0..self.columns.len()).collect()]
        } else {
            let keys = key_columns(&cells, self.columns.len());
            let others: Vec<usize> = (keys..self.columns.len()).collect();
            let per = MARKDOWN_COLUMNS - keys;
            let n = others.len().div_ceil(per);
            // Even parts: 11 other columns in 2 parts of 6 and 5, not 7 and 4.
            let size = others.len().div_ceil(n);
            others
                .chunks(size)
                .map(|c| (0..keys).chain(c.iter().copied()).collect())
                .collect()
        };
        let esc = |s: &str| s.replace('|', "\\|");
        let mut out = String::new();
        for (i, part) in parts.iter().enumerate() {
            if i > 0 {
                out.push('\n');
            }
            let headers: Vec<String> = part
                .iter()
                .map(|&c| esc(&self.columns[c].header()))
                .collect();
            out.push_str(&format!("| {} |\n", headers.join(" | ")));
            let rule: Vec<&str> = part
                .iter()
                .map(|&c| {
                    if self.columns[c].unit.is_some() {
                        "---:"
                    } else {
                        "---"
                    }
                })
                .collect();
            out.push_str(&format!("|{}|\n", rule.join("|")));
            for row in &cells {
                let row: Vec<String> = part.iter().map(|&c| esc(&row[c])).collect();
                out.push_str(&format!("| {} |\n", row.join(" | ")));
            }
        }
        out
    }

    /// Plain text with aligned columns, for terminals.
    pub fn to_text(&self) -> String {
        let headers: Vec<String> = self.columns.iter().map(Column::header).collect();
        let cells = self.cells();
        let widths: Vec<usize> = (0..headers.len())
            .map(|i| {
                cells
                    .iter()
                    .map(|r| r[i].chars().count())
                    .chain([headers[i].chars().count()])
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let line = |cols: &[String]| {
            let padded: Vec<String> = cols
                .iter()
                .zip(&widths)
                .map(|(c, w)| format!("{c:<w$}"))
                .collect();
            padded.join("  ").trim_end().to_string() + "\n"
        };
        let mut out = format!("{}\n", self.title);
        out.push_str(&line(&headers));
        let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
        out.push_str(&line(&rule));
        for row in &cells {
            out.push_str(&line(row));
        }
        for note in &self.notes {
            out.push_str(&format!("  {note}\n"));
        }
        out
    }

    /// The numeric value of `key` in the first row whose `match_key` equals `match_value`.
    pub fn lookup(&self, match_key: &str, match_value: &str, key: &str) -> Option<f64> {
        self.rows
            .iter()
            .find(|r| r.get(match_key).and_then(Value::as_str) == Some(match_value))
            .and_then(|r| r.get(key))
            .and_then(Value::as_f64)
    }
}

/// Everything a demo prints with `--output json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    /// Demo name without the `demo-` prefix.
    pub demo: String,
    pub provenance: Provenance,
    /// Demo-specific details (detected hardware, generated text...).
    pub result: Value,
    /// Measured tables; `cargo xtask bench` stores each one.
    pub tables: Vec<Table>,
    /// `Some(ok)` when `--verify` checked the results.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verified: Option<bool>,
}

impl Report {
    /// Prints the report in `mode`. `text` writes the demo's own human-readable summary
    /// (tables follow it).
    pub fn emit(
        &self,
        mode: OutputMode,
        text: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
    ) -> anyhow::Result<()> {
        let stdout = std::io::stdout();
        let mut out = stdout.lock();
        match mode {
            OutputMode::Json => {
                serde_json::to_writer_pretty(&mut out, self)?;
                writeln!(out)?;
            }
            OutputMode::Stdout => {
                text(&mut out)?;
                for table in &self.tables {
                    writeln!(out)?;
                    write!(out, "{}", table.to_text())?;
                }
                if let Some(ok) = self.verified {
                    writeln!(out, "\nverify: {}", if ok { "OK" } else { "NOT OK" })?;
                }
                writeln!(out, "\nmeasured on: {}", self.provenance.summary())?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sample() -> Table {
        let mut t = Table::new(
            "t",
            "Sample",
            vec![
                Column::new("what", "What"),
                Column::new("rate", "Rate").unit("GB/s").decimals(1),
                Column::new("n", "N"),
            ],
        );
        t.push(vec![json!("a|b"), json!(12.345), json!(3)]);
        t.push(vec![json!("c"), Value::Null, json!(0.5)]);
        t
    }

    #[test]
    fn markdown_escapes_pipes_and_formats_numbers() {
        assert_eq!(
            sample().to_markdown(),
            "| What | Rate (GB/s) | N |\n|---|---:|---|\n| a\\|b | 12.3 | 3 |\n| c | — | 0.500 |\n"
        );
    }

    #[test]
    fn a_wide_table_is_split_in_even_parts_that_repeat_its_key_column() {
        let columns: Vec<Column> = (0..12)
            .map(|i| Column::new(&format!("c{i}"), &format!("C{i}")))
            .collect();
        let mut t = Table::new("wide", "Wide", columns);
        t.push((0..12).map(|i| json!(i)).collect());
        let md = t.to_markdown();
        let parts: Vec<&str> = md.split("\n\n").collect();
        assert_eq!(parts.len(), 2, "{md}");
        assert!(parts[0].starts_with("| C0 | C1 |") && parts[0].contains("| C6 |\n"));
        assert!(parts[1].starts_with("| C0 | C7 |") && parts[1].contains("| C11 |\n"));
        assert!(
            parts
                .iter()
                .all(|p| p.lines().next().unwrap().matches(" | ").count() < MARKDOWN_COLUMNS)
        );
        assert_eq!(sample().to_markdown().matches("| What |").count(), 1);
    }

    #[test]
    fn a_split_table_repeats_the_columns_that_tell_its_rows_apart() {
        let columns: Vec<Column> = (0..10)
            .map(|i| Column::new(&format!("c{i}"), &format!("C{i}")))
            .collect();
        let mut t = Table::new("wide", "Wide", columns);
        // C0 repeats; C0 and C1 together name each row.
        for (a, b) in [(1, "plain"), (1, "ngram"), (2, "plain"), (2, "ngram")] {
            t.push(
                [json!(a), json!(b)]
                    .into_iter()
                    .chain((2..10).map(|i| json!(i)))
                    .collect(),
            );
        }
        let md = t.to_markdown();
        let parts: Vec<&str> = md.split("\n\n").collect();
        assert_eq!(parts.len(), 2, "{md}");
        assert!(parts.iter().all(|p| p.starts_with("| C0 | C1 | C")), "{md}");
        assert!(parts[1].contains("| 2 | ngram |"), "{md}");
    }

    #[test]
    fn numbers_keep_three_significant_digits_by_default() {
        assert_eq!(format_number(1234.5, None), "1234");
        assert_eq!(format_number(12.345, None), "12.3");
        assert_eq!(format_number(0.012345, None), "0.0123");
        assert_eq!(format_number(0.0, None), "0.00");
        assert_eq!(format_number(f64::INFINITY, None), "∞");
    }

    #[test]
    fn lookup_finds_values_by_row_label() {
        assert_eq!(sample().lookup("what", "a|b", "rate"), Some(12.345));
        assert_eq!(sample().lookup("what", "zzz", "rate"), None);
    }

    #[test]
    fn tables_survive_a_json_round_trip() {
        let t = sample();
        let back: Table = serde_json::from_str(&serde_json::to_string(&t).unwrap()).unwrap();
        assert_eq!(back, t);
    }
}
