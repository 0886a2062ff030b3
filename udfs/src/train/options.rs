//! TRAIN's options: the JSON a user writes, checked strictly, and the settings it resolves to.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{Error, Result};

/// What the model predicts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Task {
    /// One of a fixed set of labels; trained with cross-entropy.
    Classification,
    /// A number; trained with mean squared error on the standardized target.
    Regression,
}

impl Task {
    /// The task's name, as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Task::Classification => "classification",
            Task::Regression => "regression",
        }
    }

    /// Validation metrics logged every epoch (besides `train_loss` and `val_loss`).
    pub fn metrics(self, binary: bool) -> &'static [&'static str] {
        match (self, binary) {
            (Task::Classification, true) => &["accuracy", "f1", "log_loss", "roc_auc"],
            (Task::Classification, false) => &["accuracy", "f1", "log_loss"],
            (Task::Regression, _) => &["rmse", "mae", "r2"],
        }
    }
}

/// Network shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelKind {
    /// No hidden layers: logistic or linear regression.
    Linear,
    /// A multi-layer perceptron with `hidden_layers`.
    Mlp,
}

/// Hidden-layer activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    /// max(0, x)
    Relu,
    /// tanh
    Tanh,
    /// Gaussian error linear unit.
    Gelu,
    /// logistic sigmoid
    Sigmoid,
    /// max(0.01 x, x)
    LeakyRelu,
}

/// Optimizer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OptimizerKind {
    /// Adam (weight decay as L2).
    Adam,
    /// AdamW (decoupled weight decay).
    Adamw,
    /// SGD with momentum 0.9.
    Sgd,
}

/// How the validation rows are chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SplitKind {
    /// A random fraction of the rows.
    Random,
    /// The same fraction of every class (classification only).
    Stratified,
}

/// Stop when the monitored metric has not improved for `patience` epochs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EarlyStopping {
    /// Epochs without improvement before stopping (default 10).
    #[serde(default = "default_patience")]
    pub patience: u32,
    /// Smallest change that counts as an improvement (default 0).
    #[serde(default)]
    pub min_delta: f64,
    /// Metric watched (default `val_loss`).
    #[serde(default = "default_monitor")]
    pub monitor: String,
}

fn default_patience() -> u32 {
    10
}

fn default_monitor() -> String {
    "val_loss".into()
}

/// How a search picks and trains its trials.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SearchMethod {
    /// Every combination of the space (at most `trials`, if given).
    Grid,
    /// `trials` combinations drawn with the run's seed.
    Random,
    /// Successive halving: every candidate trains a few epochs, the best `1/eta` continue for
    /// `eta` times as many, and so on until the survivors train all their epochs.
    Halving,
}

/// A hyper-parameter search: every trial is a child run; the best by the monitored metric
/// is kept.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Search {
    /// `grid` (default) or `random`.
    #[serde(default = "default_method")]
    pub method: SearchMethod,
    /// Option name → list of values to try.
    pub space: serde_json::Map<String, Value>,
    /// Number of trials (random: default 10; grid: a cap; halving: that many combinations
    /// drawn without repetition, default every combination).
    pub trials: Option<u32>,
    /// Halving: one in `eta` trials continues at each rung (default 3).
    pub eta: Option<u32>,
    /// Halving: epochs of the first rung (default: the epochs divided by `eta` once per
    /// halving, at least 1).
    pub min_epochs: Option<u32>,
}

/// One rung of a successive-halving search: every trial still in trains until `epochs`, then
/// the best `keep` go on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rung {
    /// Epochs trained by the end of the rung.
    pub epochs: u32,
    /// Trials that continue after it (1 after the last rung: the winner).
    pub keep: usize,
}

/// The default `eta` of a halving search.
pub const DEFAULT_ETA: u32 = 3;

/// The rungs of a successive-halving search over `trials` candidates that each train at most
/// `max_epochs` epochs: after each rung the best `max(1, n / eta)` continue, and the last rung
/// trains the survivors to `max_epochs`.
pub fn halving_rungs(
    trials: usize,
    max_epochs: u32,
    eta: u32,
    min_epochs: Option<u32>,
) -> Vec<Rung> {
    let eta = eta.max(2);
    let mut halvings = 0u32;
    let mut n = trials.max(1);
    while n > 1 {
        n = (n / eta as usize).max(1);
        halvings += 1;
    }
    let first = min_epochs
        .unwrap_or_else(|| max_epochs / eta.saturating_pow(halvings))
        .clamp(1, max_epochs.max(1));
    let mut rungs = Vec::new();
    let mut alive = trials.max(1);
    let mut budget = first;
    loop {
        if alive <= 1 || budget >= max_epochs {
            rungs.push(Rung {
                epochs: max_epochs,
                keep: 1,
            });
            return rungs;
        }
        let keep = (alive / eta as usize).max(1);
        rungs.push(Rung {
            epochs: budget,
            keep,
        });
        alive = keep;
        budget = budget.saturating_mul(eta);
    }
}

