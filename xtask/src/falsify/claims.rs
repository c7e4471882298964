//! `cargo xtask falsify`: the book's claims, each checked against the measured results in
//! `benchmarks/`. The scorecard is itself a results table (`benchmarks/falsification.json`),
//! injected into the appendix. A claim without data says so; it never passes by default.

use crate::bench_file::BenchFile;
use anyhow::Result;
use chapters_code::demo::{Column, Provenance, Table};
use serde_json::json;
use std::path::Path;

/// The verdict on one claim.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Holds(String),
    Falsified(String),
    NotMeasured(String),
}

/// A claim the book makes, and how to test it.
pub struct Claim {
    pub id: &'static str,
    pub chapter: &'static str,
    pub statement: &'static str,
    pub check: fn(&Path) -> Result<Verdict>,
}

pub const CLAIMS: &[Claim] = &[
    Claim {
        id: "HW-1",
        chapter: "Know your hardware",
        statement: "Independent SIMD chains beat the naive scalar loop by at least the SIMD lane count",
        check: |root| {
            let Some(t) = table(root, "hardware-fma-kernels")? else {
                return Ok(missing("hardware-fma-kernels"));
            };
            let lanes = chapters_code::hw::SimdLevel::detect().f32_lanes() as f64;
            let last = t
                .table
                .rows
                .last()
                .and_then(|r| r.get("speedup"))
                .and_then(|v| v.as_f64());
            Ok(match last {
                Some(s) if s >= lanes => Verdict::Holds(format!("{s:.1}× ≥ {lanes} lanes")),
                Some(s) => Verdict::Falsified(format!("{s:.1}× < {lanes} lanes")),
                None => missing("hardware-fma-kernels"),
            })
        },
    },
    Claim {
        id: "HW-2",
        chapter: "Know your hardware",
        statement: "One thread cannot use all the memory bandwidth: the triad is faster on all threads",
        check: |root| {
            let Some(t) = table(root, "hardware-roofline")? else {
                return Ok(missing("hardware-roofline"));
            };
            let rates: Vec<(i64, f64)> = t
                .table
                .rows
                .iter()
                .filter(|r| {
                    r.get("measurement").and_then(|v| v.as_str())
                        == Some("memory bandwidth (triad)")
                })
                .filter_map(|r| Some((r.get("threads")?.as_i64()?, r.get("value")?.as_f64()?)))
                .collect();
            Ok(match (rates.first(), rates.last()) {
                (Some(&(1, one)), Some(&(n, all))) if n > 1 => {
                    let evidence =
                        format!("1 thread {one:.1}, {n} threads {all:.1} (GB per second)");
                    if all > one {
                        Verdict::Holds(evidence)
                    } else {
                        Verdict::Falsified(evidence)
                    }
                }
                _ => Verdict::NotMeasured("needs a machine with more than one core".into()),
            })
        },
    },
    Claim {
        id: "HW-3",
        chapter: "Know your hardware",
        statement: "A working set that fits in L1 streams faster than one that only fits in DRAM",
        check: |root| {
            let Some(t) = table(root, "hardware-triad-sizes")? else {
                return Ok(missing("hardware-triad-sizes"));
            };
            let rate = |i: usize| {
                t.table
                    .rows
                    .get(i)
                    .and_then(|r| r.get("rate"))
                    .and_then(|v| v.as_f64())
            };
            Ok(
                match (rate(0), rate(t.table.rows.len().saturating_sub(1))) {
                    (Some(l1), Some(dram)) if t.table.rows.len() > 1 => {
                        let evidence = format!("L1 {l1:.1}, DRAM {dram:.1} (GB per second)");
                        if l1 > dram {
                            Verdict::Holds(evidence)
                        } else {
                            Verdict::Falsified(evidence)
                        }
                    }
                    _ => missing("hardware-triad-sizes"),
                },
            )
        },
    },
    Claim {
        id: "TGI-1",
        chapter: "From prompt to tokens",
        statement: "On every prompt of the parity suite, teacher-forced, our largest top-5 |Δ log p| against llama.cpp is at most the largest between two llama.cpp builds",
        check: |root| parity_bars(root, |id| id == "delta"),
    },
    Claim {
        id: "TGI-2",
        chapter: "From prompt to tokens",
        statement: "Where our greedy text leaves a llama.cpp build's, that build's own top-2 margin is within the noise floor, and our greedy agreement with each build is at least that build's least with another llama.cpp build",
        check: |root| parity_bars(root, |id| id == "margin" || id.starts_with("agreement-")),
    },
    Claim {
        id: "TGI-9",
        chapter: "From prompt to tokens",
        statement: "A sequence's logits are the same bits alone, in a batch, in pieces, through the prefix cache, at 1 or 2 threads",
        check: |root| parity_bars(root, |id| id == "batch-invariance"),
    },
    Claim {
        id: "TGI-10",
        chapter: "From prompt to tokens",
        statement: "The SIMD path gives the scalar path's logits bit for bit on the whole parity suite",
        check: |root| parity_bars(root, |id| id.starts_with("simd-")),
    },
    Claim {
        id: "TGI-3",
        chapter: "From prompt to tokens",
        statement: "Perplexity on the reference text at context 512 is within 1% of llama-perplexity's",
        check: |root| {
            let Some(t) = table(root, "perplexity")? else {
                return Ok(missing("perplexity"));
            };
            let ppl = |engine: &str| {
                t.table
                    .rows
                    .iter()
                    .find(|r| {
                        r.get("engine")
                            .and_then(|v| v.as_str())
                            .is_some_and(|e| e.starts_with(engine))
                    })
                    .and_then(|r| r.get("ppl")?.as_f64())
            };
            Ok(match (ppl("chapters-code"), ppl("llama.cpp")) {
                (Some(ours), Some(theirs)) => {
                    let rel = ours / theirs - 1.0;
                    let evidence = format!("{ours:.4} against {theirs:.4} ({:+.2}%)", 100.0 * rel);
                    if rel.abs() < 0.01 {
                        Verdict::Holds(evidence)
                    } else {
                        Verdict::Falsified(evidence)
                    }
                }
                _ => missing("perplexity"),
            })
        },
    },
    Claim {
        id: "TGI-4",
        chapter: "From prompt to tokens",
        statement: "Decoding is at least as fast as llama.cpp's on the same machine, at every thread count measured",
        check: |root| {
            let Some(t) = table(root, "peer-llama-cpp")? else {
                return Ok(Verdict::NotMeasured(
                    "needs benchmarks/peer-llama-cpp.json (cargo xtask bench --peer llama-cpp)"
                        .into(),
                ));
            };
            let decode = |engine: &str, threads: i64| {
                t.table
                    .rows
                    .iter()
                    .find(|r| {
                        r.get("engine").and_then(|v| v.as_str()) == Some(engine)
                            && r.get("threads").and_then(|v| v.as_i64()) == Some(threads)
                    })
                    .and_then(|r| r.get("decode")?.as_f64())
            };
            let mut counts: Vec<i64> = t
                .table
                .rows
                .iter()
                .filter_map(|r| r.get("threads")?.as_i64())
                .collect();
            counts.sort_unstable();
            counts.dedup();
            // (threads, ours, llama.cpp's) where both were measured.
            let pairs: Vec<(i64, f64, f64)> = counts
                .into_iter()
                .filter_map(|n| Some((n, decode("chapters-code", n)?, decode("llama.cpp", n)?)))
                .collect();
            if pairs.is_empty() {
                return Ok(missing("peer-llama-cpp"));
            }
            let evidence = pairs
                .iter()
                .map(|(n, a, b)| format!("{n} thread(s): {a:.1} against {b:.1}"))
                .collect::<Vec<_>>()
                .join("; ")
                + " (tokens per second, same run)";
            Ok(if pairs.iter().all(|(_, a, b)| a >= b) {
                Verdict::Holds(evidence)
            } else {
                Verdict::Falsified(evidence)
            })
        },
    },
    Claim {
        id: "TGI-5",
        chapter: "From prompt to tokens",
        statement: "Decoding on one thread reaches at least half of the memory-bandwidth bound",
        check: |root| {
            let Some(t) = table(root, "engine-speed")? else {
                return Ok(missing("engine-speed"));
            };
            let share = t
                .table
                .rows
                .iter()
                .find(|r| r.get("threads").and_then(|v| v.as_i64()) == Some(1))
                .and_then(|r| r.get("share")?.as_f64());
            Ok(match share {
                Some(s) => {
                    let evidence = format!("{s:.0}% of the bound");
                    if s >= 50.0 {
                        Verdict::Holds(evidence)
                    } else {
                        Verdict::Falsified(evidence)
                    }
                }
                None => missing("engine-speed"),
            })
        },
    },
    Claim {
        id: "TGI-6",
        chapter: "From prompt to tokens",
        statement: "A second thread speeds decoding up",
        check: |root| {
            let Some(t) = table(root, "engine-speed")? else {
                return Ok(missing("engine-speed"));
            };
            // The engine as it runs by default: not the row of threads that sleep at once.
            let decode: Vec<(i64, f64)> = t
                .table
                .rows
                .iter()
                .filter(|r| r.get("spin_us").and_then(|v| v.as_f64()) != Some(0.0))
                .filter_map(|r| Some((r.get("threads")?.as_i64()?, r.get("decode")?.as_f64()?)))
                .collect();
            Ok(match (decode.first(), decode.last()) {
                (Some(&(1, one)), Some(&(n, many))) if n > 1 => {
                    let evidence =
                        format!("1 thread {one:.1}, {n} threads {many:.1} (tokens per second)");
                    if many > one {
                        Verdict::Holds(evidence)
                    } else {
                        Verdict::Falsified(evidence)
                    }
                }
                _ => Verdict::NotMeasured("needs a machine with more than one core".into()),
            })
        },
    },
    Claim {
        id: "TGI-7",
        chapter: "From prompt to tokens",
        statement: "Threads that spin a moment before sleeping decode faster than threads that sleep at once",
        check: |root| {
            let Some(t) = table(root, "engine-speed")? else {
                return Ok(missing("engine-speed"));
            };
            // (threads, spin in µs, decode tokens/s) of the rows with more than one thread.
            let rows: Vec<(i64, f64, f64)> = t
                .table
                .rows
                .iter()
                .filter_map(|r| {
                    let spin = r.get("spin_us")?.as_f64()?;
                    Some((
                        r.get("threads")?.as_i64()?,
                        spin,
                        r.get("decode")?.as_f64()?,
                    ))
                })
                .collect();
            let sleep = rows.iter().find(|r| r.1 == 0.0);
            let spin = rows.iter().find(|r| r.1 > 0.0);
            Ok(match (sleep, spin) {
                (Some(&(n, _, slept)), Some(&(_, us, spun))) => {
                    let evidence = format!(
                        "{n} threads: {slept:.1} sleeping at once, {spun:.1} spinning {us:.0} µs first (tokens per second)"
                    );
                    if spun > slept {
                        Verdict::Holds(evidence)
                    } else {
                        Verdict::Falsified(evidence)
                    }
                }
                _ => Verdict::NotMeasured("needs a machine with more than one core".into()),
            })
        },
    },
    Claim {
        id: "TGI-8",
        chapter: "From prompt to tokens",
        statement: "Beside a second decoder on the same cores, the spinning pool keeps at least 90% of a sleeping pool's speed",
        check: |root| {
            let Some(t) = table(root, "engine-contention")? else {
                return Ok(Verdict::NotMeasured(
                    "needs a machine with more than one core".into(),
                ));
            };
            let total = |spinning: bool| {
                t.table.rows.iter().find_map(|r| {
                    let spin = r.get("spin_us")?.as_f64()?;
                    ((spin > 0.0) == spinning).then(|| r.get("total")?.as_f64())?
                })
            };
            Ok(match (total(false), total(true)) {
                (Some(slept), Some(spun)) => {
                    let evidence = format!(
                        "both decoders together: {spun:.1} spinning, {slept:.1} sleeping at once (tokens per second)"
                    );
                    if spun >= 0.9 * slept {
                        Verdict::Holds(evidence)
                    } else {
                        Verdict::Falsified(evidence)
                    }
                }
                _ => missing("engine-contention"),
            })
        },
    },
    Claim {
        id: "KV-1",
        chapter: "The KV cache",
        statement: "Paged blocks keep at least 90% of the reserved KV memory holding real tokens",
        check: |root| {
            let Some(t) = table(root, "kv-efficiency")? else {
                return Ok(missing("kv-efficiency"));
            };
            let paged = t.table.rows.iter().find_map(|r| {
                let scheme = r.get("scheme")?.as_str()?;
                scheme
                    .starts_with("paged")
                    .then(|| r.get("efficiency")?.as_f64())?
            });
            Ok(at_least(
                paged,
                90.0,
                "% of reserved bytes hold tokens",
                "kv-efficiency",
            ))
        },
    },
    Claim {
        id: "CB-1",
        chapter: "Continuous batching",
        statement: "Continuous batching has a higher throughput than static batching on the same workload",
        check: |root| {
            let Some(t) = table(root, "batching-comparison")? else {
                return Ok(missing("batching-comparison"));
            };
            let rate = |p| t.table.lookup("policy", p, "throughput");
            Ok(match (rate("continuous"), rate("static")) {
                (Some(c), Some(s)) => {
                    let evidence =
                        format!("{c:.1} against {s:.1} tokens per second ({:.2}×)", c / s);
                    if c > s {
                        Verdict::Holds(evidence)
                    } else {
                        Verdict::Falsified(evidence)
                    }
                }
                _ => missing("batching-comparison"),
            })
        },
    },
    Claim {
        id: "CB-2",
        chapter: "Continuous batching",
        statement: "Continuous batching keeps batch utilization at or above 85%",
        check: |root| {
            let Some(t) = table(root, "batching-comparison")? else {
                return Ok(missing("batching-comparison"));
            };
            let u = t.table.lookup("policy", "continuous", "utilization");
            Ok(at_least(
                u,
                85.0,
                "% of batch slots did useful work",
                "batching-comparison",
            ))
        },
    },
    Claim {
        id: "TP-1",
        chapter: "Throughput benchmark",
        statement: "Eight concurrent streams get at least twice the aggregate throughput of one",
        check: |root| {
            let Some(t) = table(root, "throughput-levels")? else {
                return Ok(missing("throughput-levels"));
            };
            let rate = |clients: i64| {
                t.table
                    .rows
                    .iter()
                    .find(|r| r.get("concurrency").and_then(|v| v.as_i64()) == Some(clients))
                    .and_then(|r| r.get("throughput")?.as_f64())
            };
            Ok(match (rate(1), rate(8)) {
                (Some(one), Some(eight)) => {
                    let evidence = format!(
                        "{eight:.1} against {one:.1} tokens per second ({:.2}×)",
                        eight / one
                    );
                    if eight >= 2.0 * one {
                        Verdict::Holds(evidence)
                    } else {
                        Verdict::Falsified(evidence)
                    }
                }
                _ => missing("throughput-levels"),
            })
        },
    },
    Claim {
        id: "ST-1",
        chapter: "Streaming",
        statement: "Streaming shows the first text sooner without making the complete answer more than 10% slower",
        check: |root| {
            let Some(t) = table(root, "streaming-vs-plain")? else {
                return Ok(missing("streaming-vs-plain"));
            };
            let get = |mode, key| t.table.lookup("mode", mode, key);
            Ok(
                match (
                    get("plain JSON", "total"),
                    get("streamed (SSE)", "first"),
                    get("streamed (SSE)", "total"),
                ) {
                    (Some(plain), Some(first), Some(total)) => {
                        let evidence = format!(
                            "first text after {first:.0} instead of {plain:.0} ms; complete after {total:.0} ms"
                        );
                        if first < plain && total <= 1.1 * plain {
                            Verdict::Holds(evidence)
                        } else {
                            Verdict::Falsified(evidence)
                        }
                    }
                    _ => missing("streaming-vs-plain"),
                },
            )
        },
    },
    Claim {
        id: "QZ-1",
        chapter: "Quantization",
        statement: "Requantizing the model to Q8_0 changes its perplexity by less than 1%",
        check: |root| {
            let Some(t) = table(root, "quantization-formats")? else {
                return Ok(missing("quantization-formats"));
            };
            Ok(match t.table.lookup("format", "Q8_0", "dppl") {
                Some(d) => {
                    let evidence = format!("ΔPPL {d:+.2}% against the source");
                    if d.abs() < 1.0 {
                        Verdict::Holds(evidence)
                    } else {
                        Verdict::Falsified(evidence)
                    }
                }
                None => missing("quantization-formats"),
            })
        },
    },
    Claim {
        id: "QZ-2",
        chapter: "Quantization",
        statement: "Q4_K compresses the model at least 3.5× against F16 with a perplexity at most 10% worse",
        check: |root| {
            let Some(t) = table(root, "quantization-formats")? else {
                return Ok(missing("quantization-formats"));
            };
            let ratio = t.table.lookup("format", "Q4_K", "vs_f16");
            let dppl = t.table.lookup("format", "Q4_K", "dppl");
            Ok(match (ratio, dppl) {
                (Some(r), _) if r < 3.5 => Verdict::Falsified(format!(
                    "{r:.2}× against F16: this model's rows of 576 are not whole 256-weight blocks, so most matrices fall back to Q5_0"
                )),
                (Some(r), Some(d)) => {
                    let evidence = format!("{r:.2}× against F16, ΔPPL {d:+.2}%");
                    if d <= 10.0 {
                        Verdict::Holds(evidence)
                    } else {
                        Verdict::Falsified(evidence)
                    }
                }
                (Some(r), None) => Verdict::NotMeasured(format!(
                    "{r:.2}× against F16; perplexity needs the Q4_K kernels"
                )),
                _ => missing("quantization-formats"),
            })
        },
    },
    Claim {
        id: "QZ-3",
        chapter: "Quantization",
        statement: "Activation-aware scaling (AWQ) lowers the perplexity of the model at Q4_0 against plain rounding",
        check: |root| {
            let Some(t) = table(root, "quantization-formats")? else {
                return Ok(missing("quantization-formats"));
            };
            let plain = t.table.lookup("format", "Q4_0", "ppl");
            let awq = t.table.lookup("format", "Q4_0 + AWQ", "ppl");
            Ok(match (plain, awq) {
                (Some(p), Some(a)) => {
                    let evidence = format!("perplexity {a:.3} with AWQ, {p:.3} without");
                    if a < p {
                        Verdict::Holds(evidence)
                    } else {
                        Verdict::Falsified(evidence)
                    }
                }
                _ => missing("quantization-formats"),
            })
        },
    },
    Claim {
        id: "QZ-4",
        chapter: "Quantization",
        statement: "An 8-bit (Q8_0) KV cache takes at most 55% of the f16 cache's memory and keeps the perplexity within 1% of it",
        check: |root| {
            let Some(t) = table(root, "quantization-kv-cache")? else {
                return Ok(missing("quantization-kv-cache"));
            };
            let bytes = |p| t.table.lookup("cache", p, "per_token");
            let (f16, q8) = (bytes("f16"), bytes("q8_0"));
            let dppl = t.table.lookup("cache", "q8_0", "dppl");
            Ok(match (f16, q8, dppl) {
                (Some(f), Some(q), Some(d)) => {
                    let share = 100.0 * q / f;
                    let evidence = format!("{share:.0}% of the memory, ΔPPL {d:+.2}%");
                    if share <= 55.0 && d.abs() <= 1.0 {
                        Verdict::Holds(evidence)
                    } else {
                        Verdict::Falsified(evidence)
                    }
                }
                _ => missing("quantization-kv-cache"),
            })
        },
    },
    Claim {
        id: "APR-1",
        chapter: "The APR format",
        statement: "The model loads from APR memory-mapped, every tensor indexed, in at most 100 ms",
        check: |root| {
            let Some(t) = table(root, "apr-load")? else {
                return Ok(missing("apr-load"));
            };
            Ok(match t.table.lookup("format", "APR v2", "index_ms") {
                Some(ms) if ms <= 100.0 => Verdict::Holds(format!("{ms:.1} ms to open and index")),
                Some(ms) => Verdict::Falsified(format!("{ms:.1} ms to open and index")),
                None => missing("apr-load"),
            })
        },
    },
    Claim {
        id: "APR-2",
        chapter: "The APR format",
        statement: "With the publisher's key, a signed APR file that was changed or re-signed by someone else is rejected, and so is an encrypted one with a wrong password or a changed byte",
        check: |root| {
            let Some(t) = table(root, "apr-security")? else {
                return Ok(missing("apr-security"));
            };
            let checked: Vec<_> = t
                .table
                .rows
                .iter()
                .filter(|r| {
                    r.get("opened_with").and_then(|v| v.as_str())
                        != Some("aprender's default (key in the file)")
                })
                .collect();
            let unsafe_rows = checked
                .iter()
                .filter(|r| r.get("safe").and_then(|v| v.as_str()) != Some("yes"))
                .count();
            let evidence = format!(
                "{} of {} attempts handled safely",
                checked.len() - unsafe_rows,
                checked.len()
            );
            Ok(if checked.is_empty() {
                missing("apr-security")
            } else if unsafe_rows == 0 {
                Verdict::Holds(evidence)
            } else {
                Verdict::Falsified(evidence)
            })
        },
    },
];

