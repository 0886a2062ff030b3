//! The training loop: network, optimizer, epochs, early stopping, and the TorchScript export.
//!
//! Everything here is synchronous and CPU/GPU-bound; callers run it on a blocking thread.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use tch::nn::{self, Module as _, OptimizerConfig};
use tch::{Device, Kind, Tensor};

use super::features::{Dataset, Encoder, ModelSpec, TargetSpec};
use super::metrics::{self, Metrics};
use super::options::{Activation, OptimizerKind, Settings, higher_is_better};
use super::rng::Rng;
use crate::{Error, Result};

/// Receives each epoch's metrics as it ends (to log them, report progress, …). An error
/// stops the training.
pub trait EpochSink {
    /// Epoch `epoch` (from 1) of `epochs` ended with `metrics`.
    fn epoch(&self, epoch: u32, epochs: u32, metrics: &Metrics) -> Result<()>;
}

/// What a finished training produced.
#[derive(Debug)]
pub struct Outcome {
    /// Epochs run.
    pub epochs_run: u32,
    /// The epoch whose weights were kept (best by the monitored metric).
    pub best_epoch: u32,
    /// Metrics of the kept epoch (`train_loss`, `val_loss` and the task's metrics).
    pub metrics: Metrics,
    /// The monitored metric's value at the kept epoch.
    pub monitored: f64,
    /// Why training stopped before `epochs`: `early_stopping` or `max_seconds`.
    pub stopped_early: Option<&'static str>,
    /// The model as a TorchScript module taking raw rows.
    pub torchscript: Vec<u8>,
}

/// A multi-layer perceptron (no hidden layers: a linear model).
#[derive(Debug)]
struct Net {
    layers: Vec<nn::Linear>,
    activation: Activation,
    dropout: f64,
}

impl Net {
    fn new(path: &nn::Path, inputs: i64, hidden: &[i64], outputs: i64, rng: &mut Rng) -> Self {
        let mut widths = vec![inputs];
        widths.extend_from_slice(hidden);
        widths.push(outputs);
        let layers = widths
            .windows(2)
            .enumerate()
            .map(|(i, w)| {
                let layer = nn::linear(path / format!("layer{i}"), w[0], w[1], Default::default());
                // PyTorch's default bounds, drawn from the run's own generator.
                let bound = 1.0 / (w[0] as f64).sqrt();
                let mut draw = |n: i64| -> Tensor {
                    let v: Vec<f32> = (0..n)
                        .map(|_| ((rng.next_f64() * 2.0 - 1.0) * bound) as f32)
                        .collect();
                    Tensor::from_slice(&v)
                };
                tch::no_grad(|| {
                    let mut ws = layer.ws.shallow_clone();
                    ws.copy_(&draw(w[0] * w[1]).view([w[1], w[0]]));
                    if let Some(bs) = &layer.bs {
                        bs.shallow_clone().copy_(&draw(w[1]));
                    }
                });
                layer
            })
            .collect();
        Self {
            layers,
            activation: Activation::Relu,
            dropout: 0.0,
        }
    }

    /// The network's output; with `dropout` (training) the masks are drawn from that
    /// generator, so they depend on the run's seed alone.
    fn forward(&self, x: &Tensor, mut dropout: Option<&mut Rng>) -> Tensor {
        let mut x = x.shallow_clone();
        let last = self.layers.len() - 1;
        for (i, layer) in self.layers.iter().enumerate() {
            x = layer.forward(&x);
            if i < last {
                x = match self.activation {
                    Activation::Relu => x.relu(),
                    Activation::Tanh => x.tanh(),
                    Activation::Gelu => x.gelu("none"),
                    Activation::Sigmoid => x.sigmoid(),
                    Activation::LeakyRelu => x.leaky_relu(),
                };
                if self.dropout > 0.0
                    && let Some(rng) = dropout.as_deref_mut()
                {
                    let keep = 1.0 - self.dropout;
                    let n = x.numel();
                    let mask: Vec<f32> = (0..n)
                        .map(|_| {
                            if rng.next_f64() < keep {
                                (1.0 / keep) as f32
                            } else {
                                0.0
                            }
                        })
                        .collect();
                    let mask = Tensor::from_slice(&mask)
                        .view(x.size().as_slice())
                        .to_device(x.device());
                    x = x.multiply(&mask);
                }
            }
        }
        x
    }
}

