//! The framework's runtime side: what turns apps and deployments into
//! tasks on the cluster. Built so far: [`task`], one instance as a task;
//! [`instances`], every app's instances kept running (attempts, backoff,
//! health, unreachable agents, kills and drains), pure.

pub mod instances;
pub mod task;
