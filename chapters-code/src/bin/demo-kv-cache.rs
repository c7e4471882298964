//! The KV cache: how it grows token by token, what a token costs, and how much of the
//! reserved memory holds real tokens — paged blocks against reserving each request's maximum.

use anyhow::Result;
use chapters_code::demo::replays::replay_policies;
use chapters_code::demo::{Column, DemoArgs, ModelArgs, Provenance, Report, Table, WorkloadArgs};
use chapters_code::engine::Policy;
use chapters_code::kv::{BlockPool, DEFAULT_BLOCK_TOKENS};
use clap::Parser;
use serde_json::json;

/// Replay a seeded request trace through the continuous-batching engine with a paged KV cache
/// (blocks of 16 tokens) and report what the cache holds: memory per token, growth over the
/// replay, and memory efficiency (bytes holding real tokens ÷ bytes reserved) of paged blocks
/// against reserving each request's maximum length up front.
#[derive(Parser, Debug)]
#[command(
    name = "demo-kv-cache",
    version,
    after_help = "Examples:\n  demo-kv-cache\n  demo-kv-cache --requests 128 --kv-mib 16\n  demo-kv-cache --output json\n"
)]
struct Cli {
    #[command(flatten)]
    demo: DemoArgs,

    #[command(flatten)]
    run: ModelArgs,

    #[command(flatten)]
    workload: WorkloadArgs,
}

fn main() -> std::process::ExitCode {
    chapters_code::demo::exit::run(demo)
}

fn demo() -> Result<()> {
    let cli = Cli::parse();
    let replays = replay_policies(
        &cli.run,
        &cli.workload,
        cli.demo.seed,
        &[Policy::Continuous],
    )?;
    let (spec, r) = (&replays.spec, &replays.results[0]);

    let c = &replays.config;
    let per_token = BlockPool::bytes_per_block(c, 1);
    let mut cost = Table::new(
        "kv-cost",
        "What the KV cache costs (f16 keys and values)",
        vec![
            Column::new("what", "What"),
            Column::new("kb", "Size").unit("KiB").decimals(1),
        ],
    );
    cost.push(vec![
        json!(format!(
            "one token: 2 × {} layers × {} KV heads × {} dims × 2 bytes",
            c.n_layers, c.n_kv_heads, c.head_dim
        )),
        json!(per_token as f64 / 1024.0),
    ]);
    cost.push(vec![
        json!(format!("one block of {DEFAULT_BLOCK_TOKENS} tokens")),
        json!(BlockPool::bytes_per_block(c, DEFAULT_BLOCK_TOKENS) as f64 / 1024.0),
    ]);
    cost.push(vec![
        json!(format!(
            "one sequence at the full context ({} tokens)",
            c.context_length
        )),
        json!((per_token * c.context_length) as f64 / 1024.0),
    ]);
    cost.push(vec![
        json!(format!(
            "the same with one KV head per query head ({} instead of {})",
            c.n_heads, c.n_kv_heads
        )),
        json!((per_token * c.n_heads / c.n_kv_heads) as f64 / 1024.0),
    ]);

    let mut efficiency = Table::new(
        "kv-efficiency",
        "Memory efficiency on the same request trace: bytes holding tokens ÷ bytes reserved",
        vec![
            Column::new("scheme", "Reservation"),
            Column::new("efficiency", "Efficiency")
                .unit("%")
                .decimals(1),
        ],
    );
    efficiency.push(vec![
        json!(format!("paged, blocks of {DEFAULT_BLOCK_TOKENS} tokens")),
        json!(100.0 * r.kv_efficiency_paged),
    ]);
    efficiency.push(vec![
        json!("each request reserves prompt + max_tokens up front"),
        json!(100.0 * r.kv_efficiency_reserve_request),
    ]);
    efficiency.push(vec![
        json!(format!(
            "each request reserves the full context ({} tokens)",
            c.context_length
        )),
        json!(100.0 * r.kv_efficiency_reserve_context),
    ]);
    efficiency.notes.push(format!(
        "Averaged over the {} steps of a continuous-batching replay of {} requests (prompts of {}–{} tokens, {}–{} generated, batches of {}, seed {}). Peak: {} blocks ({:.1} MiB) in use.",
        r.steps,
        spec.requests,
        spec.prompt_tokens.0,
        spec.prompt_tokens.1,
        spec.output_tokens.0,
        spec.output_tokens.1,
        cli.workload.max_running,
        spec.seed,
        r.peak_blocks,
        (r.peak_blocks * BlockPool::bytes_per_block(c, DEFAULT_BLOCK_TOKENS)) as f64 / (1u64 << 20) as f64
    ));

    // Growth: blocks in use at ten points of the replay.
    let mut growth = Table::new(
        "kv-growth",
        "KV blocks in use over the replay",
        vec![
            Column::new("at", "Progress").unit("% of steps"),
            Column::new("blocks", "Blocks in use"),
            Column::new("mib", "Memory").unit("MiB").decimals(2),
        ],
    );
    let n = r.blocks_per_step.len();
    for tenth in 1..=10 {
        if n == 0 {
            break;
        }
        let blocks = r.blocks_per_step[(tenth * n / 10).saturating_sub(1)];
        growth.push(vec![
            json!(tenth * 10),
            json!(blocks),
            json!(
                (blocks * BlockPool::bytes_per_block(c, DEFAULT_BLOCK_TOKENS)) as f64
                    / (1u64 << 20) as f64
            ),
        ]);
    }

    let verified = cli.demo.verify.then(|| {
        r.kv_efficiency_paged > r.kv_efficiency_reserve_request
            && r.generated_tokens == replays.requested_tokens()
    });
    let report = Report {
        demo: "kv-cache".into(),
        provenance: Provenance::current(),
        result: json!({ "workload": spec, "replay": r }),
        tables: vec![cost, efficiency, growth],
        verified,
    };
    report.emit(cli.demo.output, |out| {
        writeln!(
            out,
            "{} requests replayed, {} tokens generated in {:.1} s",
            r.requests, r.generated_tokens, r.seconds
        )
    })?;
    if verified == Some(false) {
        std::process::exit(1);
    }
    Ok(())
}