/// Trains one model on `ds` with `settings` on `device`.
pub fn train(
    ds: &Dataset,
    settings: &Settings,
    device: Device,
    sink: &dyn EpochSink,
    cancel: &AtomicBool,
) -> Result<Outcome> {
    let data = TrainData::new(ds, device)?;
    let mut training = Training::new(&data, settings)?;
    training.run(settings.epochs, sink, cancel)?;
    training.finish()
}

/// A dataset's tensors on the training device, shared by every trial of a search.
pub struct TrainData<'a> {
    ds: &'a Dataset,
    device: Device,
    x_train: Tensor,
    y_train: Tensor,
    x_val: Tensor,
    y_val: Tensor,
    /// Validation labels (classification).
    val_labels: Vec<i64>,
    /// Validation targets in their own units (regression).
    val_actual: Vec<f64>,
}

impl<'a> TrainData<'a> {
    /// Encodes `ds` and moves its training and validation rows to `device`.
    pub fn new(ds: &'a Dataset, device: Device) -> Result<Self> {
        check_rows(ds)?;
        let encoder = Encoder::new(&ds.spec.inputs, Device::Cpu);
        let (x_train, y_train, x_val, y_val) = tch::no_grad(|| {
            let x = encoder.encode(&ds.raw);
            let tr = Tensor::from_slice(&ds.train);
            let va = Tensor::from_slice(&ds.val);
            (
                x.index_select(0, &tr).to_device(device),
                ds.y.index_select(0, &tr).to_device(device),
                x.index_select(0, &va).to_device(device),
                ds.y.index_select(0, &va).to_device(device),
            )
        });
        let val_labels: Vec<i64> = match ds.spec.output {
            TargetSpec::Classification { .. } => {
                Vec::<i64>::try_from(&y_val.to_device(Device::Cpu)).map_err(Error::Torch)?
            }
            TargetSpec::Regression { .. } => vec![],
        };
        let val_actual: Vec<f64> = match ds.spec.output {
            TargetSpec::Regression { mean, std } => Vec::<f64>::try_from(
                &(y_val.to_device(Device::Cpu).to_kind(Kind::Double) * std + mean),
            )
            .map_err(Error::Torch)?,
            TargetSpec::Classification { .. } => vec![],
        };
        Ok(Self {
            ds,
            device,
            x_train,
            y_train,
            x_val,
            y_val,
            val_labels,
            val_actual,
        })
    }

    fn classification(&self) -> bool {
        matches!(self.ds.spec.output, TargetSpec::Classification { .. })
    }

    fn loss(&self, out: &Tensor, y: &Tensor) -> Tensor {
        if self.classification() {
            out.cross_entropy_for_logits(y)
        } else {
            out.squeeze_dim(1).mse_loss(y, tch::Reduction::Mean)
        }
    }
}

/// The best epoch so far: its monitored value, number, metrics and weights.
type Best = (f64, u32, Metrics, Vec<Tensor>);

/// One model in training. It can be trained a few epochs at a time ([`Training::run`]), so a
/// successive-halving search trains many side by side and continues only the promising ones.
pub struct Training<'a> {
    data: &'a TrainData<'a>,
    settings: Settings,
    vs: nn::VarStore,
    net: Net,
    opt: nn::Optimizer,
    rng: Rng,
    dropout_rng: Rng,
    order: Vec<i64>,
    best: Option<Best>,
    since_best: u32,
    epochs_run: u32,
    stopped_early: Option<&'static str>,
    /// Time spent training this model (what `max_seconds` limits).
    spent: std::time::Duration,
}