fn default_method() -> SearchMethod {
    SearchMethod::Grid
}

/// Most combinations a halving search enumerates.
const MAX_HALVING_GRID: usize = 100_000;

/// Options that a search may vary.
pub const SEARCHABLE: &[&str] = &[
    "model",
    "hidden_layers",
    "activation",
    "dropout",
    "epochs",
    "batch_size",
    "optimizer",
    "learning_rate",
    "weight_decay",
    "early_stopping",
];

/// TRAIN's options as written; every field is optional and unknown keys are an error.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainOptions {
    /// classification | regression; inferred from the target's type when absent.
    pub task: Option<Task>,
    /// linear | mlp (default mlp).
    pub model: Option<ModelKind>,
    /// Hidden layer widths of an MLP (default `[64]`).
    pub hidden_layers: Option<Vec<i64>>,
    /// Hidden activation (default relu).
    pub activation: Option<Activation>,
    /// Dropout after each hidden layer (default 0).
    pub dropout: Option<f64>,
    /// Epochs (default 100).
    pub epochs: Option<u32>,
    /// Rows per optimizer step (default 32).
    pub batch_size: Option<u32>,
    /// adam | adamw | sgd (default adam).
    pub optimizer: Option<OptimizerKind>,
    /// Learning rate (default 0.001; sgd 0.01).
    pub learning_rate: Option<f64>,
    /// Weight decay (default 0).
    pub weight_decay: Option<f64>,
    /// Fraction of rows held out for validation (default 0.2).
    pub validation_fraction: Option<f64>,
    /// random | stratified (default stratified for classification).
    pub split: Option<SplitKind>,
    /// Early stopping; off when absent.
    pub early_stopping: Option<EarlyStopping>,
    /// Stop after this many seconds of training (the model so far is kept).
    pub max_seconds: Option<f64>,
    /// Seed of initialization, split, shuffling and dropout; drawn and recorded when absent.
    pub seed: Option<u64>,
    /// auto | cpu | cuda | cuda:N (default auto: the first GPU if there is one).
    pub device: Option<String>,
    /// Experiment the run goes to (default: the model name).
    pub experiment: Option<String>,
    /// Hyper-parameter search.
    pub search: Option<Search>,
}

impl TrainOptions {
    /// Parses options JSON; `None` or an empty string means all defaults.
    pub fn parse(json: Option<&str>) -> Result<Self> {
        let Some(json) = json.filter(|j| !j.trim().is_empty()) else {
            return Ok(Self::default());
        };
        let value: Value = serde_json::from_str(json)
            .map_err(|e| invalid_text(format!("TRAIN options are not valid JSON: {e}")))?;
        if !value.is_object() {
            return Err(invalid_text(
                "TRAIN options must be a JSON object, such as '{\"epochs\": 50}'".into(),
            ));
        }
        let options: TrainOptions = serde_json::from_value(value)
            .map_err(|e| invalid_argument(format!("invalid TRAIN options: {e}")))?;
        options.check()?;
        Ok(options)
    }

