//! The cluster store: what several `wasmagent serve` processes share through one Redis so that they behave as one
//! service.
//!
//! It owns the Redis side of that: the async-run queue (a Stream read by one consumer group, one consumer per
//! node), each run's record (owner, status, report or error, which attempt holds it, whether it may act on the
//! world) with the operator's TTL once finished, reclaiming the runs of a node that went silent (`XAUTOCLAIM`),
//! webhook deliveries waiting to be attempted (a sorted set by due time, leased to the node attempting them) and
//! the dead letters, and the session directory (which node holds each session). Every update that touches more than one key is one Lua script, so Redis applies it atomically;
//! every time is Redis's own (`TIME`), never a node's clock. Connections come from a bounded pool (deadpool-redis),
//! and every call ends within the configured timeout as [`ClusterError::Unavailable`].
//!
//! It must not know what a run or a report is: requests, reports and dead letters are opaque strings the server
//! writes and reads. It runs nothing and sends nothing. It needs one Redis (a primary, with replicas if wanted);
//! Redis Cluster is not supported (the scripts name keys they compute).
//!
//! Next: `wasmagent-server`'s `cluster` module drives this store (workers, webhooks, routes).

mod scripts;

use redis::Value;
use serde::Deserialize;
use std::future::Future;
use std::time::Duration;

/// `[cluster]` in `server.toml`. Without `redis_url` a server works alone, in memory.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// The Redis every node of the service shares (`redis://[:password@]host:port/db`); unset: no cluster.
    pub redis_url: Option<String>,
    /// Key prefix in Redis (default `wasmagent`); nodes of one service use the same.
    pub prefix: String,
    /// This node's name in the consumer group (default: `node-<pid>-<random>`). Two live nodes must never share one.
    pub node_id: Option<String>,
    /// Where clients reach this node (e.g. `http://10.0.0.7:8080`), recorded in the session directory so that
    /// another node can name it when it refuses a call to a session held here (default: the node id only).
    pub advertise_url: Option<String>,
    /// Longest one Redis call may take, in milliseconds (default 500); past it the call fails as unavailable.
    pub timeout_ms: u64,
    /// Connections in this node's pool (default 16).
    pub pool_size: usize,
    /// A run held by a node that has not renewed its claim for this long is reclaimed by another node, in
    /// milliseconds (default 30 000). Live nodes renew every third of it.
    pub reclaim_after_ms: u64,
    /// How long a finished run's status and report stay readable, in seconds (default 86 400).
    pub result_ttl_secs: u64,
    /// Async runs queued or running in the whole cluster at most (default 10 000); past it submissions get 503.
    pub max_pending_runs: u64,
    /// Dead letters kept (default 1 000; the oldest are dropped first).
    pub max_dead_letters: u64,
    /// Longest a node waits on the queue in one call when it has a free slot, in milliseconds (default 1 000).
    pub poll_ms: u64,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            redis_url: None,
            prefix: "wasmagent".into(),
            node_id: None,
            advertise_url: None,
            timeout_ms: 500,
            pool_size: 16,
            reclaim_after_ms: 30_000,
            result_ttl_secs: 86_400,
            max_pending_runs: 10_000,
            max_dead_letters: 1_000,
            poll_ms: 1_000,
        }
    }
}

impl ClusterConfig {
    /// Checks what the types cannot.
    pub fn validate(&self) -> Result<(), String> {
        let zero = [
            ("timeout_ms", self.timeout_ms),
            ("pool_size", self.pool_size as u64),
            ("reclaim_after_ms", self.reclaim_after_ms),
            ("result_ttl_secs", self.result_ttl_secs),
            ("max_pending_runs", self.max_pending_runs),
            ("max_dead_letters", self.max_dead_letters),
            ("poll_ms", self.poll_ms),
        ];
        if let Some((name, _)) = zero.iter().find(|(_, value)| *value == 0) {
            return Err(format!("cluster.{name} must be at least 1"));
        }
        if self.reclaim_after_ms < 3 * self.timeout_ms {
            return Err("cluster.reclaim_after_ms must be at least three times cluster.timeout_ms, or live nodes \
                        could lose their runs to a slow renewal"
                .into());
        }
        if self.prefix.is_empty() || self.prefix.contains(char::is_whitespace) {
            return Err("cluster.prefix must be non-empty, without spaces".into());
        }
        if let Some(node) = &self.node_id
            && (node.is_empty() || node.len() > 128 || !node.bytes().all(|b| b.is_ascii_graphic()))
        {
            return Err("cluster.node_id must be 1 to 128 printable ASCII characters".into());
        }
        Ok(())
    }
}

