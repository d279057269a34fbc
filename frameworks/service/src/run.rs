//! The framework's runtime side: what turns apps and deployments into
//! tasks on the cluster. Built so far: [`task`], one instance as a task.

pub mod task;