    /// Checks ranges that serde's types do not.
    pub fn check(&self) -> Result<()> {
        let bad = |m: String| Err(invalid_argument(m));
        if let Some(layers) = &self.hidden_layers
            && let Some(w) = layers.iter().find(|w| !(1..=65_536).contains(*w))
        {
            return bad(format!(
                "hidden_layers: a layer width must be between 1 and 65536, got {w}"
            ));
        }
        if self.hidden_layers.as_ref().is_some_and(|l| l.len() > 64) {
            return bad("hidden_layers: at most 64 layers".into());
        }
        if let Some(d) = self.dropout
            && !(0.0..1.0).contains(&d)
        {
            return bad(format!("dropout must be in [0, 1), got {d}"));
        }
        if self.epochs == Some(0) {
            return bad("epochs must be at least 1".into());
        }
        if self.batch_size == Some(0) {
            return bad("batch_size must be at least 1".into());
        }
        if let Some(lr) = self.learning_rate
            && !(lr > 0.0 && lr.is_finite())
        {
            return bad(format!("learning_rate must be positive, got {lr}"));
        }
        if let Some(wd) = self.weight_decay
            && !(wd >= 0.0 && wd.is_finite())
        {
            return bad(format!("weight_decay must be zero or positive, got {wd}"));
        }
        if let Some(f) = self.validation_fraction
            && !(f > 0.0 && f < 1.0)
        {
            return bad(format!(
                "validation_fraction must be between 0 and 1 (exclusive), got {f}"
            ));
        }
        if let Some(s) = self.max_seconds
            && !(s > 0.0 && s.is_finite())
        {
            return bad(format!("max_seconds must be positive, got {s}"));
        }
        if let Some(d) = &self.device {
            parse_device(d)?;
        }
        if let Some(search) = &self.search {
            if search.space.is_empty() {
                return bad("search.space must name at least one option".into());
            }
            for (k, v) in &search.space {
                if !SEARCHABLE.contains(&k.as_str()) {
                    return bad(format!(
                        "search.space: \"{k}\" cannot be searched; searchable options are {}",
                        SEARCHABLE.join(", ")
                    ));
                }
                match v.as_array() {
                    Some(a) if !a.is_empty() => {}
                    _ => return bad(format!("search.space.{k} must be a non-empty array")),
                }
            }
            if search.trials == Some(0) {
                return bad("search.trials must be at least 1".into());
            }
            let halving = search.method == SearchMethod::Halving;
            if !halving && (search.eta.is_some() || search.min_epochs.is_some()) {
                return bad(
                    "search.eta and search.min_epochs apply to \"method\": \"halving\" only".into(),
                );
            }
            if search.eta.is_some_and(|e| !(2..=100).contains(&e)) {
                return bad("search.eta must be between 2 and 100".into());
            }
            if search.min_epochs == Some(0) {
                return bad("search.min_epochs must be at least 1".into());
            }
            if let (Some(m), Some(e)) = (search.min_epochs, self.epochs.or(Some(100)))
                && halving
                && m > e
            {
                return bad(format!(
                    "search.min_epochs ({m}) is more than the epochs each trial may train ({e})"
                ));
            }
            if halving && search.space.contains_key("epochs") {
                return bad(
                    "a halving search decides how many epochs each trial trains; set \"epochs\" (the most a trial trains) outside search.space".into(),
                );
            }
        }
        if let (Some(Task::Regression), Some(SplitKind::Stratified)) = (self.task, self.split) {
            return bad("a stratified split needs a classification task".into());
        }
        Ok(())
    }

    /// The options of every search trial: these options with one combination of the space
    /// applied, and no search. Each is checked.
    pub fn trials(&self, seed: u64) -> Result<Vec<TrainOptions>> {
        let Some(search) = &self.search else {
            return Ok(vec![]);
        };
        let keys: Vec<&String> = search.space.keys().collect();
        let values: Vec<&Vec<Value>> = search
            .space
            .values()
            .map(|v| v.as_array().expect("checked to be an array"))
            .collect();
        let mut combos: Vec<Vec<usize>> = Vec::new();
        match search.method {
            SearchMethod::Grid | SearchMethod::Halving => {
                let cap = match search.method {
                    SearchMethod::Grid => search.trials.map_or(usize::MAX, |t| t as usize),
                    _ => MAX_HALVING_GRID,
                };
                let mut idx = vec![0usize; keys.len()];
                'outer: while combos.len() < cap {
                    combos.push(idx.clone());
                    for d in (0..idx.len()).rev() {
                        idx[d] += 1;
                        if idx[d] < values[d].len() {
                            continue 'outer;
                        }
                        idx[d] = 0;
                    }
                    break;
                }
            }
            SearchMethod::Random => {
                let mut rng = super::rng::Rng::new(seed ^ 0x005e_ed5e_a7c4);
                for _ in 0..search.trials.unwrap_or(10) {
                    combos.push(values.iter().map(|v| rng.below(v.len())).collect());
                }
            }
        }
        if search.method == SearchMethod::Halving {
            if combos.len() >= MAX_HALVING_GRID {
                return Err(invalid_argument(format!(
                    "search.space has more than {MAX_HALVING_GRID} combinations; a halving search needs fewer"
                )));
            }
            // `trials` of them, drawn without repetition with the seed, in grid order.
            if let Some(t) = search.trials.map(|t| t as usize)
                && t < combos.len()
            {
                let mut rng = super::rng::Rng::new(seed ^ 0x0a1f_1a6e);
                let mut order: Vec<usize> = (0..combos.len()).collect();
                rng.shuffle(&mut order);
                order.truncate(t);
                order.sort_unstable();
                combos = order.into_iter().map(|i| combos[i].clone()).collect();
            }
        }
        let base = serde_json::to_value(TrainOptions {
            search: None,
            ..self.clone()
        })
        .map_err(|e| invalid_argument(e.to_string()))?;
        let Value::Object(base) = base else {
            return Err(invalid_argument("options are not an object".into()));
        };
        combos
            .into_iter()
            .map(|combo| {
                let mut o = base.clone();
                for (d, i) in combo.into_iter().enumerate() {
                    o.insert(keys[d].clone(), values[d][i].clone());
                }
                let trial: TrainOptions = serde_json::from_value(Value::Object(o))
                    .map_err(|e| invalid_argument(format!("invalid search trial: {e}")))?;
                trial.check()?;
                Ok(trial)
            })
            .collect()
    }

    /// The options as recorded (nulls left out).
    pub fn to_json(&self) -> String {
        let mut v = serde_json::to_value(self).unwrap_or(Value::Null);
        if let Value::Object(map) = &mut v {
            map.retain(|_, v| !v.is_null());
        }
        v.to_string()
    }
}