impl<'a> Training<'a> {
    /// A freshly initialized network and optimizer for `settings` over `data`.
    pub fn new(data: &'a TrainData<'a>, settings: &Settings) -> Result<Self> {
        check_weights(data.ds, settings)?;
        // All randomness (initial weights, shuffles, dropout masks) comes from the run's own
        // generators, never libtorch's global one, so concurrent trainings cannot disturb it.
        let mut rng = Rng::new(settings.seed);
        let dropout_rng = Rng::new(settings.seed ^ 0xd40_9047);
        let spec = &data.ds.spec;
        let inputs = spec.encoded_width() as i64;
        let outputs = spec.output.outputs();
        let mut vs = nn::VarStore::new(Device::Cpu);
        let mut net = Net::new(&vs.root(), inputs, &settings.hidden, outputs, &mut rng);
        net.activation = settings.activation;
        net.dropout = settings.dropout;
        vs.set_device(data.device);
        let lr = settings.learning_rate;
        let wd = settings.weight_decay;
        let opt = match settings.optimizer {
            OptimizerKind::Adam => nn::Adam {
                wd,
                ..Default::default()
            }
            .build(&vs, lr),
            OptimizerKind::Adamw => nn::AdamW {
                wd,
                ..Default::default()
            }
            .build(&vs, lr),
            OptimizerKind::Sgd => nn::Sgd {
                momentum: 0.9,
                wd,
                ..Default::default()
            }
            .build(&vs, lr),
        }?;
        Ok(Self {
            data,
            settings: settings.clone(),
            vs,
            net,
            opt,
            rng,
            dropout_rng,
            order: (0..data.ds.train.len() as i64).collect(),
            best: None,
            since_best: 0,
            epochs_run: 0,
            stopped_early: None,
            spent: std::time::Duration::ZERO,
        })
    }

    /// Epochs trained so far.
    pub fn epochs_run(&self) -> u32 {
        self.epochs_run
    }

    /// Whether training is over: all its epochs ran, or it stopped early.
    pub fn done(&self) -> bool {
        self.stopped_early.is_some() || self.epochs_run >= self.settings.epochs
    }

