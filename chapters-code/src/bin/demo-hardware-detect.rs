//! Know your hardware: detect CPU, SIMD, memory and CUDA, then measure the roofline (memory
//! bandwidth and peak FLOP/s) and the decode-speed bound it implies.

use anyhow::Result;
use chapters_code::assets;
use chapters_code::demo::{Column, DemoArgs, Provenance, Report, Table, progress};
use chapters_code::hw::roofline::{self, FmaKernel, Probe};
use chapters_code::hw::{MachineInfo, trueno_view};
use clap::Parser;
use serde_json::json;
use std::time::Duration;

/// Detect this machine's CPU, SIMD level, memory and CUDA devices, and measure its roofline:
/// memory bandwidth (STREAM triad) and peak f32 FLOP/s, on one thread and on all threads, plus
/// the upper bound of LLM decode speed they imply (tokens/s ≤ bandwidth ÷ model bytes).
#[derive(Parser, Debug)]
#[command(
    name = "demo-hardware-detect",
    version,
    after_help = "Examples:\n  demo-hardware-detect\n  demo-hardware-detect --output json\n  demo-hardware-detect --verify\n"
)]
struct Cli {
    #[command(flatten)]
    demo: DemoArgs,

    /// Threads of the "all threads" measurements [default: all logical cores].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..1025))]
    threads: Option<u64>,

    /// Bytes the model reads per decoded token, for the decode bound [default: the course
    /// model's file size, read from the file if it is fetched].
    #[arg(long)]
    model_bytes: Option<u64>,

    /// Total size of the triad's three arrays in MiB [default: 4× the last-level cache, at
    /// least 64, at most a quarter of available memory].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    array_mib: Option<u64>,
}

fn main() -> std::process::ExitCode {
    chapters_code::demo::exit::run(demo)
}

fn demo() -> Result<()> {
    let cli = Cli::parse();
    let machine = MachineInfo::detect();
    let trueno = trueno_view::detect();
    let all = cli
        .threads
        .map_or(machine.cpu.logical_cores, |t| t as usize);
    let model_bytes = cli.model_bytes.unwrap_or_else(|| {
        std::fs::metadata(assets::model_path()).map_or(assets::COURSE_MODEL_BYTES, |m| m.len())
    });

    let quarter_of_memory = machine.memory.usable_bytes().map_or(1 << 30, |b| b / 4);
    let triad_elems = match cli.array_mib {
        Some(mib) => (mib << 20) as usize / 24,
        None => {
            roofline::triad_elems_for_cache(machine.cpu.last_level_cache_bytes, quarter_of_memory)
        }
    };
    let (reps, flop_time) = if cli.demo.benchmark {
        (10, Duration::from_millis(200))
    } else {
        (3, Duration::from_millis(60))
    };
    let level = machine.cpu.simd;
    let thread_counts: Vec<usize> = if all > 1 { vec![1, all] } else { vec![1] };

    let bar = progress::steps(2 * thread_counts.len() as u64, "measuring the roofline");
    let mut bandwidth = Vec::new();
    let mut flops = Vec::new();
    for &threads in &thread_counts {
        bar.set_message(format!("triad, {threads} thread(s)"));
        bandwidth.push(roofline::triad_bandwidth(triad_elems, threads, reps));
        bar.inc(1);
        bar.set_message(format!("FMA, {threads} thread(s)"));
        flops.push(roofline::flops_probe(
            FmaKernel::SimdManyChains,
            level,
            threads,
            flop_time,
            reps.min(5),
        ));
        bar.inc(1);
    }
    bar.finish_and_clear();

    let roof = roofline_table(&bandwidth, &flops, model_bytes, triad_elems, &machine);
    let detect = detection_table(&machine, &trueno, &bandwidth, &flops);
    let verified = bandwidth.iter().chain(&flops).all(|p| p.verified);

    let report = Report {
        demo: "hardware-detect".into(),
        provenance: Provenance::current(),
        result: json!({
            "machine": machine,
            "trueno": trueno,
            "model_bytes": model_bytes,
            "triad_array_bytes": triad_elems as u64 * 8,
            "bandwidth": bandwidth,
            "flops": flops,
        }),
        tables: vec![roof, detect],
        verified: cli.demo.verify.then_some(verified),
    };
    report.emit(cli.demo.output, |out| {
        writeln!(
            out,
            "CPU     {} ({}, {} logical cores)",
            machine.cpu.model, machine.cpu.arch, machine.cpu.logical_cores
        )?;
        writeln!(
            out,
            "SIMD    {} (features: {})",
            machine.cpu.simd,
            machine.cpu.features.join(" ")
        )?;
        let gib = |b: Option<u64>| {
            b.map_or("unknown".to_string(), |b| {
                format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64)
            })
        };
        writeln!(
            out,
            "Memory  {} total, {} available",
            gib(machine.memory.total_bytes),
            gib(machine.memory.available_bytes)
        )?;
        writeln!(out, "CUDA    {}", machine.cuda)
    })?;
    if cli.demo.verify && !verified {
        eprintln!(
            "verify: a kernel produced a wrong result (see the `verified` fields of --output json)"
        );
        std::process::exit(1);
    }
    Ok(())
}