/// Settings after defaults, for one training.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// The task.
    pub task: Task,
    /// Hidden widths (empty for linear).
    pub hidden: Vec<i64>,
    /// Activation.
    pub activation: Activation,
    /// Dropout.
    pub dropout: f64,
    /// Epochs.
    pub epochs: u32,
    /// Batch size.
    pub batch_size: u32,
    /// Optimizer.
    pub optimizer: OptimizerKind,
    /// Learning rate.
    pub learning_rate: f64,
    /// Weight decay.
    pub weight_decay: f64,
    /// Early stopping, if on.
    pub early_stopping: Option<EarlyStopping>,
    /// Time limit.
    pub max_seconds: Option<f64>,
    /// Seed.
    pub seed: u64,
}

impl Settings {
    /// Resolves `options` for `task`, with `seed` drawn by the caller when absent.
    pub fn resolve(options: &TrainOptions, task: Task, seed: u64, binary: bool) -> Result<Self> {
        let model = options.model.unwrap_or(ModelKind::Mlp);
        let hidden = match model {
            ModelKind::Linear => {
                if options
                    .hidden_layers
                    .as_ref()
                    .is_some_and(|h| !h.is_empty())
                {
                    return Err(invalid_argument(
                        "a linear model has no hidden_layers; use \"model\": \"mlp\"".into(),
                    ));
                }
                vec![]
            }
            ModelKind::Mlp => options.hidden_layers.clone().unwrap_or_else(|| vec![64]),
        };
        let optimizer = options.optimizer.unwrap_or(OptimizerKind::Adam);
        let early_stopping = options.early_stopping.clone();
        if let Some(es) = &early_stopping {
            check_monitor(&es.monitor, task, binary)?;
        }
        Ok(Self {
            task,
            hidden,
            activation: options.activation.unwrap_or(Activation::Relu),
            dropout: options.dropout.unwrap_or(0.0),
            epochs: options.epochs.unwrap_or(100),
            batch_size: options.batch_size.unwrap_or(32),
            optimizer,
            learning_rate: options.learning_rate.unwrap_or(match optimizer {
                OptimizerKind::Sgd => 0.01,
                _ => 0.001,
            }),
            weight_decay: options.weight_decay.unwrap_or(0.0),
            early_stopping,
            max_seconds: options.max_seconds,
            seed,
        })
    }

    /// The metric that picks the best epoch (and trial): the early-stopping monitor, else
    /// `val_loss`.
    pub fn monitor(&self) -> &str {
        self.early_stopping
            .as_ref()
            .map_or("val_loss", |e| e.monitor.as_str())
    }
}

/// Whether a larger value of `metric` is better.
pub fn higher_is_better(metric: &str) -> bool {
    matches!(metric, "accuracy" | "f1" | "roc_auc" | "r2")
}