    /// Why it stopped before its epochs: `early_stopping` or `max_seconds`.
    pub fn stopped_early(&self) -> Option<&'static str> {
        self.stopped_early
    }

    /// The monitored metric's best value so far (NaN before the first epoch).
    pub fn monitored(&self) -> f64 {
        self.best.as_ref().map_or(f64::NAN, |b| b.0)
    }

    /// The best epoch so far and its metrics.
    pub fn best(&self) -> Option<(u32, &Metrics)> {
        self.best.as_ref().map(|b| (b.1, &b.2))
    }

    /// Trains epochs until `until` have run (at most the settings' epochs), or early stopping
    /// or `max_seconds` ends the training.
    pub fn run(&mut self, until: u32, sink: &dyn EpochSink, cancel: &AtomicBool) -> Result<()> {
        let until = until.min(self.settings.epochs);
        let data = self.data;
        let device = data.device;
        let n_train = data.ds.train.len();
        let batch = self.settings.batch_size.max(1) as usize;
        let monitor = self.settings.monitor().to_string();
        let higher = higher_is_better(&monitor);
        let outputs = data.ds.spec.output.outputs();
        while !self.done() && self.epochs_run < until {
            let started = Instant::now();
            let epoch = self.epochs_run + 1;
            self.rng.shuffle(&mut self.order);
            let mut loss_sum = Tensor::zeros([], (Kind::Float, device));
            for chunk in self.order.chunks(batch) {
                if cancel.load(Ordering::Relaxed) {
                    return Err(Error::Engine(runbase_engine::Error::Canceled(
                        "canceling statement due to user request".into(),
                    )));
                }
                let idx = Tensor::from_slice(chunk).to_device(device);
                let xb = data.x_train.index_select(0, &idx);
                let yb = data.y_train.index_select(0, &idx);
                let loss = data.loss(&self.net.forward(&xb, Some(&mut self.dropout_rng)), &yb);
                self.opt.backward_step(&loss);
                loss_sum += loss.detach() * chunk.len() as f64;
            }
            let train_loss = loss_sum.double_value(&[]) / n_train as f64;
            let mut m: Metrics = vec![("train_loss".into(), train_loss)];
            tch::no_grad(|| -> Result<()> {
                let out = self.net.forward(&data.x_val, None);
                m.push((
                    "val_loss".into(),
                    data.loss(&out, &data.y_val).double_value(&[]),
                ));
                let out = out.to_device(Device::Cpu).to_kind(Kind::Float).contiguous();
                match data.ds.spec.output {
                    TargetSpec::Classification { .. } => {
                        let logits = Vec::<f32>::try_from(&out.view([-1])).map_err(Error::Torch)?;
                        m.extend(metrics::classification(
                            &logits,
                            outputs as usize,
                            &data.val_labels,
                        ));
                    }
                    TargetSpec::Regression { mean, std } => {
                        let pred = Vec::<f64>::try_from(
                            &(out.view([-1]).to_kind(Kind::Double) * std + mean),
                        )
                        .map_err(Error::Torch)?;
                        m.extend(metrics::regression(&pred, &data.val_actual));
                    }
                }
                Ok(())
            })?;
            self.epochs_run = epoch;
            let value = m
                .iter()
                .find(|(k, _)| *k == monitor)
                .map_or(f64::NAN, |(_, v)| *v);
            if !train_loss.is_finite() {
                return Err(Error::Engine(runbase_engine::Error::InvalidArgument(
                    format!(
                        "training diverged at epoch {epoch} (train_loss is {train_loss}); try a smaller learning_rate"
                    ),
                )));
            }
            let min_delta = self
                .settings
                .early_stopping
                .as_ref()
                .map_or(0.0, |e| e.min_delta);
            let improved = match &self.best {
                None => true,
                Some((b, ..)) if higher => value > b + min_delta,
                Some((b, ..)) => value < b - min_delta,
            };
            sink.epoch(epoch, self.settings.epochs, &m)?;
            if improved {
                let snapshot = tch::no_grad(|| {
                    self.vs
                        .trainable_variables()
                        .iter()
                        .map(Tensor::copy)
                        .collect()
                });
                self.best = Some((value, epoch, m, snapshot));
                self.since_best = 0;
            } else {
                self.since_best += 1;
            }
            self.spent += started.elapsed();
            if let Some(es) = &self.settings.early_stopping
                && self.since_best >= es.patience
            {
                self.stopped_early = Some("early_stopping");
            } else if let Some(limit) = self.settings.max_seconds
                && self.spent.as_secs_f64() >= limit
                && epoch < self.settings.epochs
            {
                self.stopped_early = Some("max_seconds");
            }
        }
        Ok(())
    }

    /// Keeps the best epoch's weights and exports the model.
    pub fn finish(mut self) -> Result<Outcome> {
        let (monitored, best_epoch, metrics, snapshot) = self
            .best
            .take()
            .ok_or_else(|| Error::Engine(runbase_engine::Error::Internal("no epoch ran".into())))?;
        tch::no_grad(|| {
            for (v, s) in self.vs.trainable_variables().iter().zip(&snapshot) {
                v.shallow_clone().copy_(s);
            }
        });
        self.vs.set_device(Device::Cpu);
        // Weights go into the trace as constants, which must not require gradients.
        self.vs.freeze();
        let torchscript = export(&self.net, &self.data.ds.spec, &self.data.ds.raw)?;
        Ok(Outcome {
            epochs_run: self.epochs_run,
            best_epoch,
            metrics,
            monitored,
            stopped_early: self.stopped_early,
            torchscript,
        })
    }
}

/// Most network inputs held in memory at once (rows × encoded width), and most weights.
const MAX_INPUT_VALUES: usize = 1 << 30;
const MAX_WEIGHTS: usize = 100_000_000;

/// Refuses a dataset that would not fit in memory, before allocating it: a clear error
/// instead of the server being killed for memory.
fn check_rows(ds: &Dataset) -> Result<()> {
    let width = ds.spec.encoded_width();
    let rows = ds.train.len() + ds.val.len();
    if rows.saturating_mul(width) > MAX_INPUT_VALUES {
        return Err(Error::Engine(runbase_engine::Error::InvalidArgument(
            format!(
                "{rows} rows × {width} network inputs is more than TRAIN holds in memory ({MAX_INPUT_VALUES} values); use fewer rows or fewer (text) columns"
            ),
        )));
    }
    Ok(())
}

/// Refuses a network with more weights than TRAIN allows.
fn check_weights(ds: &Dataset, settings: &Settings) -> Result<()> {
    let mut widths = vec![ds.spec.encoded_width()];
    widths.extend(settings.hidden.iter().map(|w| *w as usize));
    widths.push(ds.spec.output.outputs() as usize);
    let weights: usize = widths
        .windows(2)
        .map(|w| w[0].saturating_mul(w[1]).saturating_add(w[1]))
        .fold(0, usize::saturating_add);
    if weights > MAX_WEIGHTS {
        return Err(Error::Engine(runbase_engine::Error::InvalidArgument(
            format!(
                "the network would have {weights} weights, more than the {MAX_WEIGHTS} TRAIN allows; use smaller hidden_layers"
            ),
        )));
    }
    Ok(())
}

