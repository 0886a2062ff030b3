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
    let started = Instant::now();
    // All randomness (initial weights, shuffles, dropout masks) comes from the run's own
    // generators, never libtorch's global one, so concurrent trainings cannot disturb it.
    let mut rng = Rng::new(settings.seed);
    let mut dropout_rng = Rng::new(settings.seed ^ 0xd40_9047);
    let spec = &ds.spec;
    let classification = matches!(spec.output, TargetSpec::Classification { .. });
    let encoder = Encoder::new(&spec.inputs, Device::Cpu);
    check_size(ds, settings)?;
    let (x_all, x_train, y_train, x_val, y_val) = tch::no_grad(|| {
        let x = encoder.encode(&ds.raw);
        let tr = Tensor::from_slice(&ds.train);
        let va = Tensor::from_slice(&ds.val);
        (
            x.shallow_clone(),
            x.index_select(0, &tr).to_device(device),
            ds.y.index_select(0, &tr).to_device(device),
            x.index_select(0, &va).to_device(device),
            ds.y.index_select(0, &va).to_device(device),
        )
    });
    drop(x_all);
    let inputs = spec.encoded_width() as i64;
    let outputs = spec.output.outputs();
    let mut vs = nn::VarStore::new(Device::Cpu);
    let mut net = Net::new(&vs.root(), inputs, &settings.hidden, outputs, &mut rng);
    net.activation = settings.activation;
    net.dropout = settings.dropout;
    vs.set_device(device);
    let lr = settings.learning_rate;
    let wd = settings.weight_decay;
    let mut opt = match settings.optimizer {
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
    let loss_of = |out: &Tensor, y: &Tensor| -> Tensor {
        if classification {
            out.cross_entropy_for_logits(y)
        } else {
            out.squeeze_dim(1).mse_loss(y, tch::Reduction::Mean)
        }
    };

    let n_train = ds.train.len();
    let batch = settings.batch_size.max(1) as usize;
    let monitor = settings.monitor().to_string();
    let higher = higher_is_better(&monitor);
    let mut best: Option<(f64, u32, Metrics, Vec<Tensor>)> = None;
    let mut since_best = 0u32;
    let mut stopped_early = None;
    let mut epochs_run = 0;
    let mut order: Vec<i64> = (0..n_train as i64).collect();
    let val_labels: Vec<i64> = if classification {
        Vec::<i64>::try_from(&y_val.to_device(Device::Cpu)).map_err(Error::Torch)?
    } else {
        vec![]
    };
    let val_actual: Vec<f64> = match spec.output {
        TargetSpec::Regression { mean, std } => {
            Vec::<f64>::try_from(&(y_val.to_device(Device::Cpu).to_kind(Kind::Double) * std + mean))
                .map_err(Error::Torch)?
        }
        _ => vec![],
    };
    for epoch in 1..=settings.epochs {
        rng.shuffle(&mut order);
        let mut loss_sum = Tensor::zeros([], (Kind::Float, device));
        for chunk in order.chunks(batch) {
            if cancel.load(Ordering::Relaxed) {
                return Err(Error::Engine(runbase_engine::Error::Canceled(
                    "canceling statement due to user request".into(),
                )));
            }
            let idx = Tensor::from_slice(chunk).to_device(device);
            let xb = x_train.index_select(0, &idx);
            let yb = y_train.index_select(0, &idx);
            let loss = loss_of(&net.forward(&xb, Some(&mut dropout_rng)), &yb);
            opt.backward_step(&loss);
            loss_sum += loss.detach() * chunk.len() as f64;
        }
        let train_loss = loss_sum.double_value(&[]) / n_train as f64;
        let mut m: Metrics = vec![("train_loss".into(), train_loss)];
        tch::no_grad(|| -> Result<()> {
            let out = net.forward(&x_val, None);
            m.push(("val_loss".into(), loss_of(&out, &y_val).double_value(&[])));
            let out = out.to_device(Device::Cpu).to_kind(Kind::Float).contiguous();
            match spec.output {
                TargetSpec::Classification { .. } => {
                    let logits = Vec::<f32>::try_from(&out.view([-1])).map_err(Error::Torch)?;
                    m.extend(metrics::classification(
                        &logits,
                        outputs as usize,
                        &val_labels,
                    ));
                }
                TargetSpec::Regression { mean, std } => {
                    let pred =
                        Vec::<f64>::try_from(&(out.view([-1]).to_kind(Kind::Double) * std + mean))
                            .map_err(Error::Torch)?;
                    m.extend(metrics::regression(&pred, &val_actual));
                }
            }
            Ok(())
        })?;
        epochs_run = epoch;
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
        let min_delta = settings
            .early_stopping
            .as_ref()
            .map_or(0.0, |e| e.min_delta);
        let improved = match &best {
            None => true,
            Some((b, ..)) if higher => value > b + min_delta,
            Some((b, ..)) => value < b - min_delta,
        };
        sink.epoch(epoch, settings.epochs, &m)?;
        if improved {
            let snapshot =
                tch::no_grad(|| vs.trainable_variables().iter().map(Tensor::copy).collect());
            best = Some((value, epoch, m, snapshot));
            since_best = 0;
        } else {
            since_best += 1;
        }
        if let Some(es) = &settings.early_stopping
            && since_best >= es.patience
        {
            stopped_early = Some("early_stopping");
            break;
        }
        if let Some(limit) = settings.max_seconds
            && started.elapsed().as_secs_f64() >= limit
            && epoch < settings.epochs
        {
            stopped_early = Some("max_seconds");
            break;
        }
    }
    let (monitored, best_epoch, metrics, snapshot) =
        best.ok_or_else(|| Error::Engine(runbase_engine::Error::Internal("no epoch ran".into())))?;
    tch::no_grad(|| {
        for (v, s) in vs.trainable_variables().iter().zip(&snapshot) {
            v.shallow_clone().copy_(s);
        }
    });
    vs.set_device(Device::Cpu);
    // Weights go into the trace as constants, which must not require gradients.
    vs.freeze();
    let torchscript = export(&net, spec, &ds.raw)?;
    Ok(Outcome {
        epochs_run,
        best_epoch,
        metrics,
        monitored,
        stopped_early,
        torchscript,
    })
}

/// Most network inputs held in memory at once (rows × encoded width), and most weights.
const MAX_INPUT_VALUES: usize = 1 << 30;
const MAX_WEIGHTS: usize = 100_000_000;

/// Refuses a training that would not fit in memory, before allocating it: a clear error
/// instead of the server being killed for memory.
fn check_size(ds: &Dataset, settings: &Settings) -> Result<()> {
    let width = ds.spec.encoded_width();
    let rows = ds.train.len() + ds.val.len();
    if rows.saturating_mul(width) > MAX_INPUT_VALUES {
        return Err(Error::Engine(runbase_engine::Error::InvalidArgument(
            format!(
                "{rows} rows × {width} network inputs is more than TRAIN holds in memory ({MAX_INPUT_VALUES} values); use fewer rows or fewer (text) columns"
            ),
        )));
    }
    let mut widths = vec![width];
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
