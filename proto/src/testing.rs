//! Test support every crate can reach.
//!
//! - Stand-ins for tests of clients (the SDK's, the agent's): an operator
//!   service that answers only `GetLeader`, as a leader, a follower or a
//!   frozen master would ([`FakeLeader`]). Serve it next to a fake
//!   scheduler or agent API so that clients, which ask who leads before
//!   they connect, find it.
//! - The one builder of the local Docker image the tests run
//!   ([`ensure_test_image`]), used by the agent's containerizer tests and by
//!   `berth-tests`.

use std::sync::{Arc, Mutex, PoisonError};

use tonic::{Request, Response, Status};

use crate::operator_server::{Operator, OperatorServer};

/// How a [`FakeLeader`] answers `GetLeader`.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum LeaderRole {
    /// It leads, in term 1.
    #[default]
    Leads,
    /// It follows, naming this address as the leader (if any).
    Follows(Option<String>),
    /// It never answers, like a SIGSTOPped master.
    Frozen,
}

/// An operator service that answers `GetLeader` as its role says and every
/// other call `UNIMPLEMENTED`. Clones share the role.
#[derive(Debug, Clone, Default)]
pub struct FakeLeader {
    role: Arc<Mutex<LeaderRole>>,
}

impl FakeLeader {
    /// A fake that leads.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Changes how it answers from now on.
    pub fn set(&self, role: LeaderRole) {
        *self.role.lock().unwrap_or_else(PoisonError::into_inner) = role;
    }

    /// How it answers now.
    #[must_use]
    pub fn role(&self) -> LeaderRole {
        self.role
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The tonic service.
    #[must_use]
    pub fn into_server(self) -> OperatorServer<Self> {
        OperatorServer::new(self)
    }
}

#[tonic::async_trait]
impl Operator for FakeLeader {
    async fn get_leader(
        &self,
        _: Request<crate::Empty>,
    ) -> Result<Response<crate::LeaderInfo>, Status> {
        match self.role() {
            LeaderRole::Leads => Ok(Response::new(crate::LeaderInfo {
                master_id: "fake-master".into(),
                address: String::new(),
                raft_id: 1,
                term: 1,
                leading_since: 1.0,
            })),
            LeaderRole::Follows(hint) => Ok(Response::new(crate::LeaderInfo {
                address: hint.unwrap_or_default(),
                term: 1,
                ..Default::default()
            })),
            LeaderRole::Frozen => std::future::pending().await,
        }
    }

    // The rest of the operator API is not part of the fake.
    async fn get_state(
        &self,
        _: Request<crate::Empty>,
    ) -> Result<Response<crate::ClusterState>, Status> {
        Err(Status::unimplemented("get_state"))
    }

    async fn list_agents(
        &self,
        _: Request<crate::Empty>,
    ) -> Result<Response<crate::AgentList>, Status> {
        Err(Status::unimplemented("list_agents"))
    }

    async fn list_frameworks(
        &self,
        _: Request<crate::Empty>,
    ) -> Result<Response<crate::FrameworkList>, Status> {
        Err(Status::unimplemented("list_frameworks"))
    }

    async fn list_tasks(
        &self,
        _: Request<crate::ListTasksRequest>,
    ) -> Result<Response<crate::TaskList>, Status> {
        Err(Status::unimplemented("list_tasks"))
    }

    async fn list_roles(
        &self,
        _: Request<crate::Empty>,
    ) -> Result<Response<crate::RoleList>, Status> {
        Err(Status::unimplemented("list_roles"))
    }

    async fn drain_agent(
        &self,
        _: Request<crate::AgentRef>,
    ) -> Result<Response<crate::Empty>, Status> {
        Err(Status::unimplemented("drain_agent"))
    }

    async fn reactivate_agent(
        &self,
        _: Request<crate::AgentRef>,
    ) -> Result<Response<crate::Empty>, Status> {
        Err(Status::unimplemented("reactivate_agent"))
    }

    async fn set_weight(
        &self,
        _: Request<crate::SetWeightRequest>,
    ) -> Result<Response<crate::Empty>, Status> {
        Err(Status::unimplemented("set_weight"))
    }

    async fn set_quota(
        &self,
        _: Request<crate::SetQuotaRequest>,
    ) -> Result<Response<crate::Empty>, Status> {
        Err(Status::unimplemented("set_quota"))
    }

    async fn remove_quota(
        &self,
        _: Request<crate::RoleRef>,
    ) -> Result<Response<crate::Empty>, Status> {
        Err(Status::unimplemented("remove_quota"))
    }

    async fn list_members(
        &self,
        _: Request<crate::Empty>,
    ) -> Result<Response<crate::MemberList>, Status> {
        Err(Status::unimplemented("list_members"))
    }

    async fn add_member(
        &self,
        _: Request<crate::AddMemberRequest>,
    ) -> Result<Response<crate::AddMemberResponse>, Status> {
        Err(Status::unimplemented("add_member"))
    }

    async fn remove_member(
        &self,
        _: Request<crate::RemoveMemberRequest>,
    ) -> Result<Response<crate::Empty>, Status> {
        Err(Status::unimplemented("remove_member"))
    }

    async fn teardown_framework(
        &self,
        _: Request<crate::FrameworkRef>,
    ) -> Result<Response<crate::Empty>, Status> {
        Err(Status::unimplemented("teardown_framework"))
    }

    async fn list_pending(
        &self,
        _: Request<crate::ListPendingRequest>,
    ) -> Result<Response<crate::PendingList>, Status> {
        Err(Status::unimplemented("list_pending"))
    }
}

/// The local image the Docker tests run: `FROM scratch` plus Debian's
/// static busybox, built by `scripts/build-test-image.sh` (no registry is
/// needed).
pub const TEST_IMAGE: &str = "berth/busybox:latest";

/// Makes sure a Docker daemon answers and [`TEST_IMAGE`] exists, building
/// it with `scripts/build-test-image.sh` when it is missing. The check and
/// build run once per process; later calls return the first answer. Call
/// it from blocking code (it runs the `docker` command).
///
/// # Errors
/// Why the Docker tests cannot run: no daemon answers, or the image is
/// missing and the script failed (with its stderr).
pub fn ensure_test_image() -> Result<(), String> {
    static READY: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    READY
        .get_or_init(|| {
            let ok = |args: &[&str]| {
                std::process::Command::new("docker")
                    .args(args)
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success())
            };
            if !ok(&["version", "--format", "{{.Server.Version}}"]) {
                return Err("no Docker daemon answers `docker version`".into());
            }
            if ok(&["image", "inspect", TEST_IMAGE]) {
                return Ok(());
            }
            let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../scripts/build-test-image.sh");
            let out = std::process::Command::new("bash")
                .arg(&script)
                .output()
                .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
            if out.status.success() {
                Ok(())
            } else {
                Err(format!(
                    "{} failed ({}): {}",
                    script.display(),
                    out.status,
                    String::from_utf8_lossy(&out.stderr)
                ))
            }
        })
        .clone()
}