/// Why the cluster store could not do what was asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClusterError {
    /// Redis could not be reached, did not answer in time, or refused the call.
    #[error("the cluster store (Redis) is unavailable: {0}")]
    Unavailable(String),
    /// The cluster already holds `max_pending_runs` async runs.
    #[error("the cluster already holds {0} queued or running async runs (cluster.max_pending_runs)")]
    Full(u64),
    /// Redis answered something this crate never writes.
    #[error("the cluster store holds malformed data: {0}")]
    Malformed(String),
    /// The configuration cannot be used.
    #[error("cluster configuration: {0}")]
    Config(String),
}

/// What a run's record says: `queued`, `running`, `done` or `failed`, with the report or the error once finished.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunRecord {
    /// `queued`, `running`, `done` or `failed`.
    pub status: String,
    /// The report as the server wrote it, once `done`.
    pub report: Option<String>,
    /// Why the run failed, or why a `done` run's report was not kept.
    pub error: Option<String>,
}

/// A run this node took from the queue: it runs it, then calls [`ClusterStore::finish`] with `attempt`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimedRun {
    /// The run id.
    pub id: String,
    /// The queue entry this node holds until the run finishes or is handed back.
    pub entry: String,
    /// Which attempt this is (1 for the first): a finish naming an older attempt is refused.
    pub attempt: u64,
    /// The subject that submitted it.
    pub owner: String,
    /// The request as submitted.
    pub request: String,
}

/// A reclaimed run that had started on a node that went silent and may have acted: the caller records it as
/// failed with [`ClusterStore::finish`] (`attempt` is the reclaim's), never runs it again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AbandonedRun {
    /// The run id.
    pub id: String,
    /// The queue entry, now held by this node.
    pub entry: String,
    /// The attempt the failure is recorded under.
    pub attempt: u64,
    /// The node that was running it.
    pub node: String,
}

/// What [`ClusterStore::reclaim`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reclaimed {
    /// A run that never started, or could not have acted: this node runs it (again).
    Run(ClaimedRun),
    /// A run that started and may have acted.
    Abandoned(AbandonedRun),
}

/// How a run ended, as [`ClusterStore::finish`] records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finished {
    /// `done` or `failed`.
    pub status: &'static str,
    /// The report, for `done` (absent when it was too large to keep).
    pub report: Option<String>,
    /// The error, for `failed`, or why a `done` run's report was not kept.
    pub error: Option<String>,
}

/// A webhook delivery to record with a run's end, or one leased for an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The `Wasmagent-Delivery` id, the same on every attempt from any node.
    pub id: String,
    /// The run it is about.
    pub run_id: String,
    /// The receiver.
    pub url: String,
    /// The signed body.
    pub body: String,
    /// Attempts already made.
    pub attempts: u32,
    /// Why the last attempt failed, if one did.
    pub last_error: String,
}

/// Where a session lives, from the session directory.
///
/// The model: a session's instance is memory in one process, so the session lives on the node that opened it. That
/// node registers it here (and again on each call, which renews its TTL); any other node asked about it answers its
/// status from `info` and refuses a call with a clear error naming `url` (e.g. 421 Misdirected Request), rather than
/// a 404, so a client or a sticky load balancer can send the call where the session is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionEntry {
    /// The node holding the session's instance.
    pub node: String,
    /// Where that node is reached, as it registered it.
    pub url: String,
    /// What the session's status answers, as that node wrote it.
    pub info: String,
}

