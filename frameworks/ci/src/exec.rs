//! Running pipelines: the modules below `exec/` turn plans into tasks on a
//! berth cluster, and keep the pipelines, their logs and their files.
//!
//! `state.rs` is the state machine of one pipeline's jobs (GitLab's statuses
//! and rules: stage order or `needs`, `when`, manual jobs blocking or not,
//! delayed jobs, `allow_failure` with exit codes, automatic `retry` by
//! failure reason, cancel — a canceled job never ends `success` — and retry
//! of a job or of the pipeline's failed jobs), pure and serializable.
//! `Pipeline::retry_job` is GitLab's "retry job": a finished job (failed,
//! canceled or passed; not skipped) gets a new attempt, the jobs downstream
//! of it that were skipped or canceled before they started go back to
//! created, the rest keep their results. Its property test drives random
//! pipelines through random starts, ends, plays, cancels and retries and
//! checks that attempts only grow, a running job is never reset, a job
//! downstream of a success is never skipped, and a refused retry changes
//! nothing.
//!
//! `record.rs` is the leaf the others share: `PipelineRecord` (one pipeline
//! as stored), `Expired`, the task ids of job attempts and
//! `fail_unlaunched`; `task.rs` is the pure job → `TaskInfo` step
//! (`task_for`, `tags_match`): the rendered script, the job's variables as
//! the environment, the image as a Docker container or a process without
//! one; `CommandInfo.uris` for the commit's source archive, the artifacts of
//! the jobs it depends on and its caches; `TaskInfo.outputs` for its
//! artifacts and caches.
//!
//! The framework runs on the SDK's framework runtime
//! (`berth_sdk::runtime`), which owns the subscription, offers, launches,
//! kills, reconciliation and acknowledgements. `schedule.rs` is the CI
//! side, pure: `intent` (the pending jobs' tasks, oldest pipeline first,
//! `tags` as placement constraints, not the jobs waiting for their resource
//! group; the running jobs' tasks to follow; the tasks of canceled and
//! timed-out jobs to stop), `on_update` (a task's update → the job's result
//! through the state machine, with GitLab failure reasons: `FETCH_FAILED` →
//! missing dependency, no exit code → runner system failure, lost,
//! unreachable or unknown to the master → runner system failure, a failed
//! artifact upload → data integrity, killed at `timeout` → execution
//! timeout), `due` (delayed jobs that start, time limits counted from the
//! attempt's recorded start). A restart is not a special path: the intent
//! names the running jobs' tasks as launched before (the runtime asks the
//! master about them first) and the canceled jobs' tasks to stop (their
//! kills are sent again). A job whose task asks for less than
//! `berth_proto::minimums` allows is given up on by the runtime and failed
//! with `scheduler_failure` by `fail_unlaunched`, which the missing-source
//! and expiry checks use too.
//!
//! `runner.rs` holds the handle and the start; `runner/framework.rs`
//! executes: it stores every change in `store.rs` (redb, one JSON record
//! per pipeline, durable on return; the file carries a format version, and
//! a newer one is refused) before the runtime acts on it — a write that
//! fails stops the runner (`RunnerHandle::failure` says why; `berth ci
//! serve` exits non-zero with it) — and follows each job's stdout and
//! stderr from its agent's `ReadLog` into one log file through
//! `berth_proto::mask` (a streaming masker that catches secrets split
//! across chunks; the agent masks the task's output with the same values
//! first, see `logger.rs`, so the log it serves holds none of them), in the
//! order they were written: the rendered script writes
//! `SCRIPT_START_MARKER` to its stderr and then sends its stderr to its
//! stdout (`exec 2>&1`), so the task's `stderr` holds only the agent's
//! lines, fetches above the mark and uploads below it; the log is `stderr`
//! up to the mark (left out), then `stdout`, then the rest of `stderr`,
//! also when the collection starts late or resumes
//! (`Position::script_started`). Logs are stored as
//! `logs/<pipeline>/<job index>-<attempt>.log`: job names (any characters,
//! up to 255 bytes) make no safe, readable, collision-free file names, and
//! every viewer finds a log by the job's name.
//!
//! Slow work stays off the runtime's task: a submission is parsed, planned
//! once and its `git archive` written to a temporary file in
//! `RunnerHandle::submit_linked` (`spawn_blocking`), the framework then
//! only stores the record (ids in the order submissions reach it; a linked
//! repository update in the same transaction), moves the archive into
//! place and publishes it; agents' addresses are looked up by the log
//! collections themselves (`collect.rs`); reads (`get`, `list`, log
//! followers) use the records published on every persist
//! (`Arc<PipelineRecord>` per pipeline, `waiting_for_resource` derived
//! then), never the framework's task, and `list` is a page (`limit`,
//! `before`) of summaries.
//!
//! `collect.rs` makes that resumable: after every write it replaces a
//! `<log>.pos` file with the log's length and, per stream, the raw offset
//! whose masked bytes are in the log (bytes the masker still holds back do
//! not count), so a collection that stops (runner stopped, agent gone) goes
//! on from there with a new masker, after cutting the log back to the
//! recorded length: nothing twice, nothing lost (a new collection stores its
//! position before it creates the log, so a log without one is an older
//! berth's, whole). A collection that fails (agent unreachable, address
//! unknown — `AgentBook` asks the masters and forgets an address that failed
//! — stream broken) is tried again from its position with backoff
//! (`RunnerConfig::log_retry`, `LogRetry`: 10 tries in a row that store
//! nothing, 1 s doubling to a minute; a new update of the task cuts a wait
//! short), then gives up: the log ends with `[berth] the rest of this log
//! could not be collected: <why>` and the position says `gave_up`.
//! `Collecting` (shared with the handle) says which tasks' logs are being
//! collected (retries included): a log viewer calls an attempt finished only
//! when it has ended *and* its log is whole (`RunnerHandle::is_log_whole`:
//! not being collected, and its position done or given up; an attempt never
//! launched has nothing to collect). Each attempt's agent is kept
//! (`PipelineRecord::attempt_agents`, from the offer it was launched into),
//! so an older attempt's log can be collected after a retry. At start,
//! before it takes a request, the runner resumes every log whose position is
//! not done (of ended jobs too), except expired ones.
//!
//! On start the runner re-attaches to the jobs recorded as running: their
//! time limits are re-armed from the attempt's stored start (one that passed
//! while it was down kills the job at once, reason `job_execution_timeout`,
//! the reason stored before the kill), kills of jobs being canceled are sent
//! again, and on every SUBSCRIBED it reconciles their tasks explicitly (with
//! implicit reconciliation for the rest): a RUNNING answer resumes the log,
//! a terminal one (a task that ended meanwhile) resumes the log to its end
//! and ends the job with that result, and LOST (a task the master does not
//! know) fails it as `runner_system_failure`, retried per `retry:`. When the
//! runner stops it stops its log collections at a chunk boundary and waits
//! for them.
//!
//! The whole masked log is stored; `log.rs` is what viewers get of it: the
//! first `max_log_bytes` (4 MiB by default) and one `[berth] log cut at …`
//! line naming the size and where the whole log is (`?full=true`), cut in
//! the stored bytes, after masking, so a cut never shows part of a secret.
//!
//! "The same project" means one thing everywhere: the same
//! `PipelineRecord::project_key`, the repository's path (for a registered
//! URL, its mirror) with the project's subdirectory — not the project's
//! name, which two repositories may share; records stored before
//! `repository` existed fall back to the name. Resource groups, auto-cancel,
//! the artifacts kept as a project's latest and caches all use it.
//!
//! `resource_group.rs` decides, over the pipelines of each project and
//! oldest first, which pending jobs wait for their `resource_group` (a group
//! per project key and name, as GitLab scopes groups per project; held by a
//! job from launch until its task has ended, however it ends); those are not
//! offered to the cluster and show as `waiting_for_resource`.
//!
//! Auto-cancel (on by default, `RunnerConfig::auto_cancel`): a new pipeline
//! for a branch (not a tag, a sha or the default branch) cancels, through
//! the ordinary cancel path, the older unfinished pipelines of the same
//! project and branch whose started jobs are all `interruptible` (jobs not
//! started do not count), recording `auto_canceled_by`; one with a started
//! non-interruptible job finishes.
//!
//! A pipeline is created whole or not at all: `submit` writes the source
//! archive to a temporary file first, then stores the record (with a
//! registered repository's trigger, in the same transaction), then renames
//! the archive into place; an archive that cannot be written stores nothing
//! and returns the error. A pipeline whose archive is missing anyway (the
//! process died between commit and rename) has its pending jobs failed, at
//! start and before every launch, with `missing_dependency_failure`, a
//! message naming the archive, and a log saying so, without launching them.
//!
//! `files.rs` keeps sources, artifacts and caches on disk and serves them to
//! the agents over HTTP (axum), each URL carrying its pipeline's random
//! token; uploads go to a temporary file renamed into place; a project's
//! caches are in a directory named by the SHA-256 of its project key (caches
//! stored under the project's name before are ignored: a miss only costs a
//! rebuild).
//!
//! `source.rs` reads a commit with `git` (sha, ref, changed files, files for
//! `exists` and `key:files`, `git archive`, or the working tree for
//! `--dirty`; a bare repository, such as a registered repository's mirror,
//! too); a subdirectory with its own `.gitlab-ci.yml` is a project of its
//! own.
//!
//! `git.rs` is the one way the CI framework runs git (`source.rs` blocking,
//! the mirrors async): killed with the processes it started at a timeout
//! (`LOCAL_TIMEOUT` for reads, `--git-timeout` for fetches), never
//! prompting, stdout bounded, errors quoting stderr cut short with every
//! URL's credentials hidden (`git/redact.rs`).
//!
//! Task ids are `ci-<pipeline>-<job>-<attempt>`; an update for an older
//! attempt is ignored.
//!
//! `api.rs` is the HTTP/JSON API over a `RunnerHandle` (list, show, trigger
//! a local repository, cancel, retry of the pipeline or of one job, play,
//! logs from an offset, of an attempt), built from public operations
//! (`pipeline`, `trigger_pipeline`, `log_target`, `read_log`, ...) that
//! return views (`PipelineView::of`, the one conversion from the record) or
//! an `ApiError` with an `ErrorKind`; every error is JSON, also for bodies,
//! path and query parameters that do not parse or are too large (bodies are
//! read by `Body`, at most `MAX_BODY_BYTES`, 413, and parsed from bytes;
//! `JsonPath`/`JsonQuery` wrap axum's extractors).
//!
//! `grpc.rs` is the same API over gRPC (`berth.ci.v1.Ci`): it calls those
//! operations and converts views into messages and `ErrorKind`s into codes
//! (NOT_FOUND, INVALID_ARGUMENT, FAILED_PRECONDITION, ...; an expired log,
//! HTTP 410, is NOT_FOUND); its `FollowJobLog` streams one attempt's log in
//! 64 KiB chunks as it grows (polling, and woken by pipeline changes) until
//! the attempt is finished, or ends with UNAVAILABLE when the `shutdown`
//! token given to `grpc::router` is cancelled. `log.rs` reads what is there:
//! a log cut back by a resumed collection gives a short read, and a follower
//! reads again. `grpc::router` gives its axum routes (`/berth.ci.v1.Ci/*`):
//! `berth ci serve` merges the file routes, the HTTP API and the gRPC API on
//! one port (`axum::serve` speaks HTTP/1.1 and HTTP/2), and the `Repos`
//! routes (registered repositories and their webhook).
//!
//! `repos.rs` and `repos/` are the registered repositories (one file per
//! concern: records, validation, registry, mirror, trigger, webhook,
//! poller): records in the state file's `repos` table (path or URL, watched
//! branches, poll interval, the SHA-256 of the webhook secret, last sha seen
//! per branch, the recent triggers with their pipeline or why there is
//! none), validation on add, bare mirrors of remote URLs in
//! `<data_dir>/repos/<id>.git` (`git clone --mirror` / `git fetch`, killed
//! after `--git-timeout`, never prompting), a poller (one background task;
//! each repository polled at its interval, at once after an add and after a
//! restart) and the webhook (token compared by digest in constant time,
//! GitLab's push body accepted, the commit checked to be on the branch).
//! Invariant: a commit runs at most once per branch. The trigger is recorded
//! by `Store::linked(RepoUpdate)` in the very transaction that creates its
//! pipeline (`RunnerHandle::submit_linked`), and per repository a lock makes
//! fetches, triggers and removal take turns (the record is read again under
//! it, so a webhook racing a removal neither fetches nor clones the removed
//! mirror; a poisoned lock map is used as it is, never replaced by fresh
//! locks), so a poll racing a webhook, a repeated webhook or a restart finds
//! it recorded. Credentials in a repository URL never leave it: `redact`
//! shows `user:***@` for a password and `***@` for a token (an http(s) user
//! without a password, or a name that looks like a token), keeps a plain ssh
//! user name (`git@host:path`), and `redact_message` cleans git's error
//! output (every URL in it, and the secrets themselves) before it is
//! returned, stored as a poll error or logged; both live in `git/redact.rs`,
//! and `repos` re-exports them.
//!
//! `expiry.rs` expires artifacts (`expire_in` after the job's latest attempt
//! ended, 30 days by default, `never` kept; the artifacts of the latest
//! successful pipeline of each project key and ref are always kept), logs
//! (`RunnerConfig::log_retention`, 90 days; a log still being collected —
//! `Collecting` — is skipped until a later sweep) and source archives
//! (`RunnerConfig::source_retention`, 7 days after the pipeline finished,
//! once every job of it has finished: a manual job not played, a pending or
//! running one keeps it). Its decisions (`due`, `artifact_sources`,
//! `expired_dependency`, `missing_dependency`) are pure, time an argument;
//! the runner calls `sweep` at start and every `sweep_interval` (and on
//! `RunnerHandle::sweep_expired`), which deletes the files and records them
//! in the pipeline's `Expired` (what the API reports: `artifacts_expired`,
//! `log_expired`, `source_expired`), and, before packing offers,
//! `fail_expired_dependencies`, which fails a pending job that would
//! download expired artifacts, or whose pipeline's source expired (a retry
//! or a play after the sweep), with `missing_dependency_failure` without
//! launching it.

pub mod api;
mod children;
pub mod collect;
pub mod environments;
pub mod expiry;
pub mod files;
pub mod git;
pub mod grpc;
pub mod log;
pub mod record;
/// The masker lives in `berth-proto`: agents mask task output with it too.
pub use berth_proto::mask;
mod reports;
pub mod repos;
pub mod resource_group;
pub mod runner;
mod schedule;
pub mod source;
pub mod state;
pub mod store;
mod stuck;
mod task;