fn check_monitor(monitor: &str, task: Task, binary: bool) -> Result<()> {
    let allowed: Vec<&str> = ["val_loss", "train_loss"]
        .into_iter()
        .chain(task.metrics(binary).iter().copied())
        .collect();
    if allowed.contains(&monitor) {
        Ok(())
    } else {
        Err(invalid_argument(format!(
            "early_stopping.monitor \"{monitor}\" is not a metric of this {} task; choose one of {}",
            task.as_str(),
            allowed.join(", ")
        )))
    }
}

/// A device as the `device` option names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceChoice {
    /// The first GPU if there is one, else the CPU.
    Auto,
    /// The CPU.
    Cpu,
    /// GPU number N.
    Cuda(usize),
}

/// Parses `auto | cpu | cuda | cuda:N`.
pub fn parse_device(s: &str) -> Result<DeviceChoice> {
    match s.trim().to_ascii_lowercase().as_str() {
        "auto" => Ok(DeviceChoice::Auto),
        "cpu" => Ok(DeviceChoice::Cpu),
        "cuda" | "gpu" => Ok(DeviceChoice::Cuda(0)),
        other => other
            .strip_prefix("cuda:")
            .and_then(|n| n.parse().ok())
            .map(DeviceChoice::Cuda)
            .ok_or_else(|| {
                invalid_argument(format!(
                    "device \"{s}\" is not one of auto, cpu, cuda, cuda:N"
                ))
            }),
    }
}

/// Resolves a device choice against what libtorch sees.
pub fn resolve_device(choice: DeviceChoice) -> Result<tch::Device> {
    let count = usize::try_from(tch::Cuda::device_count()).unwrap_or(0);
    match choice {
        DeviceChoice::Cpu => Ok(tch::Device::Cpu),
        DeviceChoice::Auto if count > 0 => Ok(tch::Device::Cuda(0)),
        DeviceChoice::Auto => Ok(tch::Device::Cpu),
        DeviceChoice::Cuda(n) if n < count => Ok(tch::Device::Cuda(n)),
        DeviceChoice::Cuda(n) => Err(invalid_argument(format!(
            "device cuda:{n} is not available: libtorch sees {count} CUDA device(s); see runbase.devices"
        ))),
    }
}

/// The device's name as reported (`cpu`, `cuda:0`).
pub fn device_name(d: tch::Device) -> String {
    match d {
        tch::Device::Cuda(n) => format!("cuda:{n}"),
        _ => "cpu".into(),
    }
}

pub(crate) fn invalid_argument(m: String) -> Error {
    Error::Engine(runbase_engine::Error::InvalidArgument(m))
}