/// Holds when `value` is at least `floor`.
fn at_least(value: Option<f64>, floor: f64, what: &str, table: &str) -> Verdict {
    match value {
        Some(v) if v >= floor => Verdict::Holds(format!("{v:.1}{what}")),
        Some(v) => Verdict::Falsified(format!("{v:.1}{what}")),
        None => missing(table),
    }
}

/// The rows of `parity-bars` whose id `wanted` accepts: holds when there is at least one and
/// every one holds; the evidence is each row's measured value against its limit.
fn parity_bars(root: &Path, wanted: fn(&str) -> bool) -> Result<Verdict> {
    let Some(t) = table(root, "parity-bars")? else {
        return Ok(missing("parity-bars"));
    };
    let rows: Vec<_> = t
        .table
        .rows
        .iter()
        .filter(|r| r.get("id").and_then(|v| v.as_str()).is_some_and(wanted))
        .collect();
    if rows.is_empty() {
        return Ok(missing("parity-bars"));
    }
    let text = |r: &serde_json::Map<String, serde_json::Value>, key: &str| {
        r.get(key)
            .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string))
            .unwrap_or_default()
    };
    let evidence = rows
        .iter()
        .map(|r| {
            format!(
                "{} {} vs {}",
                text(r, "id"),
                text(r, "measured"),
                text(r, "limit")
            )
        })
        .collect::<Vec<_>>()
        .join("; ");
    let holds = rows
        .iter()
        .all(|r| r.get("holds").and_then(|v| v.as_bool()) == Some(true));
    Ok(if holds {
        Verdict::Holds(evidence)
    } else {
        Verdict::Falsified(evidence)
    })
}

