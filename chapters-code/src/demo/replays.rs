//! What the batching and KV-cache demos share: load the model named by `--model`, build the
//! seeded workload of [`WorkloadArgs`], and replay it through the scheduler once per policy.

use super::{ModelArgs, WorkloadArgs, progress};
use crate::engine::Policy;
use crate::engine::replay::{
    ReplayResult, WorkloadItem, WorkloadSpec, config_for, replay, workload,
};
use crate::kernels::pool::ThreadPool;
use crate::model::{Llama, LlamaConfig};
use crate::tokenizer::Tokenizer;

/// The workload and one replay of it per policy, in the order asked.
pub struct Replays {
    pub spec: WorkloadSpec,
    pub items: Vec<WorkloadItem>,
    /// The model's shapes (for the KV cost per token).
    pub config: LlamaConfig,
    pub results: Vec<ReplayResult>,
}

impl Replays {
    /// Tokens the workload asks for: every policy must generate exactly these.
    pub fn requested_tokens(&self) -> usize {
        self.items.iter().map(|i| i.max_tokens).sum()
    }
}

/// Replays the workload of `workload` (seeded by `seed`) through each of `policies`, with the
/// model and threads of `run`, under a spinner.
pub fn replay_policies(
    run: &ModelArgs,
    workload_args: &WorkloadArgs,
    seed: u64,
    policies: &[Policy],
) -> anyhow::Result<Replays> {
    let gguf = crate::assets::open_model(&run.model_path())?;
    let model = Llama::load(&gguf)?;
    let tokenizer = Tokenizer::from_gguf(&gguf)?;
    let pool = ThreadPool::new(run.threads());
    let spec = workload_args.spec(seed);
    let items = workload(&spec, &tokenizer);
    let spinner = progress::spinner("replaying the workload");
    let mut results = Vec::new();
    for &policy in policies {
        spinner.set_message(format!("replaying with {policy:?} batching"));
        let config = config_for(
            policy,
            workload_args.max_running as usize,
            (workload_args.kv_mib as usize) << 20,
        );
        results.push(replay(&model, &tokenizer, &pool, config, &items)?);
    }
    spinner.finish_and_clear();
    Ok(Replays {
        spec,
        items,
        config: model.config.clone(),
        results,
    })
}
