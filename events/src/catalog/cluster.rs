//! Cluster telemetry from the monitor (stream `CLUSTER`, kept 24 hours).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::subject::{Aggregate, Subject};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct NodeSample {
    pub name: String,
    pub cpu_percent: f64,
    pub memory_percent: f64,
    pub disk_percent: f64,
    /// Kubernetes node conditions that are not healthy, e.g. `MemoryPressure`.
    #[serde(default)]
    pub conditions: Vec<String>,
}

/// One sample of every node.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct NodeMetrics {
    pub nodes: Vec<NodeSample>,
}

impl super::Event for NodeMetrics {
    const TYPE: &'static str = "cluster.metrics.v1";
    const STREAM: &'static str = "CLUSTER";
    const SUBJECT_PATTERN: &'static str = "cluster.metrics";
    const SUMMARY: &'static str = "CPU, memory and disk of every node.";
    fn subject(&self) -> Subject {
        Subject::from_parts(&["cluster", "metrics"])
    }
    fn aggregate(&self) -> Option<Aggregate> {
        None
    }
    fn aggregate_id(&self) -> Option<String> {
        None
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PodSample {
    pub name: String,
    pub namespace: String,
    pub phase: String,
    pub restart_count: u32,
    pub oom_killed: bool,
}

/// One sample of every pod.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PodStatus {
    pub pods: Vec<PodSample>,
}

impl super::Event for PodStatus {
    const TYPE: &'static str = "cluster.pods.v1";
    const STREAM: &'static str = "CLUSTER";
    const SUBJECT_PATTERN: &'static str = "cluster.pods";
    const SUMMARY: &'static str = "Phase, restarts and OOM kills of every pod.";
    fn subject(&self) -> Subject {
        Subject::from_parts(&["cluster", "pods"])
    }
    fn aggregate(&self) -> Option<Aggregate> {
        None
    }
    fn aggregate_id(&self) -> Option<String> {
        None
    }
}