/// Traces preprocessing + network (+ un-standardizing a regression output) into one
/// TorchScript module: raw rows `[n, raw_width]` `float32` in; logits `[n, classes]` or
/// values `[n]` out.
fn export(net: &Net, spec: &ModelSpec, raw: &Tensor) -> Result<Vec<u8>> {
    let encoder = Encoder::new(&spec.inputs, Device::Cpu);
    let output = spec.output.clone();
    let example = raw.narrow(0, 0, raw.size()[0].min(8));
    let mut forward = |inputs: &[Tensor]| -> Vec<Tensor> {
        let out = net.forward(&encoder.encode(&inputs[0]), None);
        vec![match output {
            TargetSpec::Classification { .. } => out,
            TargetSpec::Regression { mean, std } => out.squeeze_dim(1) * std + mean,
        }]
    };
    let module = tch::no_grad(|| {
        tch::CModule::create_by_tracing("RunbaseModel", "forward", &[example], &mut forward)
    })?;
    let file = tempfile::Builder::new()
        .prefix("runbase-model-")
        .suffix(".pt")
        .tempfile()
        .map_err(|e| Error::Engine(runbase_engine::Error::Io(e)))?;
    module.save(file.path())?;
    std::fs::read(file.path()).map_err(|e| Error::Engine(runbase_engine::Error::Io(e)))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{
        Array, BooleanArray, Float64Array, Float64Builder, ListBuilder, RecordBatch, StringArray,
    };
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    use super::*;
    use crate::train::features::{self, DatasetOptions, InputColumn};
    use crate::train::options::{Task, TrainOptions};

    struct Quiet;

    impl EpochSink for Quiet {
        fn epoch(&self, _: u32, _: u32, _: &Metrics) -> Result<()> {
            Ok(())
        }
    }

    /// Rows whose label follows from a number, a category, a flag and a vector, with NULLs.
    fn batch(rows: usize) -> RecordBatch {
        let mut rng = Rng::new(9);
        let (mut x, mut color, mut flag, mut label) = (vec![], vec![], vec![], vec![]);
        let mut vec_col = ListBuilder::new(Float64Builder::new());
        for i in 0..rows {
            let v = rng.next_f64() * 4.0 - 2.0;
            let c = ["red", "green", "blue"][i % 3];
            let f = rng.next_f64() > 0.5;
            let e = [rng.next_f64(), rng.next_f64()];
            let score = v + if c == "red" { 1.5 } else { -0.5 } + if f { 0.5 } else { 0.0 } + e[0];
            x.push((i % 17 != 0).then_some(v));
            color.push((i % 23 != 0).then_some(c));
            flag.push(Some(f));
            vec_col.values().append_slice(&e);
            vec_col.append(true);
            label.push(if score > 0.5 { "yes" } else { "no" });
        }
        let vec_arr = vec_col.finish();
        RecordBatch::try_new(
            Arc::new(Schema::new(vec![
                Field::new("x", DataType::Float64, true),
                Field::new("color", DataType::Utf8, true),
                Field::new("flag", DataType::Boolean, true),
                Field::new("emb", vec_arr.data_type().clone(), true),
                Field::new("label", DataType::Utf8, false),
            ])),
            vec![
                Arc::new(Float64Array::from(x)),
                Arc::new(StringArray::from(color)),
                Arc::new(BooleanArray::from(flag)),
                Arc::new(vec_arr),
                Arc::new(StringArray::from(label)),
            ],
        )
        .expect("batch")
    }

    #[test]
    fn the_exported_module_predicts_what_training_measured() {
        let b = batch(600);
        let ds = features::prepare(
            &b,
            &DatasetOptions {
                target: "label",
                task: None,
                validation_fraction: 0.25,
                split: None,
                seed: 5,
            },
        )
        .expect("prepare");
        assert!(
            matches!(ds.spec.inputs[1], InputColumn::Categorical { ref vocabulary, .. } if vocabulary.len() == 3)
        );
        assert!(
            matches!(ds.spec.inputs[3], InputColumn::Vector { ref mean, .. } if mean.len() == 2)
        );
        assert_eq!(ds.spec.encoded_width(), 1 + 4 + 1 + 2);
        let options =
            TrainOptions::parse(Some(r#"{"epochs": 40, "learning_rate": 0.01}"#)).expect("options");
        let settings =
            Settings::resolve(&options, Task::Classification, 5, true).expect("settings");
        let cancel = AtomicBool::new(false);
        let outcome = train(&ds, &settings, Device::Cpu, &Quiet, &cancel).expect("train");
        let accuracy = outcome
            .metrics
            .iter()
            .find(|(k, _)| k == "accuracy")
            .map(|(_, v)| *v)
            .expect("accuracy");
        assert!(accuracy > 0.85, "{accuracy}");

        // Loaded back, the TorchScript module gives the same held-out accuracy from raw rows.
        let module = tch::CModule::load_data(&mut outcome.torchscript.as_slice()).expect("load");
        let raw = features::raw_rows(&ds.spec.inputs, &b).expect("raw rows");
        let val = Tensor::from_slice(&ds.val);
        let logits = tch::no_grad(|| module.forward_ts(&[raw.index_select(0, &val)])).expect("fwd");
        let predicted = logits.argmax(1, false);
        let labels = ds.y.index_select(0, &val);
        let exported = predicted
            .eq_tensor(&labels)
            .to_kind(Kind::Double)
            .mean(Kind::Double)
            .double_value(&[]);
        assert!(
            (exported - accuracy).abs() < 1e-9,
            "{exported} vs {accuracy}"
        );

        // An unseen category and missing values still score.
        let unseen = RecordBatch::try_new(
            b.schema(),
            vec![
                Arc::new(Float64Array::from(vec![None::<f64>])),
                Arc::new(StringArray::from(vec![Some("purple")])),
                Arc::new(BooleanArray::from(vec![None::<bool>])),
                Arc::new({
                    let mut l = ListBuilder::new(Float64Builder::new());
                    l.append(false);
                    l.finish()
                }),
                Arc::new(StringArray::from(vec!["no"])),
            ],
        )
        .expect("unseen");
        let raw = features::raw_rows(&ds.spec.inputs, &unseen).expect("raw");
        let out = tch::no_grad(|| module.forward_ts(&[raw])).expect("fwd");
        assert_eq!(out.size(), [1, 2]);
        assert!(out.isfinite().all().int64_value(&[]) == 1);
    }

    fn train_with_dropout(seed: u64) -> Metrics {
        let ds = features::prepare(
            &batch(300),
            &DatasetOptions {
                target: "label",
                task: None,
                validation_fraction: 0.2,
                split: None,
                seed,
            },
        )
        .expect("prepare");
        let options = TrainOptions::parse(Some(
            r#"{"epochs": 5, "hidden_layers": [32, 16], "dropout": 0.3}"#,
        ))
        .expect("options");
        let settings =
            Settings::resolve(&options, Task::Classification, seed, true).expect("settings");
        let cancel = AtomicBool::new(false);
        train(&ds, &settings, Device::Cpu, &Quiet, &cancel)
            .expect("train")
            .metrics
    }

    #[test]
    fn dropout_training_is_reproducible_even_alongside_another_training() {
        let alone = train_with_dropout(4);
        let (together, other) = std::thread::scope(|s| {
            let a = s.spawn(|| train_with_dropout(4));
            let b = s.spawn(|| train_with_dropout(5));
            (a.join().expect("join"), b.join().expect("join"))
        });
        assert_eq!(alone, together);
        assert_ne!(alone, other);
    }

    #[test]
    fn training_stops_when_cancelled() {
        let b = batch(200);
        let ds = features::prepare(
            &b,
            &DatasetOptions {
                target: "label",
                task: None,
                validation_fraction: 0.2,
                split: None,
                seed: 1,
            },
        )
        .expect("prepare");
        let settings = Settings::resolve(&TrainOptions::default(), Task::Classification, 1, true)
            .expect("settings");
        let cancel = AtomicBool::new(true);
        let err = train(&ds, &settings, Device::Cpu, &Quiet, &cancel).expect_err("cancelled");
        assert!(matches!(
            err,
            Error::Engine(runbase_engine::Error::Canceled(_))
        ));
    }
}
