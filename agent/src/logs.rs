//! The agent's own gRPC service, `Agent.ReadLog`: streams a task's `stdout`
//! or `stderr` file from its sandbox.
//!
//! Tasks the agent still tracks are looked up in the task table; tasks it
//! has forgotten (terminal and acknowledged) are found by their sandbox on
//! disk, which is kept, so logs of finished tasks stay readable.

use std::io::SeekFrom;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use berth_proto as pb;
use berth_scheduler_core::{FrameworkId, TaskId, quoted};
use futures::Stream;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::agent::Agent;
use crate::status_update::TaskKey;

/// Largest chunk of a log sent in one message.
pub const MAX_CHUNK: usize = 64 * 1024;
/// How often a followed log is checked for new data.
const POLL: Duration = Duration::from_millis(100);

/// Implements `berth.v1.Agent`.
#[derive(Debug, Clone)]
pub(crate) struct LogService {
    agent: Arc<Agent>,
}

impl LogService {
    pub(crate) fn new(agent: Arc<Agent>) -> Self {
        LogService { agent }
    }

    /// Finds the task: its key and sandbox. Tracked tasks first, then
    /// sandboxes on disk.
    fn locate(&self, framework_id: &str, task_id: &str) -> Result<(TaskKey, PathBuf), Status> {
        {
            let core = self.agent.lock();
            let mut found = core.tasks.iter().filter(|(k, _)| {
                k.1 == task_id && (framework_id.is_empty() || k.0 == framework_id)
            });
            if let Some((k, e)) = found.next() {
                if found.next().is_some() {
                    return Err(Status::invalid_argument(format!(
                        "task id {} is used by several frameworks on this agent; give framework_id",
                        quoted(task_id)
                    )));
                }
                return Ok((k.clone(), e.sandbox.clone()));
            }
        }
        if !framework_id.is_empty() {
            let sandbox = self.agent.sandbox_path(framework_id, task_id);
            if sandbox.is_dir() {
                return Ok(((framework_id.to_owned(), task_id.to_owned()), sandbox));
            }
        } else {
            let root = self.agent.config.work_dir.join("sandboxes");
            let mut hits = Vec::new();
            if let Ok(dir) = std::fs::read_dir(&root) {
                for fw in dir.flatten() {
                    let sandbox = fw.path().join(task_id);
                    if sandbox.is_dir() {
                        hits.push((fw.file_name().to_string_lossy().into_owned(), sandbox));
                    }
                }
            }
            if hits.len() > 1 {
                return Err(Status::invalid_argument(format!(
                    "task id {} is used by several frameworks on this agent; give framework_id",
                    quoted(task_id)
                )));
            }
            if let Some((fw, sandbox)) = hits.pop() {
                return Ok(((fw, task_id.to_owned()), sandbox));
            }
        }
        Err(Status::not_found(if framework_id.is_empty() {
            format!("task {} is not known to this agent", quoted(task_id))
        } else {
            format!(
                "task {} of framework {} is not known to this agent",
                quoted(task_id),
                quoted(framework_id)
            )
        }))
    }

    /// Whether the task will write no more output: it is terminal or
    /// forgotten.
    fn finished(agent: &Agent, key: &TaskKey) -> bool {
        agent
            .lock()
            .tasks
            .get(key)
            .is_none_or(|e| e.state.is_terminal())
    }
}

type ChunkStream = Pin<Box<dyn Stream<Item = Result<pb::LogChunk, Status>> + Send>>;

#[tonic::async_trait]
impl pb::agent_server::Agent for LogService {
    type ReadLogStream = ChunkStream;

    async fn read_log(
        &self,
        request: Request<pb::ReadLogRequest>,
    ) -> Result<Response<Self::ReadLogStream>, Status> {
        // Every error this service sends is cut as the master's are.
        self.open_log(request.into_inner())
            .map(Response::new)
            .map_err(berth_proto::bounded_status)
    }
}

impl LogService {
    /// Checks a `ReadLog` request and starts streaming the file.
    fn open_log(&self, req: pb::ReadLogRequest) -> Result<ChunkStream, Status> {
        TaskId::new(req.task_id.as_str()).map_err(|e| Status::invalid_argument(e.to_string()))?;
        if !req.framework_id.is_empty() {
            FrameworkId::new(req.framework_id.as_str())
                .map_err(|e| Status::invalid_argument(e.to_string()))?;
        }
        let file_name = match pb::LogFile::try_from(req.file) {
            Ok(pb::LogFile::Stderr) => "stderr",
            Ok(pb::LogFile::Stdout | pb::LogFile::Unspecified) => "stdout",
            Err(_) => {
                return Err(Status::invalid_argument(format!(
                    "unknown log file {}",
                    req.file
                )));
            }
        };
        let (key, sandbox) = self.locate(&req.framework_id, &req.task_id)?;
        let path = sandbox.join(file_name);
        let (tx, rx) = mpsc::channel(4);
        let agent = Arc::clone(&self.agent);
        tokio::spawn(async move {
            if let Err(status) = stream_file(&agent, &key, path, req.offset, req.follow, &tx).await
            {
                let _ = tx.send(Err(berth_proto::bounded_status(status))).await;
            }
        });
        Ok(Box::pin(ReceiverStream::new(rx)))
    }
}

/// Sends the file from `offset`; with `follow`, keeps polling until the task
/// is finished and the file read to its end. Returns early (Ok) when the
/// client goes away.
async fn stream_file(
    agent: &Agent,
    key: &TaskKey,
    path: PathBuf,
    mut offset: u64,
    follow: bool,
    tx: &mpsc::Sender<Result<pb::LogChunk, Status>>,
) -> Result<(), Status> {
    let mut file: Option<tokio::fs::File> = None;
    let mut buf = vec![0u8; MAX_CHUNK];
    loop {
        // Observed before reading, so that once it is true everything the
        // task wrote is read in this pass.
        let done = !follow || LogService::finished(agent, key);
        if file.is_none() {
            match tokio::fs::File::open(&path).await {
                Ok(mut f) => {
                    f.seek(SeekFrom::Start(offset)).await.map_err(|e| {
                        Status::internal(format!("cannot seek {}: {e}", path.display()))
                    })?;
                    file = Some(f);
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && !done => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Err(Status::not_found(format!(
                        "log file {} does not exist",
                        path.display()
                    )));
                }
                Err(e) => {
                    return Err(Status::internal(format!(
                        "cannot open {}: {e}",
                        path.display()
                    )));
                }
            }
        }
        if let Some(f) = file.as_mut() {
            loop {
                let n = f.read(&mut buf).await.map_err(|e| {
                    Status::internal(format!("cannot read {}: {e}", path.display()))
                })?;
                if n == 0 {
                    break;
                }
                let chunk = pb::LogChunk {
                    offset,
                    data: buf[..n].to_vec(),
                };
                offset += n as u64;
                if tx.send(Ok(chunk)).await.is_err() {
                    return Ok(());
                }
            }
        }
        if done {
            return Ok(());
        }
        tokio::select! {
            () = tokio::time::sleep(POLL) => {}
            () = tx.closed() => return Ok(()),
        }
    }
}