pub(crate) fn invalid_text(m: String) -> Error {
    Error::Engine(runbase_engine::Error::InvalidText(m))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_and_malformed_options_are_errors() {
        let err = TrainOptions::parse(Some(r#"{"epochz": 3}"#)).expect_err("an error");
        assert!(err.to_string().contains("epochz"), "{err}");
        assert!(TrainOptions::parse(Some("{not json")).is_err());
        assert!(TrainOptions::parse(Some("[1]")).is_err());
        assert!(TrainOptions::parse(Some(r#"{"dropout": 1.5}"#)).is_err());
        assert!(TrainOptions::parse(Some(r#"{"optimizer": "rmsprop"}"#)).is_err());
        assert!(TrainOptions::parse(Some(r#"{"device": "tpu"}"#)).is_err());
        assert!(TrainOptions::parse(Some(r#"{"search": {"space": {"seed": [1]}}}"#)).is_err());
        let ok = TrainOptions::parse(Some(
            r#"{"epochs": 5, "hidden_layers": [8, 4], "early_stopping": {"patience": 2}}"#,
        ))
        .expect("ok");
        assert_eq!(ok.epochs, Some(5));
        assert_eq!(ok.early_stopping.expect("ok").monitor, "val_loss");
    }

    #[test]
    fn grid_search_enumerates_every_combination() {
        let o = TrainOptions::parse(Some(
            r#"{"epochs": 3, "search": {"space": {"learning_rate": [0.1, 0.01], "hidden_layers": [[4], [8], [8, 4]]}}}"#,
        ))
        .expect("ok");
        let trials = o.trials(1).expect("ok");
        assert_eq!(trials.len(), 6);
        assert!(
            trials
                .iter()
                .all(|t| t.search.is_none() && t.epochs == Some(3))
        );
        let random = TrainOptions::parse(Some(
            r#"{"search": {"method": "random", "trials": 4, "space": {"dropout": [0.0, 0.1, 0.2]}}}"#,
        ))
        .expect("ok");
        assert_eq!(random.trials(7).expect("ok"), random.trials(7).expect("ok"));
        assert_eq!(random.trials(7).expect("ok").len(), 4);
    }

    #[test]
    fn halving_rungs_keep_one_in_eta_and_end_at_the_full_epochs() {
        let epochs = |rungs: &[Rung]| rungs.iter().map(|r| r.epochs).collect::<Vec<_>>();
        let keeps = |rungs: &[Rung]| rungs.iter().map(|r| r.keep).collect::<Vec<_>>();
        // 9 trials, eta 3: 9 → 3 → 1 at 3, 9 and 27 epochs.
        let r = halving_rungs(9, 27, 3, None);
        assert_eq!(epochs(&r), [3, 9, 27]);
        assert_eq!(keeps(&r), [3, 1, 1]);
        // 8 trials, eta 2, 40 epochs: 8 → 4 → 2 → 1 from 40 / 2^3 = 5 epochs.
        let r = halving_rungs(8, 40, 2, None);
        assert_eq!(epochs(&r), [5, 10, 20, 40]);
        assert_eq!(keeps(&r), [4, 2, 1, 1]);
        // A first rung given: the budget grows until it reaches the epochs.
        let r = halving_rungs(27, 10, 3, Some(2));
        assert_eq!(epochs(&r), [2, 6, 10]);
        assert_eq!(keeps(&r), [9, 3, 1]);
        // Too few epochs to halve: every rung is at least one epoch.
        assert_eq!(epochs(&halving_rungs(81, 5, 3, None)), [1, 3, 5]);
        // One trial trains once, fully.
        assert_eq!(
            halving_rungs(1, 30, 3, None),
            [Rung {
                epochs: 30,
                keep: 1
            }]
        );
        // Full trainings cost at most trials × epochs, halving far less.
        let r = halving_rungs(27, 81, 3, None);
        let mut alive = 27;
        let mut cost = 0;
        let mut done = 0;
        for rung in &r {
            cost += alive * (rung.epochs - done) as usize;
            done = rung.epochs;
            alive = rung.keep;
        }
        assert!(cost * 4 < 27 * 81, "{cost}");
    }

    #[test]
    fn halving_options_are_checked_and_draw_distinct_trials() {
        let space =
            r#""space": {"learning_rate": [0.1, 0.01, 0.001], "hidden_layers": [[4], [8], [16]]}"#;
        let all = TrainOptions::parse(Some(&format!(
            r#"{{"epochs": 9, "search": {{"method": "halving", {space}}}}}"#
        )))
        .expect("ok");
        assert_eq!(all.trials(1).expect("ok").len(), 9);
        let some = TrainOptions::parse(Some(&format!(
            r#"{{"epochs": 9, "search": {{"method": "halving", "trials": 5, "eta": 2, {space}}}}}"#
        )))
        .expect("ok");
        let drawn = some.trials(4).expect("ok");
        assert_eq!(drawn.len(), 5);
        assert_eq!(drawn, some.trials(4).expect("ok"));
        for (i, a) in drawn.iter().enumerate() {
            for b in &drawn[i + 1..] {
                assert_ne!(a, b, "a combination drawn twice");
            }
        }
        for (bad, says) in [
            (
                r#"{"search": {"method": "halving", "space": {"epochs": [5, 10]}}}"#,
                "decides how many epochs",
            ),
            (
                r#"{"search": {"method": "grid", "eta": 3, "space": {"dropout": [0.1]}}}"#,
                "halving\" only",
            ),
            (
                r#"{"search": {"method": "halving", "eta": 1, "space": {"dropout": [0.1]}}}"#,
                "eta must be between 2 and 100",
            ),
            (
                r#"{"epochs": 5, "search": {"method": "halving", "min_epochs": 6, "space": {"dropout": [0.1]}}}"#,
                "more than the epochs",
            ),
            (
                r#"{"search": {"method": "asha", "space": {"dropout": [0.1]}}}"#,
                "unknown variant",
            ),
        ] {
            let err = TrainOptions::parse(Some(bad)).expect_err(bad);
            assert!(err.to_string().contains(says), "{bad}: {err}");
        }
    }
}