fn table(root: &Path, name: &str) -> Result<Option<BenchFile>> {
    BenchFile::load(root, name)
}

fn missing(name: &str) -> Verdict {
    Verdict::NotMeasured(format!("no benchmarks/{name}.json yet"))
}

/// Evaluates every claim, writes `benchmarks/falsification.json`; returns (holds, falsified).
pub fn run(root: &Path) -> Result<(usize, usize)> {
    let mut t = Table::new(
        "falsification",
        "Falsification scorecard",
        vec![
            Column::new("id", "Claim"),
            Column::new("chapter", "Chapter"),
            Column::new("statement", "Statement"),
            Column::new("verdict", "Verdict"),
            Column::new("evidence", "Evidence"),
        ],
    );
    let (mut holds, mut falsified) = (0, 0);
    for claim in CLAIMS {
        let verdict =
            (claim.check)(root).unwrap_or_else(|e| Verdict::NotMeasured(format!("error: {e:#}")));
        let (word, evidence) = match verdict {
            Verdict::Holds(e) => {
                holds += 1;
                ("holds", e)
            }
            Verdict::Falsified(e) => {
                falsified += 1;
                ("FALSIFIED", e)
            }
            Verdict::NotMeasured(e) => ("not measured", e),
        };
        t.push(vec![
            json!(claim.id),
            json!(claim.chapter),
            json!(claim.statement),
            json!(word),
            json!(evidence),
        ]);
    }
    t.notes.push(format!(
        "{holds} of {} claims hold on this machine, {falsified} falsified.",
        CLAIMS.len()
    ));
    let mut provenance = Provenance::current();
    provenance.command = "cargo xtask falsify".into();
    BenchFile {
        table: t,
        provenance,
    }
    .save(root)?;
    Ok((holds, falsified))
}