/// The shared store of one service. Cheap to clone (the pool is shared).
#[derive(Clone)]
pub struct ClusterStore {
    pool: deadpool_redis::Pool,
    keys: Keys,
    node: String,
    timeout: Duration,
    reclaim_after: Duration,
    result_ttl_secs: u64,
    max_pending_runs: u64,
    max_dead_letters: u64,
    poll: Duration,
}

impl std::fmt::Debug for ClusterStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may carry a password: it is never printed.
        f.debug_struct("ClusterStore").field("prefix", &self.keys.prefix).field("node", &self.node).finish()
    }
}

#[derive(Clone)]
struct Keys {
    prefix: String,
    stream: String,
    group: String,
    due: String,
    dead: String,
}

impl Keys {
    fn new(prefix: &str) -> Self {
        Keys {
            prefix: prefix.to_owned(),
            stream: format!("{prefix}:runs"),
            group: "runners".into(),
            due: format!("{prefix}:wh:due"),
            dead: format!("{prefix}:wh:dead"),
        }
    }

    fn run(&self, id: &str) -> String {
        format!("{}:run:{id}", self.prefix)
    }

    fn session(&self, id: &str) -> String {
        format!("{}:session:{id}", self.prefix)
    }

    fn delivery_prefix(&self) -> String {
        format!("{}:wh:d:", self.prefix)
    }

    fn delivery(&self, id: &str) -> String {
        format!("{}{id}", self.delivery_prefix())
    }
}

impl ClusterStore {
    /// A store for `config` (which must have a `redis_url`). Connections are opened when first needed, so a node
    /// starts while Redis is down and reports itself not ready until it answers.
    pub fn new(config: &ClusterConfig) -> Result<Self, ClusterError> {
        config.validate().map_err(ClusterError::Config)?;
        let url = config.redis_url.as_deref().ok_or_else(|| ClusterError::Config("no redis_url".into()))?;
        // Parsed here so that a bad URL is refused at start-up; errors never repeat it (it may carry a password).
        redis::Client::open(url).map_err(|e| {
            ClusterError::Config(format!("invalid redis_url ({:?}): {}", e.kind(), e.detail().unwrap_or("")))
        })?;
        let mut pool_config = deadpool_redis::Config::from_url(url);
        pool_config.pool = Some(deadpool_redis::PoolConfig::new(config.pool_size));
        let pool = pool_config
            .create_pool(Some(deadpool_redis::Runtime::Tokio1))
            .map_err(|e| ClusterError::Config(format!("cannot build the connection pool: {e}")))?;
        let node = match &config.node_id {
            Some(node) => node.clone(),
            None => format!("node-{}-{}", std::process::id(), random_hex(4)?),
        };
        Ok(ClusterStore {
            pool,
            keys: Keys::new(&config.prefix),
            node,
            timeout: Duration::from_millis(config.timeout_ms),
            reclaim_after: Duration::from_millis(config.reclaim_after_ms),
            result_ttl_secs: config.result_ttl_secs,
            max_pending_runs: config.max_pending_runs,
            max_dead_letters: config.max_dead_letters,
            poll: Duration::from_millis(config.poll_ms),
        })
    }

    /// This node's name in the consumer group.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// How long a silent node's runs stay claimed before another node reclaims them.
    pub fn reclaim_after(&self) -> Duration {
        self.reclaim_after
    }

    /// `Ok` when Redis answers within the timeout.
    pub async fn ping(&self) -> Result<(), ClusterError> {
        self.call("PING", self.timeout, |mut c| async move { redis::cmd("PING").query_async::<()>(&mut c).await }).await
    }

    /// Creates the queue and its consumer group if they do not exist yet.
    pub async fn ensure_group(&self) -> Result<(), ClusterError> {
        let mut create = redis::cmd("XGROUP");
        create.arg("CREATE").arg(&self.keys.stream).arg(&self.keys.group).arg("0").arg("MKSTREAM");
        let create = &create;
        self.call("creating the run queue", self.timeout, |mut c| async move {
            match create.query_async::<()>(&mut c).await {
                Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
                other => other,
            }
        })
        .await
    }

