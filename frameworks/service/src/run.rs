//! The framework's runtime side: what turns apps and deployments into
//! tasks on the cluster. Built so far: [`task`], one instance as a task;
//! [`instances`], every app's instances kept running (attempts, backoff,
//! health, unreachable agents, kills and drains), pure; [`steer`], one
//! step of a deployment carried out on the instances; [`routes`], the
//! router's table from the apps and their instances; [`agents`], the
//! agents' places and addresses; [`readiness`], the framework's own
//! readiness probes; [`record`], an instance slot as stored.

pub mod agents;
pub mod instances;
pub mod readiness;
pub mod record;
pub mod routes;
pub mod steer;
pub mod task;