fn roofline_table(
    bandwidth: &[Probe],
    flops: &[Probe],
    model_bytes: u64,
    triad_elems: usize,
    machine: &MachineInfo,
) -> Table {
    let mut t = Table::new(
        "hardware-roofline",
        "Roofline of this machine (measured)",
        vec![
            Column::new("measurement", "Measurement"),
            Column::new("threads", "Threads"),
            Column::new("value", "Result"),
            Column::new("unit", "Unit"),
        ],
    );
    for p in bandwidth {
        t.push(vec![
            json!("memory bandwidth (triad)"),
            json!(p.threads),
            json!(p.rate / 1e9),
            json!("GB/s"),
        ]);
    }
    for p in flops {
        t.push(vec![
            json!(format!("peak f32 compute ({} FMA)", machine.cpu.simd)),
            json!(p.threads),
            json!(p.rate / 1e9),
            json!("GFLOP/s"),
        ]);
    }
    for (b, f) in bandwidth.iter().zip(flops) {
        t.push(vec![
            json!("ridge point (compute ÷ bandwidth)"),
            json!(b.threads),
            json!(roofline::ridge_point(f.rate, b.rate)),
            json!("FLOP/byte"),
        ]);
    }
    for b in bandwidth {
        t.push(vec![
            json!(format!(
                "decode bound, {:.1} MB model",
                model_bytes as f64 / 1e6
            )),
            json!(b.threads),
            json!(roofline::decode_bound_tokens_per_s(b.rate, model_bytes)),
            json!("tokens/s"),
        ]);
    }
    t.notes.push(format!(
        "Triad over three arrays of {:.0} MiB each (STREAM counts 24 bytes per element); FMA kernel: {} independent chains, best of several runs.",
        (triad_elems * 8) as f64 / (1u64 << 20) as f64,
        roofline::FMA_CHAINS
    ));
    t
}

fn detection_table(
    machine: &MachineInfo,
    trueno: &trueno_view::TruenoView,
    bandwidth: &[Probe],
    flops: &[Probe],
) -> Table {
    let mut t = Table::new(
        "hardware-detect",
        "What our detection and trueno's report on the same machine",
        vec![
            Column::new("property", "Property"),
            Column::new("ours", "chapters-code (detected / measured)"),
            Column::new(
                "trueno",
                &format!("trueno {} HardwareCapability", trueno.version),
            ),
        ],
    );
    let best = |probes: &[Probe]| probes.iter().map(|p| p.rate).fold(0.0, f64::max);
    let cpu = &machine.cpu;
    t.push(vec![
        json!("CPU model"),
        json!(cpu.model),
        json!(trueno.cpu_model),
    ]);
    t.push(vec![
        json!("cores (physical / logical)"),
        json!(format!(
            "{} / {}",
            cpu.physical_cores.map_or("?".into(), |c| c.to_string()),
            cpu.logical_cores
        )),
        json!(format!("{} / {}", trueno.cores, trueno.threads)),
    ]);
    t.push(vec![
        json!("SIMD"),
        json!(format!("{} ({})", cpu.simd, cpu.features.join(" "))),
        json!(format!(
            "detected {}, kernels use {}",
            trueno.detected_simd, trueno.selected_backend
        )),
    ]);
    t.push(vec![
        json!("memory bandwidth"),
        json!(format!("{:.1} GB/s measured", best(bandwidth) / 1e9)),
        json!(format!("{:.1} GB/s assumed", trueno.memory_bandwidth_gb_s)),
    ]);
    t.push(vec![
        json!("peak f32 compute"),
        json!(format!("{:.1} GFLOP/s measured", best(flops) / 1e9)),
        json!(format!(
            "{:.1} GFLOP/s computed from an assumed clock",
            trueno.peak_gflops
        )),
    ]);
    t.push(vec![
        json!("GPU"),
        json!(machine.cuda.to_string()),
        json!(trueno.gpu),
    ]);
    t
}
