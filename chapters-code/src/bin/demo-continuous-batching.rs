//! Continuous batching: the same workload through static batching and through continuous
//! batching, on the real model, side by side.

use anyhow::Result;
use chapters_code::demo::replays::replay_policies;
use chapters_code::demo::{Column, DemoArgs, ModelArgs, Provenance, Report, Table, WorkloadArgs};
use chapters_code::engine::Policy;
use clap::Parser;
use serde_json::json;

/// Replay one seeded workload (mixed prompt and output lengths, requests arriving over time)
/// through static batching, then continuous batching, with the real model; report throughput,
/// batch utilization and latency percentiles of each.
#[derive(Parser, Debug)]
#[command(
    name = "demo-continuous-batching",
    version,
    after_help = "Examples:\n  demo-continuous-batching\n  demo-continuous-batching --kv-mib 3\n  demo-continuous-batching --output-tokens 64 64 --interarrival-steps 0\n"
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
        &[Policy::Static, Policy::Continuous],
    )?;
    let (spec, results) = (&replays.spec, &replays.results);

    let mut table = Table::new(
        "batching-comparison",
        "Static against continuous batching, same workload, same model",
        vec![
            Column::new("policy", "Batching"),
            Column::new("throughput", "Throughput")
                .unit("tokens/s")
                .decimals(1),
            Column::new("utilization", "Batch utilization")
                .unit("%")
                .decimals(0),
            Column::new("p50", "Latency P50").unit("s").decimals(2),
            Column::new("p99", "Latency P99").unit("s").decimals(2),
            Column::new("ttft_p50", "Time to first token P50")
                .unit("s")
                .decimals(2),
            Column::new("steps", "Steps"),
            Column::new("preemptions", "Preemptions"),
        ],
    );
    for r in results {
        table.push(vec![
            json!(r.policy),
            json!(r.tokens_per_s),
            json!(100.0 * r.batch_utilization),
            json!(r.latency_p50_s),
            json!(r.latency_p99_s),
            json!(r.ttft_p50_s),
            json!(r.steps),
            json!(r.preemptions),
        ]);
    }
    let (s, c) = (&results[0], &results[1]);
    table.notes.push(format!(
        "Continuous batching: {:.2}× the throughput of static batching, {}. Workload: {} requests, prompts of {}–{} tokens, {}–{} generated tokens, arrivals {} engine step{} apart on average, batches of {}, seed {}; {} threads.",
        c.tokens_per_s / s.tokens_per_s,
        ratio_phrase(s.latency_p99_s / c.latency_p99_s, "P99 latency"),
        spec.requests,
        spec.prompt_tokens.0,
        spec.prompt_tokens.1,
        spec.output_tokens.0,
        spec.output_tokens.1,
        spec.mean_interarrival_steps,
        if spec.mean_interarrival_steps == 1.0 { "" } else { "s" },
        cli.workload.max_running,
        spec.seed,
        cli.run.threads()
    ));
    let verified = cli.demo.verify.then(|| {
        // Greedy decoding is batch-invariant here, so both policies must give every request
        // the same tokens, and as many as the workload asks for.
        let differing: Vec<usize> = (0..replays.items.len())
            .filter(|&i| s.tokens[i] != c.tokens[i])
            .collect();
        let complete = s.generated_tokens == replays.requested_tokens()
            && c.generated_tokens == replays.requested_tokens();
        if !differing.is_empty() {
            eprintln!(
                "verify: {} of {} requests got other tokens under continuous batching (first: request {})",
                differing.len(),
                replays.items.len(),
                differing[0]
            );
        }
        if !complete {
            eprintln!(
                "verify: {} and {} tokens generated, {} asked for",
                s.generated_tokens,
                c.generated_tokens,
                replays.requested_tokens()
            );
        }
        differing.is_empty() && complete
    });
    let report = Report {
        demo: "continuous-batching".into(),
        provenance: Provenance::current(),
        result: json!({ "workload": spec, "results": results }),
        tables: vec![table],
        verified,
    };
    report.emit(cli.demo.output, |out| {
        writeln!(
            out,
            "{} requests replayed through each policy on {}",
            replays.items.len(),
            cli.run.model_path().display()
        )
    })?;
    if verified == Some(false) {
        std::process::exit(1);
    }
    Ok(())
}

/// "1.56× lower P99 latency" for a ratio (static ÷ continuous) above 1, "1.02× higher P99
/// latency" below it: a ratio under 1 never reads as "lower".
fn ratio_phrase(static_over_continuous: f64, what: &str) -> String {
    if static_over_continuous >= 1.0 {
        format!("{static_over_continuous:.2}× lower {what}")
    } else {
        format!("{:.2}× higher {what}", 1.0 / static_over_continuous)
    }
}