    /// Queues a run of `owner` (`may_act`: its manifest lets it act on the world, so it is never run twice) and
    /// returns its new id; [`ClusterError::Full`] past `max_pending_runs`.
    pub async fn submit(&self, owner: &str, request: &str, may_act: bool) -> Result<String, ClusterError> {
        let id = random_hex(16)?;
        let script = redis::Script::new(scripts::SUBMIT);
        let mut invocation = script.key(&self.keys.stream);
        invocation.key(self.keys.run(&id)).arg(self.max_pending_runs).arg(owner).arg(request).arg(u8::from(may_act));
        invocation.arg(&id);
        let invocation = &invocation;
        let queued: i64 = self
            .call("queueing a run", self.timeout, |mut c| async move { invocation.invoke_async(&mut c).await })
            .await?;
        if queued == 1 { Ok(id) } else { Err(ClusterError::Full(self.max_pending_runs)) }
    }

    /// The record of run `id` if `owner` submitted it (someone else's run is `None`, as a missing one).
    pub async fn status(&self, id: &str, owner: &str) -> Result<Option<RunRecord>, ClusterError> {
        if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(None);
        }
        let key = self.keys.run(id);
        let key = &key;
        let fields: Vec<Option<String>> = self
            .call("reading a run", self.timeout, |mut c| async move {
                redis::cmd("HMGET")
                    .arg(key)
                    .arg("owner")
                    .arg("status")
                    .arg("report")
                    .arg("error")
                    .query_async(&mut c)
                    .await
            })
            .await?;
        match fields.as_slice() {
            [Some(stored), Some(status), report, error] if stored == owner => {
                Ok(Some(RunRecord { status: status.clone(), report: report.clone(), error: error.clone() }))
            }
            [_, _, _, _] => Ok(None),
            _ => Err(ClusterError::Malformed(format!("HMGET of run {id} answered {} fields", fields.len()))),
        }
    }

    /// Waits up to `poll_ms` for a queued run and takes it for this node; `None` when none came.
    pub async fn next_run(&self) -> Result<Option<ClaimedRun>, ClusterError> {
        let mut read = redis::cmd("XREADGROUP");
        read.arg("GROUP").arg(&self.keys.group).arg(&self.node).arg("COUNT").arg(1);
        read.arg("BLOCK").arg(millis(self.poll)).arg("STREAMS").arg(&self.keys.stream).arg(">");
        let read = &read;
        let reply: Value =
            self.call("reading the run queue", self.poll + self.timeout, |mut c| async move {
                read.query_async(&mut c).await
            })
            .await?;
        let Some((entry, id)) = first_entry(&reply)? else { return Ok(None) };
        self.start(&entry, &id).await
    }

    /// Marks run `id` (queue entry `entry`, held by this node) running under a new attempt; `None` if it is
    /// finished or gone (its entry is then acknowledged and deleted).
    async fn start(&self, entry: &str, id: &str) -> Result<Option<ClaimedRun>, ClusterError> {
        let script = redis::Script::new(scripts::START);
        let mut invocation = script.key(&self.keys.stream);
        invocation.key(self.keys.run(id)).arg(&self.keys.group).arg(entry).arg(&self.node);
        let invocation = &invocation;
        let reply: Value = self
            .call("starting a run", self.timeout, |mut c| async move { invocation.invoke_async(&mut c).await })
            .await?;
        let items = array(&reply)?;
        match items {
            [Value::Int(0)] => Ok(None),
            [Value::Int(attempt), owner, request] => Ok(Some(ClaimedRun {
                id: id.to_owned(),
                entry: entry.to_owned(),
                attempt: u64::try_from(*attempt).map_err(|_| malformed("negative attempt"))?,
                owner: text(owner)?,
                request: text(request)?,
            })),
            _ => Err(malformed("unexpected reply to the start script")),
        }
    }

    /// Takes over at most one run whose node has not renewed its claim for `reclaim_after` (XAUTOCLAIM). A run
    /// that never started, or that cannot have acted, is handed to this node to run; one that started and may have
    /// acted is returned as [`Reclaimed::Abandoned`] for the caller to record as failed.
    pub async fn reclaim(&self) -> Result<Option<Reclaimed>, ClusterError> {
        let mut claim = redis::cmd("XAUTOCLAIM");
        claim.arg(&self.keys.stream).arg(&self.keys.group).arg(&self.node).arg(millis(self.reclaim_after));
        claim.arg("0-0").arg("COUNT").arg(1);
        let claim = &claim;
        let reply: Value =
            self.call("reclaiming runs", self.timeout, |mut c| async move { claim.query_async(&mut c).await }).await?;
        let entries = match array(&reply)? {
            [_, entries, ..] => entries,
            _ => return Err(malformed("unexpected reply to XAUTOCLAIM")),
        };
        let Some((entry, id)) = first_entry_of(entries)? else { return Ok(None) };
        let script = redis::Script::new(scripts::RECOVER);
        let mut invocation = script.key(&self.keys.stream);
        invocation.key(self.keys.run(&id)).arg(&self.keys.group).arg(&entry).arg(&self.node);
        let invocation = &invocation;
        let reply: Value = self
            .call("recovering a run", self.timeout, |mut c| async move { invocation.invoke_async(&mut c).await })
            .await?;
        match array(&reply)? {
            [Value::Int(0)] => Ok(None),
            [Value::Int(1)] => Ok(self.start(&entry, &id).await?.map(Reclaimed::Run)),
            [Value::Int(2), Value::Int(attempt), node] => Ok(Some(Reclaimed::Abandoned(AbandonedRun {
                id,
                entry,
                attempt: u64::try_from(*attempt).map_err(|_| malformed("negative attempt"))?,
                node: text(node)?,
            }))),
            _ => Err(malformed("unexpected reply to the recover script")),
        }
    }

    /// Renews this node's claim on the queue entries of the runs it holds, so no other node reclaims them.
    pub async fn renew(&self, entries: &[String]) -> Result<(), ClusterError> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut claim = redis::cmd("XCLAIM");
        claim.arg(&self.keys.stream).arg(&self.keys.group).arg(&self.node).arg(0);
        for entry in entries {
            claim.arg(entry);
        }
        claim.arg("JUSTID");
        let claim = &claim;
        self.call("renewing claims", self.timeout, |mut c| async move { claim.query_async::<Value>(&mut c).await })
            .await
            .map(drop)
    }

    /// Records how `run` ended (under `attempt`), releases its queue entry and queues `deliveries`, all at once;
    /// `false` when the run no longer belongs to that attempt (another node reclaimed it), and nothing changed.
    pub async fn finish(
        &self,
        id: &str,
        entry: &str,
        attempt: u64,
        finished: &Finished,
        deliveries: &[Delivery],
    ) -> Result<bool, ClusterError> {
        let script = redis::Script::new(scripts::FINISH);
        let mut invocation = script.key(&self.keys.stream);
        invocation.key(self.keys.run(id)).key(&self.keys.due);
        invocation.arg(&self.keys.group).arg(entry).arg(attempt).arg(finished.status);
        invocation.arg(finished.report.as_deref().unwrap_or_default());
        invocation.arg(finished.error.as_deref().unwrap_or_default()).arg(self.result_ttl_secs);
        for delivery in deliveries {
            invocation.key(self.keys.delivery(&delivery.id));
            invocation.arg(&delivery.id).arg(&delivery.run_id).arg(&delivery.url).arg(&delivery.body);
        }
        let invocation = &invocation;
        let done: i64 = self
            .call("finishing a run", self.timeout, |mut c| async move { invocation.invoke_async(&mut c).await })
            .await?;
        Ok(done == 1)
    }

    /// Puts a run this node started but will not finish back in the queue (only for runs that cannot have acted);
    /// `false` when it no longer belongs to `attempt`.
    pub async fn hand_back(&self, id: &str, entry: &str, attempt: u64) -> Result<bool, ClusterError> {
        let script = redis::Script::new(scripts::HAND_BACK);
        let mut invocation = script.key(&self.keys.stream);
        invocation.key(self.keys.run(id)).arg(&self.keys.group).arg(entry).arg(attempt).arg(id);
        let invocation = &invocation;
        let back: i64 = self
            .call("handing a run back", self.timeout, |mut c| async move { invocation.invoke_async(&mut c).await })
            .await?;
        Ok(back == 1)
    }

    /// Leases at most `max` deliveries that are due to this node for `lease` (another node attempts them again
    /// only after it), oldest due first.
    pub async fn lease_deliveries(&self, max: usize, lease: Duration) -> Result<Vec<Delivery>, ClusterError> {
        let script = redis::Script::new(scripts::LEASE);
        let mut invocation = script.key(&self.keys.due);
        invocation.arg(max).arg(millis(lease)).arg(self.keys.delivery_prefix());
        let invocation = &invocation;
        let reply: Value = self
            .call("leasing deliveries", self.timeout, |mut c| async move { invocation.invoke_async(&mut c).await })
            .await?;
        array(&reply)?
            .iter()
            .map(|item| match array(item)? {
                [id, run_id, url, body, attempts, last_error] => Ok(Delivery {
                    id: text(id)?,
                    run_id: text(run_id)?,
                    url: text(url)?,
                    body: text(body)?,
                    attempts: text(attempts)?.parse().map_err(|_| malformed("attempts is not a number"))?,
                    last_error: text(last_error)?,
                }),
                _ => Err(malformed("unexpected delivery in the lease reply")),
            })
            .collect()
    }

    /// Webhook deliveries waiting for an attempt (sending, or waiting to retry) in the whole cluster.
    pub async fn pending_deliveries(&self) -> Result<u64, ClusterError> {
        let due = &self.keys.due;
        self.call("counting deliveries", self.timeout, |mut c| async move {
            redis::cmd("ZCARD").arg(due).query_async(&mut c).await
        })
        .await
    }

    /// Forgets delivery `id`: it was delivered.
    pub async fn delivered(&self, id: &str) -> Result<(), ClusterError> {
        let script = redis::Script::new(scripts::DELIVERED);
        let mut invocation = script.key(&self.keys.due);
        invocation.key(self.keys.delivery(id)).arg(id);
        let invocation = &invocation;
        self.call(
            "recording a delivery",
            self.timeout,
            |mut c| async move { invocation.invoke_async::<i64>(&mut c).await },
        )
        .await
        .map(drop)
    }

    /// Records a failed attempt of delivery `id` (now `attempts` made) and makes it due again after `after`.
    pub async fn retry_later(&self, id: &str, attempts: u32, error: &str, after: Duration) -> Result<(), ClusterError> {
        let script = redis::Script::new(scripts::RETRY);
        let mut invocation = script.key(&self.keys.due);
        invocation.key(self.keys.delivery(id)).arg(id).arg(attempts).arg(error).arg(millis(after));
        let invocation = &invocation;
        self.call(
            "scheduling a retry",
            self.timeout,
            |mut c| async move { invocation.invoke_async::<i64>(&mut c).await },
        )
        .await
        .map(drop)
    }

    /// Moves delivery `id` to the dead letters as `letter` (kept up to `max_dead_letters`, oldest dropped first).
    pub async fn dead_letter(&self, id: &str, letter: &str) -> Result<(), ClusterError> {
        let script = redis::Script::new(scripts::DEAD_LETTER);
        let mut invocation = script.key(&self.keys.due);
        invocation.key(self.keys.delivery(id)).key(&self.keys.dead).arg(id).arg(letter).arg(self.max_dead_letters);
        let invocation = &invocation;
        self.call("dead-lettering a delivery", self.timeout, |mut c| async move {
            invocation.invoke_async::<i64>(&mut c).await
        })
        .await
        .map(drop)
    }

    /// The dead letters, oldest first.
    pub async fn dead_letters(&self) -> Result<Vec<String>, ClusterError> {
        let dead = &self.keys.dead;
        self.call("listing dead letters", self.timeout, |mut c| async move {
            redis::cmd("LRANGE").arg(dead).arg(0).arg(-1).query_async(&mut c).await
        })
        .await
    }

    /// Records in the session directory that session `id` of `owner` lives on this node, reachable at `url`, with
    /// `info` (what its status answers), for `ttl` (renewed by registering again, e.g. on each call). Any node can
    /// then answer its status and tell a caller where to send calls ([`ClusterStore::session`]).
    pub async fn register_session(
        &self,
        id: &str,
        owner: &str,
        url: &str,
        info: &str,
        ttl: Duration,
    ) -> Result<(), ClusterError> {
        let key = self.keys.session(id);
        let mut pipe = redis::pipe();
        pipe.atomic().cmd("HSET").arg(&key).arg("owner").arg(owner).arg("node").arg(&self.node);
        pipe.arg("url").arg(url).arg("info").arg(info).ignore();
        pipe.cmd("PEXPIRE").arg(&key).arg(millis(ttl).max(1)).ignore();
        let pipe = &pipe;
        self.call("registering a session", self.timeout, |mut c| async move { pipe.query_async::<()>(&mut c).await })
            .await
    }

    /// Where session `id` lives, if `owner` opened it (someone else's session is `None`, as a missing one).
    pub async fn session(&self, id: &str, owner: &str) -> Result<Option<SessionEntry>, ClusterError> {
        let key = self.keys.session(id);
        let key = &key;
        let fields: Vec<Option<String>> = self
            .call("reading the session directory", self.timeout, |mut c| async move {
                redis::cmd("HMGET").arg(key).arg("owner").arg("node").arg("url").arg("info").query_async(&mut c).await
            })
            .await?;
        match fields.as_slice() {
            [Some(stored), Some(node), Some(url), Some(info)] if stored == owner => {
                Ok(Some(SessionEntry { node: node.clone(), url: url.clone(), info: info.clone() }))
            }
            [_, _, _, _] => Ok(None),
            _ => Err(malformed("unexpected reply from the session directory")),
        }
    }

    /// Removes session `id` from the directory (it was closed or ended).
    pub async fn forget_session(&self, id: &str) -> Result<(), ClusterError> {
        let key = self.keys.session(id);
        let key = &key;
        self.call("forgetting a session", self.timeout, |mut c| async move {
            redis::cmd("DEL").arg(key).query_async::<()>(&mut c).await
        })
        .await
    }

    /// Runs `call` on a pooled connection within `timeout`; any failure is [`ClusterError::Unavailable`].
    async fn call<T, F, Fut>(&self, what: &str, timeout: Duration, call: F) -> Result<T, ClusterError>
    where
        F: FnOnce(deadpool_redis::Connection) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let attempt = async {
            let connection = self.pool.get().await.map_err(|e| pool_error(&e))?;
            call(connection).await.map_err(|e| redis_error(&e))
        };
        match tokio::time::timeout(timeout, attempt).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(ClusterError::Unavailable(format!("{what}: {e}"))),
            Err(_) => Err(ClusterError::Unavailable(format!("{what}: no answer within {} ms", millis(timeout)))),
        }
    }
}

