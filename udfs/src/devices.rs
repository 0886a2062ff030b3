//! `runbase.devices(device, kind, name, total_memory_bytes)`.
//!
//! The CPU is always listed; CUDA devices are those libtorch reports
//! (`tch::Cuda::device_count`). libtorch does not expose device names or memory sizes, so
//! those come from the operating system: `/proc` for the CPU and `nvidia-smi` for GPUs,
//! and are NULL where neither can tell.

use std::process::Command;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{Int64Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use runbase_engine::SystemTable;

/// One row of `runbase.devices`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceInfo {
    /// The device as TRAIN accepts it: `cpu`, `cuda:0`, …
    pub device: String,
    /// `cpu` or `cuda`.
    pub kind: &'static str,
    /// Human-readable model name, if known.
    pub name: Option<String>,
    /// Total memory in bytes, if known.
    pub total_memory_bytes: Option<i64>,
}

/// Lists the devices libtorch can use, CPU first.
pub fn list_devices() -> Vec<DeviceInfo> {
    let mut out = vec![DeviceInfo {
        device: "cpu".into(),
        kind: "cpu",
        name: cpu_name(),
        total_memory_bytes: host_memory_bytes(),
    }];
    let count = tch::Cuda::device_count();
    let smi = if count > 0 { nvidia_smi() } else { vec![] };
    for i in 0..count {
        let (name, mem) = usize::try_from(i)
            .ok()
            .and_then(|i| smi.get(i).cloned())
            .map_or((None, None), |(n, m)| (Some(n), m));
        out.push(DeviceInfo {
            device: format!("cuda:{i}"),
            kind: "cuda",
            name,
            total_memory_bytes: mem,
        });
    }
    out
}

fn cpu_name() -> Option<String> {
    let info = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    info.lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
}

fn host_memory_bytes() -> Option<i64> {
    meminfo_bytes(&std::fs::read_to_string("/proc/meminfo").ok()?, "MemTotal:")
}

/// A `Field:   123 kB` line of `/proc/meminfo`, in bytes.
fn meminfo_bytes(meminfo: &str, field: &str) -> Option<i64> {
    meminfo
        .lines()
        .find(|l| l.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse::<i64>()
        .ok()?
        .checked_mul(1024)
}

/// `(name, total bytes)` per GPU index, from `nvidia-smi`; empty if it is not installed.
/// One device's memory, for the metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceMemory {
    /// `cpu`, `cuda:0`, …
    pub device: String,
    /// Total bytes.
    pub total: Option<i64>,
    /// Bytes in use (the host's: total less available; a GPU's: as the driver reports).
    pub used: Option<i64>,
}

/// The memory of the host and of each CUDA device libtorch sees (`nvidia-smi`, asked
/// only when there is a device).
pub fn memory() -> Vec<DeviceMemory> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let total = meminfo_bytes(&meminfo, "MemTotal:");
    let used = total
        .zip(meminfo_bytes(&meminfo, "MemAvailable:"))
        .map(|(t, a)| t - a);
    let mut out = vec![DeviceMemory {
        device: "cpu".into(),
        total,
        used,
    }];
    if tch::Cuda::device_count() > 0 {
        let Ok(smi) = Command::new("nvidia-smi")
            .args([
                "--query-gpu=memory.total,memory.used",
                "--format=csv,noheader,nounits",
            ])
            .output()
        else {
            return out;
        };
        let mib = |v: &str| {
            v.trim()
                .parse::<i64>()
                .ok()
                .and_then(|m| m.checked_mul(1024 * 1024))
        };
        for (i, line) in String::from_utf8_lossy(&smi.stdout)
            .lines()
            .filter(|l| !l.trim().is_empty())
            .enumerate()
        {
            let (total, used) = line.split_once(',').unwrap_or((line, ""));
            out.push(DeviceMemory {
                device: format!("cuda:{i}"),
                total: mib(total),
                used: mib(used),
            });
        }
    }
    out
}

fn nvidia_smi() -> Vec<(String, Option<i64>)> {
    let Ok(out) = Command::new("nvidia-smi")
        .args([
            "--query-gpu=name,memory.total",
            "--format=csv,noheader,nounits",
        ])
        .output()
    else {
        return vec![];
    };
    if !out.status.success() {
        return vec![];
    }
    parse_nvidia_smi(&String::from_utf8_lossy(&out.stdout))
}

