//! Options of the libtorch functions (`runbase-udfs`): threads, concurrency, the model
//! cache. Each defaults to [`runbase_udfs::UdfsOptions::default`].

use runbase_udfs::UdfsOptions;

/// Options for training and inference.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct UdfsArgs {
    /// libtorch's intra-op threads, shared by every training (default: libtorch's, one
    /// per physical core; 0 also means the default).
    #[arg(long, env = "RUNBASE_TORCH_THREADS")]
    pub torch_threads: Option<usize>,

    /// How many trainings run at once; more wait their turn (`queued` in
    /// `runbase.jobs`). Default: one per four cores (at least one), as libtorch already
    /// spreads one training over every core.
    #[arg(long, env = "RUNBASE_TRAINING_CONCURRENCY")]
    pub training_concurrency: Option<usize>,

    /// How many forward passes (`predict`, `evaluate`) run at once (default: one per
    /// core).
    #[arg(long, env = "RUNBASE_INFERENCE_CONCURRENCY")]
    pub inference_concurrency: Option<usize>,

    /// Bytes of loaded models kept in memory between queries (default: 1 GiB).
    #[arg(long, env = "RUNBASE_MODEL_CACHE_BYTES")]
    pub model_cache_bytes: Option<u64>,
}

impl UdfsArgs {
    /// The options to register the functions with: what was given, else the defaults.
    /// Concurrencies are at least one.
    pub fn options(&self) -> UdfsOptions {
        let defaults = UdfsOptions::default();
        UdfsOptions {
            torch_threads: self.torch_threads.filter(|n| *n > 0),
            training_concurrency: self
                .training_concurrency
                .unwrap_or(defaults.training_concurrency)
                .max(1),
            inference_concurrency: self
                .inference_concurrency
                .unwrap_or(defaults.inference_concurrency)
                .max(1),
            model_cache_bytes: self.model_cache_bytes.unwrap_or(defaults.model_cache_bytes),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unset_options_are_the_defaults_and_concurrency_is_at_least_one() {
        let defaults = UdfsOptions::default();
        let options = UdfsArgs::default().options();
        assert_eq!(options.torch_threads, None);
        assert_eq!(options.training_concurrency, defaults.training_concurrency);
        assert_eq!(
            options.inference_concurrency,
            defaults.inference_concurrency
        );
        assert_eq!(options.model_cache_bytes, 1 << 30);
        let zero = UdfsArgs {
            torch_threads: Some(0),
            training_concurrency: Some(0),
            inference_concurrency: Some(0),
            model_cache_bytes: Some(5),
        }
        .options();
        assert_eq!(zero.torch_threads, None);
        assert_eq!(zero.training_concurrency, 1);
        assert_eq!(zero.inference_concurrency, 1);
        assert_eq!(zero.model_cache_bytes, 5);
    }
}