/// A redis error without the URL (it may carry a password).
fn redis_error(e: &redis::RedisError) -> String {
    match (e.code(), e.detail()) {
        (Some(code), Some(detail)) => format!("{code} {detail}"),
        _ => format!("{:?}: {}", e.kind(), e.detail().unwrap_or("connection failed")),
    }
}

fn pool_error(e: &deadpool_redis::PoolError) -> String {
    match e {
        deadpool_redis::PoolError::Backend(e) => redis_error(e),
        other => other.to_string(),
    }
}

fn random_hex(bytes: usize) -> Result<String, ClusterError> {
    let mut buffer = vec![0u8; bytes];
    getrandom::fill(&mut buffer).map_err(|e| ClusterError::Unavailable(format!("no randomness for an id: {e}")))?;
    Ok(hex::encode(buffer))
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

fn malformed(what: &str) -> ClusterError {
    ClusterError::Malformed(what.to_owned())
}

fn array(value: &Value) -> Result<&[Value], ClusterError> {
    match value {
        Value::Array(items) => Ok(items),
        _ => Err(malformed("an array was expected")),
    }
}

fn text(value: &Value) -> Result<String, ClusterError> {
    match value {
        Value::BulkString(bytes) => String::from_utf8(bytes.clone()).map_err(|_| malformed("text is not UTF-8")),
        Value::SimpleString(text) => Ok(text.clone()),
        Value::Int(n) => Ok(n.to_string()),
        _ => Err(malformed("text was expected")),
    }
}

/// The first entry (id, its `run` field) of an XREADGROUP reply; `None` for a nil reply or no entry.
fn first_entry(reply: &Value) -> Result<Option<(String, String)>, ClusterError> {
    let streams = match reply {
        Value::Nil => return Ok(None),
        Value::Array(streams) => streams.as_slice(),
        Value::Map(streams) => {
            return match streams.first() {
                Some((_, entries)) => first_entry_of(entries),
                None => Ok(None),
            };
        }
        _ => return Err(malformed("unexpected XREADGROUP reply")),
    };
    match streams.first() {
        None => Ok(None),
        Some(stream) => match array(stream)? {
            [_, entries] => first_entry_of(entries),
            _ => Err(malformed("unexpected stream in the XREADGROUP reply")),
        },
    }
}

/// The first entry of a list of `[id, [field, value, ...]]`, skipping entries deleted meanwhile (nil fields).
fn first_entry_of(entries: &Value) -> Result<Option<(String, String)>, ClusterError> {
    for entry in array(entries)? {
        let [id, fields] = array(entry)? else { return Err(malformed("unexpected stream entry")) };
        let Value::Array(fields) = fields else { continue };
        if let [name, run] = fields.as_slice()
            && text(name)? == "run"
        {
            return Ok(Some((text(id)?, text(run)?)));
        }
        return Err(malformed("a queue entry without its run id"));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configurations_that_cannot_work_are_refused_naming_the_field() {
        let base = ClusterConfig { redis_url: Some("redis://127.0.0.1:1/".into()), ..ClusterConfig::default() };
        assert_eq!(base.validate(), Ok(()));
        let short = ClusterConfig { reclaim_after_ms: 1_000, timeout_ms: 500, ..base.clone() };
        assert!(short.validate().unwrap_err().contains("reclaim_after_ms"));
        let zero = ClusterConfig { max_pending_runs: 0, ..base.clone() };
        assert!(zero.validate().unwrap_err().contains("cluster.max_pending_runs"));
        let node = ClusterConfig { node_id: Some("has space".into()), ..base.clone() };
        assert!(node.validate().unwrap_err().contains("node_id"));
        let bad_url = ClusterConfig { redis_url: Some("nope://x".into()), ..base };
        let error = ClusterStore::new(&bad_url).map(drop).unwrap_err();
        assert!(matches!(error, ClusterError::Config(ref m) if m.contains("redis_url")), "{error}");
    }

    #[test]
    fn queue_replies_are_read_and_deleted_entries_skipped() {
        let bulk = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        let entry = |id: &str, run: Option<&str>| {
            let fields = run.map_or(Value::Nil, |run| Value::Array(vec![bulk("run"), bulk(run)]));
            Value::Array(vec![bulk(id), fields])
        };
        let reply = Value::Array(vec![Value::Array(vec![
            bulk("q"),
            Value::Array(vec![entry("1-0", None), entry("2-0", Some("abc"))]),
        ])]);
        assert_eq!(first_entry(&reply), Ok(Some(("2-0".into(), "abc".into()))));
        assert_eq!(first_entry(&Value::Nil), Ok(None));
        let other_field = Value::Array(vec![bulk("3-0"), Value::Array(vec![bulk("other"), bulk("x")])]);
        let wrong = Value::Array(vec![Value::Array(vec![bulk("q"), Value::Array(vec![other_field])])]);
        assert!(matches!(first_entry(&wrong), Err(ClusterError::Malformed(_))));
    }
}
