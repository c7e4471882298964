//! The book's claims, each with the measured tables it is tested against and the test. Rows
//! are found by their keys (a policy, a thread count, a format), never by their position, and
//! every threshold comes from [`super::thresholds`].

use super::thresholds::*;
use super::{Verdict, missing, table};
use anyhow::Result;
use std::path::Path;

/// A claim the book makes, and how to test it.
pub struct Claim {
    pub id: &'static str,
    pub chapter: &'static str,
    pub statement: &'static str,
    /// The results files (`benchmarks/<name>.json`) the check reads.
    pub tables: &'static [&'static str],
    pub check: fn(&Path) -> Result<Verdict>,
}

pub const CLAIMS: &[Claim] = &[
    Claim {
        id: "HW-1",
        chapter: "Know your hardware",
        statement: "Independent SIMD chains beat the naive scalar loop by at least the SIMD lane count",
        tables: &["hardware-fma-kernels"],
        check: |root| {
            let Some(t) = table(root, "hardware-fma-kernels")? else {
                return Ok(missing("hardware-fma-kernels"));
            };
            // The lanes of the SIMD tier the measurement ran (its provenance), not this machine's.
            let tier = t.provenance.simd.to_ascii_lowercase();
            let lanes = match tier.split_whitespace().next().unwrap_or("") {
                "avx-512" | "avx512" => 16.0,
                "avx2" => 8.0,
                "neon" => 4.0,
                _ => 1.0,
            };
            let rate = |prefix: &str| {
                t.table
                    .rows
                    .iter()
                    .filter(|r| {
                        r.get("what")
                            .and_then(|v| v.as_str())
                            .is_some_and(|w| w.starts_with(prefix))
                    })
                    .filter_map(|r| r.get("rate")?.as_f64())
                    .max_by(f64::total_cmp)
            };
            Ok(match (rate("scalar, 1 chain"), rate("SIMD, ")) {
                (Some(naive), Some(simd)) => {
                    let s = simd / naive;
                    if s >= lanes {
                        Verdict::Holds(format!("{s:.1}× ≥ {lanes} lanes"))
                    } else {
                        Verdict::Falsified(format!("{s:.1}× < {lanes} lanes"))
                    }
                }
                _ => missing("hardware-fma-kernels"),
            })
        },
    },
    Claim {
        id: "HW-2",
        chapter: "Know your hardware",
        statement: "One thread cannot use all the memory bandwidth: the triad is faster on all threads",
        tables: &["hardware-roofline"],
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
            let one = rates.iter().find(|r| r.0 == 1);
            let all = rates.iter().max_by_key(|r| r.0);
            Ok(match (one, all) {
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
        tables: &["hardware-triad-sizes"],
        check: |root| {
            let Some(t) = table(root, "hardware-triad-sizes")? else {
                return Ok(missing("hardware-triad-sizes"));
            };
            let rate = |level: &str| {
                t.table
                    .rows
                    .iter()
                    .find(|r| {
                        r.get("what")
                            .and_then(|v| v.as_str())
                            .is_some_and(|w| w.ends_with(&format!("({level})")))
                    })
                    .and_then(|r| r.get("rate")?.as_f64())
            };
            Ok(match (rate("L1"), rate("DRAM")) {
                (Some(l1), Some(dram)) => {
                    let evidence = format!("L1 {l1:.1}, DRAM {dram:.1} (GB per second)");
                    if l1 > dram {
                        Verdict::Holds(evidence)
                    } else {
                        Verdict::Falsified(evidence)
                    }
                }
                _ => missing("hardware-triad-sizes"),
            })
        },
    },
    Claim {
        id: "TGI-1",
        chapter: "From prompt to tokens",
        statement: "On every prompt of the parity suite, teacher-forced, our largest top-5 |Δ log p| against llama.cpp is at most the largest between two llama.cpp builds",
        tables: &["parity-bars"],
        check: |root| parity_bars(root, |id| id == "delta"),
    },
    Claim {
        id: "TGI-2",
        chapter: "From prompt to tokens",
        statement: "Where our greedy text leaves a llama.cpp build's, that build's own top-2 margin is within the noise floor, and our greedy agreement with each build is at least that build's least with another llama.cpp build",
        tables: &["parity-bars"],
        check: |root| parity_bars(root, |id| id == "margin" || id.starts_with("agreement-")),
    },
    Claim {
        id: "TGI-9",
        chapter: "From prompt to tokens",
        statement: "A sequence's logits are the same bits alone, in a batch, in pieces, through the prefix cache, at 1 or 2 threads",
        tables: &["parity-bars"],
        check: |root| parity_bars(root, |id| id == "batch-invariance"),
    },
    Claim {
        id: "TGI-10",
        chapter: "From prompt to tokens",
        statement: "The SIMD path gives the scalar path's logits bit for bit on the whole parity suite",
        tables: &["parity-bars"],
        check: |root| parity_bars(root, |id| id.starts_with("simd-")),
    },
    Claim {
        id: "TGI-3",
        chapter: "From prompt to tokens",
        statement: "Perplexity on the reference text at context 512 is within 1% of llama-perplexity's",
        tables: &["perplexity"],
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
                    if 100.0 * rel.abs() <= TGI3_PPL_PCT {
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
        // llama.cpp's own benchmark tool (tg128), built from the vendored sources on this machine.
        tables: &["peer-llama-bench"],
        check: |root| {
            let Some(t) = table(root, "peer-llama-bench")? else {
                return Ok(Verdict::NotMeasured(
                    "needs benchmarks/peer-llama-bench.json (cargo xtask bench --peer llama-cpp)"
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
                return Ok(missing("peer-llama-bench"));
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
        statement: "Decoding on one thread reaches at least 50% of the memory-bandwidth bound",
        tables: &["engine-speed"],
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
                    if s >= TGI5_BOUND_SHARE_PCT {
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
        tables: &["engine-speed"],
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
            let one = decode.iter().find(|r| r.0 == 1);
            let many = decode.iter().max_by_key(|r| r.0);
            Ok(match (one, many) {
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
        tables: &["engine-speed"],
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
        tables: &["engine-contention"],
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
                    if spun >= TGI8_CONTENTION_PCT / 100.0 * slept {
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
        tables: &["kv-efficiency"],
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
                KV1_EFFICIENCY_PCT,
                "% of reserved bytes hold tokens",
                "kv-efficiency",
            ))
        },
    },
    Claim {
        id: "CB-1",
        chapter: "Continuous batching",
        statement: "Continuous batching has a higher throughput than static batching on the same workload",
        tables: &["batching-comparison"],
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
        tables: &["batching-comparison"],
        check: |root| {
            let Some(t) = table(root, "batching-comparison")? else {
                return Ok(missing("batching-comparison"));
            };
            let u = t.table.lookup("policy", "continuous", "utilization");
            Ok(at_least(
                u,
                CB2_UTILIZATION_PCT,
                "% of batch slots did useful work",
                "batching-comparison",
            ))
        },
    },
    Claim {
        id: "TP-1",
        chapter: "Throughput benchmark",
        statement: "8 concurrent streams get at least 2× the aggregate throughput of one",
        tables: &["throughput-levels"],
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
            Ok(match (rate(1), rate(TP1_CLIENTS as i64)) {
                (Some(one), Some(eight)) => {
                    let evidence = format!(
                        "{eight:.1} against {one:.1} tokens per second ({:.2}×)",
                        eight / one
                    );
                    if eight >= TP1_SCALING_X * one {
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
        tables: &["streaming-vs-plain"],
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
                        if first < plain && total <= (1.0 + ST1_SLOWDOWN_PCT / 100.0) * plain {
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
        tables: &["quantization-formats"],
        check: |root| {
            let Some(t) = table(root, "quantization-formats")? else {
                return Ok(missing("quantization-formats"));
            };
            Ok(match t.table.lookup("format", "Q8_0", "dppl") {
                Some(d) => {
                    let evidence = format!("ΔPPL {d:+.2}% against the source");
                    if d.abs() < QZ1_DPPL_PCT {
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
        statement: "A 4-bit model (Q4_0 everywhere, rounded by GPTQ, with or without AWQ) compresses at least 3.5× against F16 with a perplexity at most 10% worse",
        tables: &["prune-gptq"],
        check: |root| {
            let Some(t) = table(root, "prune-gptq")? else {
                return Ok(missing("prune-gptq"));
            };
            // The better of the two GPTQ recipes.
            let best = ["Q4_0, GPTQ", "Q4_0, AWQ + GPTQ"]
                .into_iter()
                .filter_map(|recipe| {
                    let d = t.table.lookup("recipe", recipe, "dppl")?;
                    Some((recipe, d, t.table.lookup("recipe", recipe, "vs_f16")?))
                })
                .min_by(|a, b| a.1.total_cmp(&b.1));
            let rtn = t.table.lookup("recipe", "Q4_0, round to nearest", "dppl");
            Ok(match best {
                Some((recipe, d, r)) => {
                    let evidence = format!(
                        "{recipe}: {r:.2}× against F16, ΔPPL {d:+.2}% (round to nearest: {})",
                        rtn.map_or("not measured".into(), |x| format!("{x:+.2}%"))
                    );
                    if r >= QZ2_COMPRESSION_X && d <= QZ2_DPPL_PCT {
                        Verdict::Holds(evidence)
                    } else {
                        Verdict::Falsified(evidence)
                    }
                }
                _ => missing("prune-gptq"),
            })
        },
    },
    Claim {
        id: "QZ-3",
        chapter: "Quantization",
        statement: "Activation-aware scaling (AWQ) lowers the perplexity of the model at Q4_0 against plain rounding",
        tables: &["quantization-formats"],
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
        tables: &["quantization-kv-cache"],
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
                    if share <= QZ4_MEMORY_PCT && d.abs() <= QZ4_DPPL_PCT {
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
        tables: &["apr-load"],
        check: |root| {
            let Some(t) = table(root, "apr-load")? else {
                return Ok(missing("apr-load"));
            };
            Ok(match t.table.lookup("format", "APR v2", "index_ms") {
                Some(ms) if ms <= APR1_INDEX_MS => {
                    Verdict::Holds(format!("{ms:.1} ms to open and index"))
                }
                Some(ms) => Verdict::Falsified(format!("{ms:.1} ms to open and index")),
                None => missing("apr-load"),
            })
        },
    },
    Claim {
        id: "APR-2",
        chapter: "The APR format",
        statement: "With the publisher's key, a signed APR file that was changed or re-signed by someone else is rejected, and so is an encrypted one with a wrong password or a changed byte",
        tables: &["apr-security"],
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
    Claim {
        id: "PR-1",
        chapter: "Pruning",
        statement: "At 50% sparsity, Wanda's held-out perplexity is lower than magnitude pruning's",
        tables: &["prune-sparsity"],
        check: |root| {
            let Some(t) = table(root, "prune-sparsity")? else {
                return Ok(missing("prune-sparsity"));
            };
            let ppl = |method: &str| {
                t.table
                    .rows
                    .iter()
                    .find(|r| {
                        r.get("method").and_then(|v| v.as_str()) == Some(method)
                            && r.get("pattern").and_then(|v| v.as_str()) == Some("50%")
                    })
                    .and_then(|r| r.get("ppl")?.as_f64())
            };
            Ok(match (ppl("Wanda"), ppl("magnitude")) {
                (Some(w), Some(m)) => {
                    let evidence = format!("Wanda {w:.1} against magnitude {m:.1}");
                    if w < m {
                        Verdict::Holds(evidence)
                    } else {
                        Verdict::Falsified(evidence)
                    }
                }
                _ => missing("prune-sparsity"),
            })
        },
    },
    Claim {
        id: "DS-1",
        chapter: "Distillation",
        statement: "Distilling the teacher into its depth-pruned student wins back at least 50% of the perplexity the pruning lost",
        tables: &["distill-quality"],
        check: |root| {
            let Some(t) = table(root, "distill-quality")? else {
                return Ok(missing("distill-quality"));
            };
            let row = |model: &str, key: &str| t.table.lookup("model", model, key);
            Ok(match row("healed, forward KL", "recovered") {
                Some(r) => {
                    let evidence = format!(
                        "{r:.1}% recovered: perplexity {} pruned, {} healed, {} teacher",
                        fmt_opt(
                            t.table
                                .rows
                                .iter()
                                .find(|r| r
                                    .get("model")
                                    .and_then(|v| v.as_str())
                                    .is_some_and(|m| m.starts_with("pruned")))
                                .and_then(|r| r.get("ppl")?.as_f64())
                        ),
                        fmt_opt(row("healed, forward KL", "ppl")),
                        fmt_opt(row("teacher", "ppl")),
                    );
                    if r >= DS1_RECOVERED_PCT {
                        Verdict::Holds(evidence)
                    } else {
                        Verdict::Falsified(evidence)
                    }
                }
                None => missing("distill-quality"),
            })
        },
    },
    Claim {
        id: "DS-2",
        chapter: "Distillation",
        statement: "The healed student decodes at least 1.8× faster than its teacher",
        tables: &["distill-quality"],
        check: |root| {
            let Some(t) = table(root, "distill-quality")? else {
                return Ok(missing("distill-quality"));
            };
            Ok(
                match t.table.lookup("model", "healed, forward KL", "speedup") {
                    Some(x) => {
                        let evidence = format!("{x:.2}× the teacher's decode speed (paired runs)");
                        if x >= DS2_SPEEDUP_X {
                            Verdict::Holds(evidence)
                        } else {
                            Verdict::Falsified(evidence)
                        }
                    }
                    None => missing("distill-quality"),
                },
            )
        },
    },
    Claim {
        id: "FA-1",
        chapter: "Flash attention",
        statement: "At the longest prompt measured (about 8K tokens), tiled attention holds at most 1/20 of the memory naive attention holds",
        tables: &["flash-memory"],
        check: |root| {
            let Some(t) = table(root, "flash-memory")? else {
                return Ok(missing("flash-memory"));
            };
            let longest = longest_row(&t.table.rows);
            Ok(
                match longest
                    .and_then(|r| Some((r.get("context")?.as_f64()?, r.get("ratio")?.as_f64()?)))
                {
                    Some((n, x)) => {
                        let evidence = format!("{x:.0}× less at {n:.0} tokens");
                        if x >= FA1_MEMORY_X {
                            Verdict::Holds(evidence)
                        } else {
                            Verdict::Falsified(evidence)
                        }
                    }
                    None => missing("flash-memory"),
                },
            )
        },
    },
    Claim {
        id: "FA-2",
        chapter: "Flash attention",
        statement: "For a 4K-token prompt, tiled attention computes the prefill's attention at least 1.5× as fast as naive attention (one layer, measured side by side)",
        tables: &["flash-speed"],
        check: |root| {
            let Some(t) = table(root, "flash-speed")? else {
                return Ok(missing("flash-speed"));
            };
            let x = t.table.rows.iter().find_map(|r| {
                (r.get("context")?.as_f64()? == FA2_CONTEXT)
                    .then(|| r.get("prefill_speedup")?.as_f64())?
            });
            Ok(at_least(
                x,
                FA2_SPEEDUP_X,
                "× naive's prefill speed at 4096 tokens",
                "flash-speed",
            ))
        },
    },
    Claim {
        id: "FA-3",
        chapter: "Flash attention",
        statement: "At the longest context measured, decoding with tiled attention is no slower than with naive attention",
        tables: &["flash-speed"],
        check: |root| {
            let Some(t) = table(root, "flash-speed")? else {
                return Ok(missing("flash-speed"));
            };
            let longest = longest_row(&t.table.rows);
            Ok(
                match longest.and_then(|r| {
                    Some((
                        r.get("context")?.as_f64()?,
                        r.get("decode_ratio")?.as_f64()?,
                    ))
                }) {
                    Some((n, x)) => {
                        let evidence =
                            format!("tiled decodes at {x:.2}× naive's speed after {n:.0} tokens");
                        if x >= 1.0 {
                            Verdict::Holds(evidence)
                        } else {
                            Verdict::Falsified(evidence)
                        }
                    }
                    None => missing("flash-speed"),
                },
            )
        },
    },
    Claim {
        id: "FA-4",
        chapter: "Flash attention",
        statement: "Tiled attention gives the same logits bit for bit however a prompt is cut into steps (chunked prefill, decode split over key segments)",
        tables: &["flash-invariance"],
        check: |root| {
            all_true(
                root,
                "flash-invariance",
                "same_bits",
                "ways give the same bits",
            )
        },
    },
    Claim {
        id: "SD-1",
        chapter: "Speculative decoding",
        statement: "Greedy speculative decoding gives plain greedy decoding's tokens on every task, for every k and drafter verified",
        tables: &["spec-verify"],
        check: |root| all_true(root, "spec-verify", "same", "runs give the same tokens"),
    },
    Claim {
        id: "SD-2",
        chapter: "Speculative decoding",
        statement: "With n-gram drafts, one stream decodes an input-grounded task at least 1.5× as fast as plain decoding (1 thread, measured side by side)",
        tables: &["spec-tasks"],
        check: |root| {
            let Some(t) = table(root, "spec-tasks")? else {
                return Ok(missing("spec-tasks"));
            };
            let best = t
                .table
                .rows
                .iter()
                .filter(|r| {
                    r.get("grounded") == Some(&serde_json::Value::Bool(true))
                        && r.get("threads").and_then(|v| v.as_f64()) == Some(1.0)
                        && r.get("method")
                            .and_then(|v| v.as_str())
                            .is_some_and(|m| m.starts_with("ngram"))
                })
                .filter_map(|r| {
                    let x = r.get("decode_speedup")?.as_f64()?;
                    Some((
                        x,
                        format!(
                            "{} with {}",
                            r.get("task")?.as_str()?,
                            r.get("method")?.as_str()?
                        ),
                    ))
                })
                .max_by(|a, b| a.0.total_cmp(&b.0));
            Ok(match best {
                Some((x, what)) => {
                    let evidence = format!("{x:.2}× on {what}");
                    if x >= SD2_SPEEDUP_X {
                        Verdict::Holds(evidence)
                    } else {
                        Verdict::Falsified(evidence)
                    }
                }
                None => missing("spec-tasks"),
            })
        },
    },
    Claim {
        id: "SD-3",
        chapter: "Speculative decoding",
        statement: "The cost formula (tokens decided ÷ Σ T(1 + d)/T(1) over the target passes) predicts every n-gram decode speedup at 1 thread within 20%",
        tables: &["spec-tasks"],
        check: |root| {
            let Some(t) = table(root, "spec-tasks")? else {
                return Ok(missing("spec-tasks"));
            };
            let errors: Vec<f64> = t
                .table
                .rows
                .iter()
                .filter(|r| r.get("threads").and_then(|v| v.as_f64()) == Some(1.0))
                .filter_map(|r| {
                    let (x, p) = (
                        r.get("decode_speedup")?.as_f64()?,
                        r.get("predicted")?.as_f64()?,
                    );
                    Some(100.0 * (x - p).abs() / p)
                })
                .collect();
            let worst = errors.iter().copied().fold(0.0, f64::max);
            let evidence = format!("worst of {} predictions off by {worst:.0}%", errors.len());
            Ok(if errors.is_empty() {
                missing("spec-tasks")
            } else if worst <= SD3_ERROR_PCT {
                Verdict::Holds(evidence)
            } else {
                Verdict::Falsified(evidence)
            })
        },
    },
    Claim {
        id: "SD-4",
        chapter: "Speculative decoding",
        statement: "In the server, n-gram speculation under the default policy beats plain decoding's aggregate throughput for one client and keeps at least 0.95× of it at every client count measured, every request getting plain decoding's tokens",
        tables: &["spec-server"],
        check: |root| {
            let Some(t) = table(root, "spec-server")? else {
                return Ok(missing("spec-server"));
            };
            let rows: Vec<_> = t
                .table
                .rows
                .iter()
                .filter(|r| {
                    r.get("method")
                        .and_then(|v| v.as_str())
                        .is_some_and(|m| m.ends_with("(default)"))
                })
                .filter_map(|r| {
                    Some((
                        r.get("clients")?.as_f64()?,
                        r.get("speedup")?.as_f64()?,
                        r.get("same") == Some(&serde_json::Value::Bool(true)),
                    ))
                })
                .collect();
            let Some(one) = rows.iter().find(|r| r.0 == 1.0).map(|r| r.1) else {
                return Ok(missing("spec-server"));
            };
            let worst = rows
                .iter()
                .min_by(|a, b| a.1.total_cmp(&b.1))
                .expect("a row for one client");
            let same = rows.iter().all(|r| r.2);
            let evidence = format!(
                "{one:.2}× for one client, worst {:.2}× at {} clients{}",
                worst.1,
                worst.0,
                if same { "" } else { "; some tokens differ" }
            );
            Ok(if one > 1.0 && worst.1 >= SD4_FLOOR_X && same {
                Verdict::Holds(evidence)
            } else {
                Verdict::Falsified(evidence)
            })
        },
    },
    Claim {
        id: "MP-1",
        chapter: "Tensor parallelism",
        statement: "Split over tensor-parallel shards, the model stays inside the parity chapter's bars against the one-process engine: its top-5 log-probabilities differ no more, and its greedy runs share no fewer tokens, than two llama.cpp builds",
        tables: &["tp-agreement"],
        check: |root| {
            all_true(
                root,
                "tp-agreement",
                "within_bars",
                "splits within the bars",
            )
        },
    },
    Claim {
        id: "MP-2",
        chapter: "Tensor parallelism",
        statement: "The shards exchange exactly the bytes the formula gives: 2 × blocks × dim × 4 per token in the blocks' all-reduces, dim × 4 for the embedding, vocab × 4 for the logits",
        tables: &["tp-traffic"],
        check: |root| {
            all_true(
                root,
                "tp-traffic",
                "equal",
                "collectives as the formula says",
            )
        },
    },
    Claim {
        id: "MP-3",
        chapter: "Tensor parallelism",
        statement: "The cost model predicts the shards' decode speed on this machine within 25% of the measured speed",
        tables: &["tp-speed"],
        check: |root| {
            let Some(t) = table(root, "tp-speed")? else {
                return Ok(missing("tp-speed"));
            };
            // The split with the most shards: the one communication and waiting show in.
            let row = t
                .table
                .rows
                .iter()
                .filter_map(|r| {
                    let config = r.get("config")?.as_str()?;
                    config.starts_with("tensor parallel").then_some(())?;
                    Some((
                        config.to_string(),
                        r.get("threads")?.as_f64()?,
                        r.get("decode_tok_s")?.as_f64()?,
                        r.get("predicted_tok_s")?.as_f64()?,
                    ))
                })
                .max_by(|a, b| a.1.total_cmp(&b.1));
            Ok(match row {
                Some((config, _, measured, predicted)) => {
                    let error = (predicted / measured - 1.0) * 100.0;
                    let evidence = format!(
                        "{config}: predicted {predicted:.1}, measured {measured:.1} tokens per second ({error:+.1}%)"
                    );
                    if error.abs() <= MP3_ERROR_PCT {
                        Verdict::Holds(evidence)
                    } else {
                        Verdict::Falsified(evidence)
                    }
                }
                None => missing("tp-speed"),
            })
        },
    },
    Claim {
        id: "SV-1",
        chapter: "A serverless handler",
        statement: "A cold start is ready — model mapped, validated, tokenizer built — within 50 ms of the process's start, at P99",
        tables: &["lambda-cold-start"],
        check: |root| {
            let Some(t) = table(root, "lambda-cold-start")? else {
                return Ok(missing("lambda-cold-start"));
            };
            let p99 = t
                .table
                .rows
                .iter()
                .find(|r| {
                    r.get("stage")
                        .and_then(|s| s.as_str())
                        .is_some_and(|s| s.contains("ready"))
                })
                .and_then(|r| r.get("p99_ms")?.as_f64());
            Ok(match p99 {
                Some(v) if v <= SV1_READY_MS => Verdict::Holds(format!("ready at P99 {v:.1} ms")),
                Some(v) => Verdict::Falsified(format!("ready at P99 {v:.1} ms")),
                None => missing("lambda-cold-start"),
            })
        },
    },
    Claim {
        id: "SV-2",
        chapter: "A serverless handler",
        statement: "Through an emulator of the Lambda Runtime API the handler gives the engine's answers, refuses every bad event with a structured error, and keeps its process",
        tables: &["lambda-verify"],
        check: |root| all_true(root, "lambda-verify", "pass", "checks pass"),
    },
    Claim {
        id: "MR-1",
        chapter: "A model registry",
        statement: "Against a real OCI registry server a signed pull is verified, and every tamper case (unsigned, another key, a replayed tag, a swapped manifest, a changed blob) is refused before the file is used",
        tables: &["registry-verify"],
        check: |root| all_true(root, "registry-verify", "pass", "cases as expected"),
    },
    Claim {
        id: "SO-1",
        chapter: "Scaling out",
        statement: "A replica killed under load behind nginx or SGLang's router loses only the requests in flight on it; the front takes it out and brings it back after a restart",
        tables: &["scale-out-failover"],
        check: |root| all_true(root, "scale-out-failover", "pass", "fronts"),
    },
    Claim {
        id: "SO-2",
        chapter: "Scaling out",
        statement: "On a workload of a few long shared system prompts, prefix-aware routing (SGLang's cache_aware) serves more prompt tokens from the replicas' prefix caches and has a lower median time to first token than round-robin, in the same run",
        tables: &["scale-out-routing"],
        check: |root| {
            let Some(t) = table(root, "scale-out-routing")? else {
                return Ok(missing("scale-out-routing"));
            };
            let get = |front: &str, key: &str| t.table.lookup("front", front, key);
            let (rr, ca) = ("sglang-router round_robin", "sglang-router cache_aware");
            Ok(
                match (
                    get(rr, "ttft_p50_ms"),
                    get(ca, "ttft_p50_ms"),
                    get(rr, "prefix_hit_pct"),
                    get(ca, "prefix_hit_pct"),
                ) {
                    (Some(rr_ttft), Some(ca_ttft), Some(rr_hit), Some(ca_hit)) => {
                        let evidence = format!(
                            "TTFT P50 {ca_ttft:.0} ms cache_aware against {rr_ttft:.0} ms round_robin; prompt tokens from the prefix cache {ca_hit:.0}% against {rr_hit:.0}%"
                        );
                        if ca_ttft < rr_ttft && ca_hit > rr_hit {
                            Verdict::Holds(evidence)
                        } else {
                            Verdict::Falsified(evidence)
                        }
                    }
                    _ => missing("scale-out-routing"),
                },
            )
        },
    },
    Claim {
        id: "LP-1",
        chapter: "Latency profiling",
        statement: "At the sweep's lowest request rate at least 99% of this book's server's requests meet the latency objective (open loop)",
        tables: &["latency-vs-rate"],
        check: |root| {
            let Some(t) = table(root, "latency-vs-rate")? else {
                return Ok(missing("latency-vs-rate"));
            };
            let lowest = t
                .table
                .rows
                .iter()
                .filter(|r| r.get("server").and_then(|s| s.as_str()) == Some("this book's server"))
                .filter_map(|r| Some((r.get("rate")?.as_f64()?, r.get("slo_met")?.as_f64()?)))
                .min_by(|a, b| a.0.total_cmp(&b.0));
            Ok(match lowest {
                Some((rate, met)) => {
                    let evidence = format!("{met:.0}% at {rate} requests/s");
                    if met >= LP1_ATTAINED_PCT {
                        Verdict::Holds(evidence)
                    } else {
                        Verdict::Falsified(evidence)
                    }
                }
                None => missing("latency-vs-rate"),
            })
        },
    },
];

/// The row of the longest context (`context` column).
fn longest_row(
    rows: &[serde_json::Map<String, serde_json::Value>],
) -> Option<&serde_json::Map<String, serde_json::Value>> {
    rows.iter()
        .filter(|r| r.get("context").and_then(|v| v.as_f64()).is_some())
        .max_by(|a, b| {
            a["context"]
                .as_f64()
                .unwrap()
                .total_cmp(&b["context"].as_f64().unwrap())
        })
}

/// Holds when every row of table `name` has `key` true (and there is at least one row);
/// the evidence reads "N of M {what}".
fn all_true(root: &Path, name: &str, key: &str, what: &str) -> Result<Verdict> {
    let Some(t) = table(root, name)? else {
        return Ok(missing(name));
    };
    let rows = &t.table.rows;
    let yes = rows
        .iter()
        .filter(|r| r.get(key) == Some(&serde_json::Value::Bool(true)))
        .count();
    let evidence = format!("{yes} of {} {what}", rows.len());
    Ok(if rows.is_empty() {
        missing(name)
    } else if yes == rows.len() {
        Verdict::Holds(evidence)
    } else {
        Verdict::Falsified(evidence)
    })
}

/// Holds when `value` is at least `floor`.
fn at_least(value: Option<f64>, floor: f64, what: &str, table: &str) -> Verdict {
    match value {
        Some(v) if v >= floor => Verdict::Holds(format!("{v:.1}{what}")),
        Some(v) => Verdict::Falsified(format!("{v:.1}{what}")),
        None => missing(table),
    }
}

/// The rows of `parity-bars` whose id `wanted` accepts: holds when there is at least one and
/// every one holds.
fn parity_bars(root: &Path, wanted: fn(&str) -> bool) -> Result<Verdict> {
    Ok(match super::parity_bars(root, wanted)? {
        Some((true, evidence)) => Verdict::Holds(evidence),
        Some((false, evidence)) => Verdict::Falsified(evidence),
        None => missing("parity-bars"),
    })
}

/// A number for evidence text, or "—".
fn fmt_opt(x: Option<f64>) -> String {
    x.map_or_else(|| "—".into(), |x| format!("{x:.1}"))
}