fn parse_nvidia_smi(text: &str) -> Vec<(String, Option<i64>)> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let (name, mib) = line.rsplit_once(',').unwrap_or((line, ""));
            let bytes = mib
                .trim()
                .parse::<i64>()
                .ok()
                .and_then(|m| m.checked_mul(1024 * 1024));
            (name.trim().to_string(), bytes)
        })
        .collect()
}

/// The `runbase.devices` system table.
#[derive(Debug)]
pub struct Devices {
    schema: SchemaRef,
}

impl Devices {
    /// The table.
    pub fn new() -> Self {
        Self {
            schema: Arc::new(Schema::new(vec![
                Field::new("device", DataType::Utf8, false),
                Field::new("kind", DataType::Utf8, false),
                Field::new("name", DataType::Utf8, true),
                Field::new("total_memory_bytes", DataType::Int64, true),
            ])),
        }
    }
}

impl Default for Devices {
    fn default() -> Self {
        Self::new()
    }
}

#[async_trait]
impl SystemTable for Devices {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    async fn rows(&self) -> runbase_engine::Result<RecordBatch> {
        // Probing CUDA and running nvidia-smi block; keep them off the async workers.
        let devices = tokio::task::spawn_blocking(list_devices)
            .await
            .map_err(|e| {
                runbase_engine::Error::InvalidArgument(format!("device probe failed: {e}"))
            })?;
        RecordBatch::try_new(
            self.schema.clone(),
            vec![
                Arc::new(StringArray::from_iter_values(
                    devices.iter().map(|d| d.device.as_str()),
                )),
                Arc::new(StringArray::from_iter_values(
                    devices.iter().map(|d| d.kind),
                )),
                Arc::new(StringArray::from(
                    devices.iter().map(|d| d.name.clone()).collect::<Vec<_>>(),
                )),
                Arc::new(Int64Array::from(
                    devices
                        .iter()
                        .map(|d| d.total_memory_bytes)
                        .collect::<Vec<_>>(),
                )),
            ],
        )
        .map_err(|e| runbase_engine::Error::DataFusion(e.into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_is_always_listed_first() {
        let devices = list_devices();
        assert_eq!(devices[0].device, "cpu");
        assert_eq!(devices[0].kind, "cpu");
        let cuda = devices.iter().filter(|d| d.kind == "cuda").count();
        assert_eq!(cuda as i64, tch::Cuda::device_count());
    }

    #[test]
    fn nvidia_smi_output_is_parsed() {
        let rows = parse_nvidia_smi("NVIDIA H200, 143771\nTesla T4, [N/A]\n\n");
        assert_eq!(
            rows[0],
            ("NVIDIA H200".to_string(), Some(143_771 * 1024 * 1024))
        );
        assert_eq!(rows[1], ("Tesla T4".to_string(), None));
    }

    /// On a machine with a GPU, `RUNBASE_EXPECT_CUDA=1` turns this into a real check:
    /// libtorch sees the GPU, the table lists it with a name and memory, and a tensor
    /// operation runs on it.
    #[test]
    fn cuda_devices_are_listed_when_present() {
        if std::env::var("RUNBASE_EXPECT_CUDA").as_deref() != Ok("1") {
            return;
        }
        assert!(tch::Cuda::is_available(), "libtorch sees no CUDA device");
        let devices = list_devices();
        let gpu = devices
            .iter()
            .find(|d| d.device == "cuda:0")
            .expect("cuda:0 is listed");
        assert_eq!(gpu.kind, "cuda");
        assert!(
            gpu.name.as_deref().is_some_and(|n| !n.is_empty()),
            "{gpu:?}"
        );
        assert!(gpu.total_memory_bytes.is_some_and(|m| m > 0), "{gpu:?}");
        let t = tch::Tensor::from_slice(&[1.0f32, 2.0, 3.0]).to_device(tch::Device::Cuda(0));
        assert_eq!(t.device(), tch::Device::Cuda(0));
        let sum = t.sum(tch::Kind::Float).double_value(&[]);
        assert!((sum - 6.0).abs() < 1e-9);
        println!("{devices:#?}");
    }

    #[test]
    fn libtorch_runs() {
        let t = tch::Tensor::from_slice(&[1.0f32, 2.0, 3.0]);
        let sum = t.sum(tch::Kind::Float).double_value(&[]);
        assert!((sum - 6.0).abs() < 1e-9);
    }
}
