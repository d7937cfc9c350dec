//! [`NatsCluster`]: the broker's [`Cluster`] on NATS with JetStream.
//!
//! What goes where, under a prefix `P` (default `mqttx`):
//!
//! | what | where |
//! | --- | --- |
//! | QoS 0 messages | core NATS subjects `P.q0.{topic}` |
//! | QoS 1 and 2 messages | subjects `P.q1.{topic}`, stored by the JetStream stream `P` (file storage, replicas as configured, a duplicate window for retried publishes) |
//! | retained messages | the key-value bucket `P_retained`, keyed by the topic's subject |
//! | session owners | the key-value bucket `P_sessions` ([`Ownership`]) |
//! | takeover requests | `P.ctl.node.{node}.takeover` |
//!
//! QoS 0 subjects are subscribed per distinct local filter ([`Interest`]). QoS 1 and 2
//! messages reach each node through its own durable consumer of the stream (`node-{id}`, every
//! QoS 1/2 subject), acknowledged once what a message made durable on the node is committed
//! (`ClusterNode::deliver_stored`), so a node that restarts catches up from where it was. A
//! message carries its origin node in a header, and a node does not deliver its own messages
//! again (the broker delivered them locally), except for shared groups, which the cluster picks
//! a member for: at QoS 0 a NATS queue group, at QoS 1 and 2 one durable consumer per group
//! (`share-{group}`) that every node with members reads, so each message goes to one node; a
//! node whose members are gone refuses the message, and one that does not acknowledge it within
//! 10 s (it died) has it redelivered to another.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use async_nats::jetstream::{self, kv, stream};
use async_nats::{HeaderMap, header};
use bytes::Bytes;
use futures_util::StreamExt as _;
use mqttx_broker::codec::QoS;
use mqttx_broker::{
    ClaimError, Cluster, ClusterFuture, ClusterNode, ClusterWill, Message, StoredSession,
};
use mqttx_router::TopicFilter;
use tokio::sync::{mpsc, oneshot};
use tokio::task::{JoinHandle, JoinSet};

use crate::journal::NatsJournal;
use crate::owner::Ownership;
use crate::proto::interest::{Change, Interest};
use crate::proto::subject::Namespace;

/// The header naming the node a message was published on.
const ORIGIN: &str = "Mqttx-Node";

/// Publishes waiting for the publishing task: past this, QoS 0 copies for other nodes are
/// dropped (and counted), and QoS 1 and 2 ones wait unacknowledged.
const PUBLISH_QUEUE: usize = 65_536;

/// Retained updates waiting for the bucket: past this, the publishing task waits.
const RETAIN_QUEUE: usize = 1024;

/// How to join a cluster.
#[derive(Clone, Debug)]
pub struct NatsClusterOptions {
    url: String,
    node_id: String,
    prefix: String,
    replicas: usize,
    connect_timeout: Duration,
    stream_max_age: Duration,
    stream_max_bytes: i64,
    heartbeat: Duration,
    local_while_unavailable: bool,
    shared_ack_wait: Duration,
}

impl NatsClusterOptions {
    /// The NATS server (`nats://host:port`, or several separated by commas) and this node's
    /// identifier, unique among the nodes.
    pub fn new(url: impl Into<String>, node_id: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            node_id: node_id.into(),
            prefix: String::from("mqttx"),
            replicas: 1,
            connect_timeout: Duration::from_secs(5),
            stream_max_age: Duration::from_secs(24 * 3600),
            stream_max_bytes: 1 << 30,
            heartbeat: Duration::from_secs(2),
            local_while_unavailable: true,
            shared_ack_wait: Duration::from_secs(10),
        }
    }

    /// How long a shared group's QoS 1 or 2 message handed to a node may go unacknowledged
    /// before the engine takes the node for dead and gives the message to another (default
    /// 10 s). A live node whose member has not answered yet says so every third of it.
    #[must_use]
    pub fn shared_ack_wait(mut self, wait: Duration) -> Self {
        self.shared_ack_wait = wait.max(Duration::from_millis(200));
        self
    }

    /// Whether QoS 0 messages still go between this node's own clients while it is cut off
    /// from the engine (default: yes). QoS 1 and 2 are never acknowledged then.
    #[must_use]
    pub fn local_while_unavailable(mut self, yes: bool) -> Self {
        self.local_while_unavailable = yes;
        self
    }

    /// How often the node tells the others it is alive (default 2 s). A node silent for
    /// three of these is taken for dead: the others adopt its sessions.
    #[must_use]
    pub fn heartbeat(mut self, every: Duration) -> Self {
        self.heartbeat = every.max(Duration::from_millis(100));
        self
    }

    /// The subject prefix, stream name and bucket name prefix (default `mqttx`): one plain
    /// token (letters, digits, `_`, `-`), so that several MQTT services can share a NATS
    /// cluster.
    #[must_use]
    pub fn prefix(mut self, prefix: &str) -> Self {
        prefix.clone_into(&mut self.prefix);
        self
    }

    /// Copies of the stream and buckets the NATS cluster keeps (default 1; 3 in production).
    #[must_use]
    pub fn replicas(mut self, replicas: usize) -> Self {
        self.replicas = replicas.max(1);
        self
    }

    /// How long connecting and each call on the engine may take (default 5 s).
    #[must_use]
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// The stream's limits: messages older than `max_age` (default 24 h) or beyond
    /// `max_bytes` in all (default 1 GiB) are dropped, oldest first.
    #[must_use]
    pub fn stream_limits(mut self, max_age: Duration, max_bytes: i64) -> Self {
        self.stream_max_age = max_age;
        self.stream_max_bytes = max_bytes;
        self
    }
}

/// Why joining the cluster failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum ClusterError {
    /// The options are not usable (the message says which).
    Options(String),
    /// The NATS server could not be reached.
    Connect(String),
    /// The stream could not be created or opened.
    Stream(String),
    /// A key-value bucket could not be created or opened.
    Bucket(String),
}

impl std::fmt::Display for ClusterError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Options(e) => write!(f, "cluster options: {e}"),
            Self::Connect(e) => write!(f, "cannot connect to NATS: {e}"),
            Self::Stream(e) => write!(f, "cannot create or open the JetStream stream: {e}"),
            Self::Bucket(e) => write!(f, "cannot create or open a key-value bucket: {e}"),
        }
    }
}

impl std::error::Error for ClusterError {}

/// How many of a shared group's messages may wait for their members' acknowledgements.
const SHARED_MAX_ACK_PENDING: i64 = 10_000;

/// What the publishing task does, in order.
enum Command {
    Publish(Message, Option<oneshot::Sender<()>>),
}

/// One node's link to the cluster: see the crate documentation and `docs/clustering.md`.
#[derive(Debug)]
pub struct NatsCluster {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    client: async_nats::Client,
    js: jetstream::Context,
    node_id: String,
    /// QoS 0 and QoS 1/2 subject spaces.
    q0: Namespace,
    q1: Namespace,
    /// Retained messages' keys: topics mapped without a prefix.
    keys: Namespace,
    owners: Ownership,
    node: OnceLock<ClusterNode>,
    interest: Mutex<Interest>,
    /// The reader tasks of each interest's subscriptions.
    readers: Mutex<HashMap<u64, Vec<JoinHandle<()>>>>,
    publish: mpsc::Sender<Command>,
    /// QoS 1 and 2 messages waiting for room in `publish`: while any does, later ones wait
    /// behind it rather than overtake it.
    overflow: AtomicUsize,
    /// Retained updates for the bucket, applied in order by their own task.
    retain_queue: mpsc::Sender<RetainUpdate>,
    /// The retained messages found at connect, handed to the broker at attach, and the
    /// watch of later changes (started before they were read, so none is missed).
    initial_retained: Mutex<Initial>,
    /// The retained messages' bucket, watched again after a reconnect.
    retained: kv::Store,
    /// The number of connections to NATS so far (see `watch_retained`).
    connects: tokio::sync::watch::Receiver<u64>,
    /// This node's journal in the cluster's journal bucket.
    journal: Arc<NatsJournal>,
    /// The nodes' heartbeats.
    nodes: kv::Store,
    local_while_unavailable: bool,
    heartbeat: Duration,
    /// See [`NatsClusterOptions::shared_ack_wait`].
    shared_ack_wait: Duration,
    /// The stream of QoS 1 and 2 messages.
    stream: stream::Stream,
    /// The reader of the durable consumer that delivers the stream's messages to this node.
    consumer: tokio::sync::Mutex<Option<JoinHandle<()>>>,
    /// While this node catches up with what its consumer missed while it was down: the stream
    /// sequence of the last message missed (0: caught up). New CONNECTs wait meanwhile, so
    /// that no subscription made after a message was published gets it.
    catch_up: AtomicU64,
    prefix: String,
    /// QoS 0 copies for other nodes dropped because the publishing task was behind.
    dropped: AtomicU64,
    /// Times NATS dropped messages for this node because it read them too slowly.
    slow: Arc<AtomicU64>,
    /// Messages received from NATS that could not be read.
    unreadable: AtomicU64,
    /// Messages too large for NATS, kept on this node.
    too_large: AtomicU64,
    timeout: Duration,
}

/// The retained messages read at connect and the watch started before reading them.
#[derive(Default)]
struct Initial(Vec<Message>, Option<kv::Watch>);

impl std::fmt::Debug for Initial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Initial").field(&self.0.len()).finish()
    }
}

impl NatsCluster {
    /// Connects to the NATS server, creates (or opens) the stream and the buckets, and reads
    /// the retained messages.
    ///
    /// # Errors
    /// The options are unusable, or the engine could not be reached or refused to create
    /// what the cluster needs.
    pub async fn connect(options: NatsClusterOptions) -> Result<Arc<Self>, ClusterError> {
        let prefix = options.prefix.clone();
        if prefix.is_empty()
            || !prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err(ClusterError::Options(format!(
                "the prefix {prefix:?} must be letters, digits, `_` and `-`"
            )));
        }
        if options.node_id.is_empty() {
            return Err(ClusterError::Options(String::from("the node id is empty")));
        }
        if options.node_id.contains('\0') {
            return Err(ClusterError::Options(String::from(
                "the node id must not contain a zero byte",
            )));
        }
        let namespace = |space: &str| {
            Namespace::new(&format!("{prefix}.{space}"))
                .map_err(|e| ClusterError::Options(e.to_string()))
        };
        let (q0, q1) = (namespace("q0")?, namespace("q1")?);
        let timeout = options.connect_timeout;
        let slow = Arc::new(AtomicU64::new(0));
        // Counts the connections to NATS: the bucket watches start again after a reconnect.
        let connects = Arc::new(tokio::sync::watch::Sender::new(0u64));
        let client = async_nats::ConnectOptions::new()
            .name(format!("mqttx {}", options.node_id))
            .event_callback({
                let slow = Arc::clone(&slow);
                let connects = Arc::clone(&connects);
                move |event| {
                    let slow = Arc::clone(&slow);
                    let connects = Arc::clone(&connects);
                    async move { on_event(&event, &slow, &connects) }
                }
            })
            .connection_timeout(timeout)
            .request_timeout(Some(timeout))
            .ping_interval(Duration::from_secs(10))
            .connect(options.url.as_str())
            .await
            .map_err(|e| ClusterError::Connect(format!("{}: {e}", options.url)))?;
        let js = jetstream::new(client.clone());
        let bounded =
            |what: &'static str| move |_| ClusterError::Stream(format!("{what}: timed out"));
        let qos1_stream = tokio::time::timeout(
            timeout,
            js.get_or_create_stream(stream::Config {
                name: prefix.clone(),
                description: Some(String::from("mqttx: QoS 1 and 2 messages")),
                subjects: vec![format!("{prefix}.q1.>")],
                storage: stream::StorageType::File,
                num_replicas: options.replicas,
                max_age: options.stream_max_age,
                max_bytes: options.stream_max_bytes,
                duplicate_window: Duration::from_secs(120),
                ..Default::default()
            }),
        )
        .await
        .map_err(bounded("stream"))?
        .map_err(|e| ClusterError::Stream(e.to_string()))?;
        // A node that comes back has its consumer's backlog to deliver first.
        let catch_up = match tokio::time::timeout(
            timeout,
            qos1_stream.consumer_info(node_consumer(&options.node_id)),
        )
        .await
        {
            Ok(Ok(info)) if info.num_pending > 0 => {
                let last = info.delivered.stream_sequence + info.num_pending;
                tracing::info!(
                    missed = info.num_pending,
                    "catching up with the stream before accepting clients"
                );
                last
            }
            _ => 0,
        };
        let prefix_owned = prefix.clone();
        let bucket = format!("{prefix}_retained");
        let retained = open_bucket(
            &js,
            kv::Config {
                bucket: bucket.clone(),
                description: String::from("mqttx: retained messages"),
                history: 1,
                num_replicas: options.replicas,
                storage: stream::StorageType::File,
                ..Default::default()
            },
            timeout,
        )
        .await?;
        let bucket = format!("{prefix}_journal");
        let journal_store = open_bucket(
            &js,
            kv::Config {
                bucket: bucket.clone(),
                description: String::from("mqttx: the nodes' persistent sessions"),
                history: 1,
                num_replicas: options.replicas,
                storage: stream::StorageType::File,
                ..Default::default()
            },
            timeout,
        )
        .await?;
        let journal = NatsJournal::open(journal_store.clone(), &options.node_id, timeout)
            .await
            .map_err(|e| ClusterError::Bucket(format!("{bucket}: {e}")))?;
        let owners = Ownership::open(
            client.clone(),
            &format!("{prefix}_sessions"),
            options.replicas,
            &options.node_id,
            &format!("{prefix}.ctl.node"),
            timeout,
        )
        .await
        .map_err(|e| ClusterError::Bucket(format!("{prefix}_sessions: {e}")))?
        .with_journal(journal_store)
        .with_reconnects(connects.subscribe());
        let bucket = format!("{prefix}_nodes");
        let nodes = open_bucket(
            &js,
            kv::Config {
                bucket: bucket.clone(),
                description: String::from("mqttx: the nodes' heartbeats"),
                history: 1,
                max_age: options.heartbeat * 3,
                num_replicas: options.replicas,
                // On file, so that it outlives a restart of the engine.
                storage: stream::StorageType::File,
                ..Default::default()
            },
            timeout,
        )
        .await?;
        let me = crate::proto::subject::encode_token(&options.node_id);
        tokio::time::timeout(timeout, nodes.put(&me, Bytes::from_static(b"alive")))
            .await
            .map_err(|_| ClusterError::Bucket(format!("{bucket}: timed out")))?
            .map_err(|e| ClusterError::Bucket(format!("{bucket}: {e}")))?;
        let keys = Namespace::root();
        let watch = tokio::time::timeout(timeout, retained.watch_all())
            .await
            .map_err(|_| ClusterError::Bucket(String::from("retained messages: timed out")))?
            .map_err(|e| ClusterError::Bucket(format!("retained messages: {e}")))?;
        let initial = load_retained(&retained, &keys, timeout).await?;
        let (tx, rx) = mpsc::channel(PUBLISH_QUEUE);
        let (retain_tx, retain_rx) = mpsc::channel(RETAIN_QUEUE);
        tokio::spawn(retainer(retained.clone(), retain_rx, timeout));
        let inner = Arc::new(Inner {
            client,
            js,
            node_id: options.node_id,
            q0,
            q1,
            keys,
            owners,
            node: OnceLock::new(),
            interest: Mutex::default(),
            readers: Mutex::default(),
            publish: tx,
            overflow: AtomicUsize::new(0),
            retain_queue: retain_tx,
            initial_retained: Mutex::new(Initial(initial, Some(watch))),
            retained,
            connects: connects.subscribe(),
            journal: Arc::new(journal),
            nodes,
            local_while_unavailable: options.local_while_unavailable,
            heartbeat: options.heartbeat,
            shared_ack_wait: options.shared_ack_wait,
            stream: qos1_stream,
            consumer: tokio::sync::Mutex::new(None),
            catch_up: AtomicU64::new(catch_up),
            prefix: prefix_owned,
            dropped: AtomicU64::new(0),
            slow,
            unreadable: AtomicU64::new(0),
            too_large: AtomicU64::new(0),
            timeout,
        });
        tokio::spawn(publisher(Arc::downgrade(&inner), rx));
        Ok(Arc::new(Self { inner }))
    }

    /// QoS 0 copies for other nodes dropped because the engine was not keeping up.
    pub fn dropped(&self) -> u64 {
        self.inner.dropped.load(Ordering::Relaxed)
    }

    /// Times the NATS client dropped messages from the cluster because this node read them
    /// too slowly (a subscription's buffer was full; each time is also logged).
    pub fn slow_consumers(&self) -> u64 {
        self.inner.slow.load(Ordering::Relaxed)
    }

    /// Messages from the cluster that could not be read and were dropped (each is logged).
    pub fn unreadable(&self) -> u64 {
        self.inner.unreadable.load(Ordering::Relaxed)
    }

    /// Messages published here that were too large for NATS (its `max_payload`, 1 MiB by
    /// default, less room for headers), and were delivered on this node only: acknowledged
    /// (QoS 1 and 2) as such, and a retained one cleared on every node. Each is logged.
    /// Keeping the broker's `max_packet_size` below NATS's `max_payload` avoids them.
    pub fn too_large(&self) -> u64 {
        self.inner.too_large.load(Ordering::Relaxed)
    }

    /// NATS's `max_payload` for this connection: the size a message's record plus its headers
    /// may have to cross nodes.
    pub fn max_payload(&self) -> usize {
        self.inner.client.max_payload()
    }

    /// The node identifier.
    pub fn node_id(&self) -> &str {
        &self.inner.node_id
    }

    /// This node's journal in the cluster's journal bucket, for
    /// [`Builder::journal`](mqttx_broker::Builder::journal): with it, the node's persistent
    /// sessions outlive the node (a node that claims one of them after this node died reads
    /// it from there), and QoS 1 and 2 messages for them are acknowledged once journaled.
    pub fn journal(&self) -> Arc<NatsJournal> {
        Arc::clone(&self.inner.journal)
    }
}

/// Logs what the NATS client reports about its connection, and counts slow-consumer drops.
fn on_event(
    event: &async_nats::Event,
    slow: &AtomicU64,
    connects: &tokio::sync::watch::Sender<u64>,
) {
    match event {
        async_nats::Event::Connected => {
            tracing::info!("connected to NATS");
            connects.send_modify(|n| *n += 1);
        }
        async_nats::Event::Disconnected => {
            tracing::warn!("disconnected from NATS: new CONNECTs refused until it is back");
        }
        async_nats::Event::SlowConsumer(sid) => {
            slow.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                sid,
                "NATS dropped cluster messages: this node reads them too slowly"
            );
        }
        other => tracing::warn!(event = %other, "NATS"),
    }
}

/// Creates the key-value bucket `config` describes, or opens it when it exists (perhaps with
/// another configuration, such as its replicas).
async fn open_bucket(
    js: &jetstream::Context,
    config: kv::Config,
    timeout: Duration,
) -> Result<kv::Store, ClusterError> {
    let bucket = config.bucket.clone();
    match tokio::time::timeout(timeout, js.create_key_value(config)).await {
        Ok(Ok(store)) => Ok(store),
        _ => tokio::time::timeout(timeout, js.get_key_value(bucket.clone()))
            .await
            .map_err(|_| ClusterError::Bucket(format!("{bucket}: timed out")))?
            .map_err(|e| ClusterError::Bucket(format!("{bucket}: {e}"))),
    }
}

/// Every retained message in the bucket.
async fn load_retained(
    store: &kv::Store,
    keys: &Namespace,
    timeout: Duration,
) -> Result<Vec<Message>, ClusterError> {
    let fail = |e: String| ClusterError::Bucket(format!("retained messages: {e}"));
    let load = async {
        let mut out = Vec::new();
        let mut names = store.keys().await.map_err(|e| fail(e.to_string()))?;
        while let Some(key) = names.next().await {
            let key = key.map_err(|e| fail(e.to_string()))?;
            if let Some(value) = store
                .get(key.as_str())
                .await
                .map_err(|e| fail(e.to_string()))?
            {
                match Message::decode_record(&value) {
                    Ok(message) if keys.topic(&key).is_ok_and(|t| t == message.topic) => {
                        out.push(message);
                    }
                    _ => tracing::warn!(%key, "unreadable retained message in the bucket"),
                }
            }
        }
        Ok(out)
    };
    tokio::time::timeout(timeout * 4, load)
        .await
        .map_err(|_| fail(String::from("timed out")))?
}

impl Inner {
    fn node(&self) -> Option<&ClusterNode> {
        self.node.get()
    }

    /// Subscribes the subjects of interest `id` and starts a reader per subscription.
    async fn subscribe(self: &Arc<Self>, id: u64, filter: TopicFilter) {
        let mut handles = Vec::new();
        let shared = filter.is_shared();
        // QoS 1 and 2 messages come from the stream: through the node's consumer for normal
        // subscriptions, through the group's consumer for shared ones.
        if shared {
            handles.extend(self.shared_consumer(&filter).await);
        }
        for ns in [&self.q0] {
            let subjects = match ns.filter(&filter) {
                Ok(subjects) => subjects,
                Err(error) => {
                    tracing::warn!(%filter, %error, "filter not routed across the cluster");
                    return;
                }
            };
            let group = subjects.queue_group().map(str::to_owned);
            for subject in subjects.subjects() {
                let subscribed = match &group {
                    Some(group) => {
                        self.client
                            .queue_subscribe(subject.to_owned(), group.clone())
                            .await
                    }
                    None => self.client.subscribe(subject.to_owned()).await,
                };
                match subscribed {
                    Ok(sub) => {
                        let inner = Arc::downgrade(self);
                        let filter = filter.clone();
                        handles.push(tokio::spawn(read(inner, id, filter, shared, sub)));
                    }
                    Err(error) => tracing::warn!(%filter, %error, "cannot subscribe"),
                }
            }
        }
        let mut readers = self.readers.lock().unwrap_or_else(|e| e.into_inner());
        // Unsubscribed meanwhile: the interest is gone, or was dropped and taken again under
        // a new id whose own subscriptions are on their way.
        let still = self
            .interest
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .id(filter.as_str())
            == Some(id);
        if still {
            readers.entry(id).or_default().extend(handles);
        } else {
            for handle in handles {
                handle.abort();
            }
        }
    }

    /// Creates (or opens) the durable stream consumer of the shared group `filter`, which every
    /// node with members of the group reads, so that each QoS 1 or 2 message goes to one node,
    /// and starts this node's reader of it.
    async fn shared_consumer(self: &Arc<Self>, filter: &TopicFilter) -> Option<JoinHandle<()>> {
        let subjects = self.q1.filter(filter).ok()?;
        let group = subjects.queue_group()?.to_owned();
        let config = jetstream::consumer::pull::Config {
            durable_name: Some(format!("share-{group}")),
            description: Some(format!("mqttx: shared subscription {filter}")),
            filter_subjects: subjects.subjects().map(str::to_owned).collect(),
            ack_policy: jetstream::consumer::AckPolicy::Explicit,
            deliver_policy: jetstream::consumer::DeliverPolicy::New,
            // Not acknowledged in time (the node died; a live one says it is in progress):
            // another node gets it.
            ack_wait: self.shared_ack_wait,
            max_ack_pending: SHARED_MAX_ACK_PENDING,
            inactive_threshold: Duration::from_secs(3600),
            ..Default::default()
        };
        let created = tokio::time::timeout(self.timeout, self.stream.create_consumer(config)).await;
        match created {
            Ok(Ok(consumer)) => Some(tokio::spawn(consume_shared(
                Arc::downgrade(self),
                filter.clone(),
                consumer,
            ))),
            Ok(Err(error)) => {
                tracing::warn!(%filter, %error, "cannot create the shared group's stream consumer");
                None
            }
            Err(_) => {
                tracing::warn!(%filter, "creating the shared group's stream consumer timed out");
                None
            }
        }
    }

    /// Creates (or opens) the node's durable stream consumer and starts its reader.
    ///
    /// Its filter is every QoS 1 and 2 subject, not the node's interest: a consumer whose
    /// filter changes may deliver messages stored before the change, which a subscription
    /// made after them must not get. The node's router drops what no local subscriber wants.
    async fn start_consumer(self: &Arc<Self>) {
        let mut reader = self.consumer.lock().await;
        if reader.as_ref().is_some_and(|r| !r.is_finished()) {
            return;
        }
        let subjects = vec![format!("{}.q1.>", self.prefix)];
        let config = jetstream::consumer::pull::Config {
            durable_name: Some(node_consumer(&self.node_id)),
            description: Some(format!(
                "mqttx: QoS 1 and 2 messages for node {}",
                self.node_id
            )),
            filter_subjects: subjects,
            ack_policy: jetstream::consumer::AckPolicy::Explicit,
            deliver_policy: jetstream::consumer::DeliverPolicy::New,
            ack_wait: Duration::from_secs(30),
            max_ack_pending: 10_000,
            // A node gone for an hour: its consumer goes too.
            inactive_threshold: Duration::from_secs(3600),
            ..Default::default()
        };
        let created = tokio::time::timeout(self.timeout, self.stream.create_consumer(config)).await;
        let consumer: jetstream::consumer::PullConsumer = match created {
            Ok(Ok(consumer)) => consumer,
            Ok(Err(error)) => {
                tracing::warn!(%error, "cannot update the node's stream consumer");
                return;
            }
            Err(_) => {
                tracing::warn!("updating the node's stream consumer timed out");
                return;
            }
        };
        *reader = Some(tokio::spawn(consume(Arc::downgrade(self), consumer)));
    }

    fn unsubscribe(&self, id: u64) {
        let handles = self
            .readers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
        // Aborting a reader drops its subscriber, which unsubscribes.
        for handle in handles.into_iter().flatten() {
            handle.abort();
        }
    }

    /// Hands one message from NATS to the broker.
    fn receive(&self, id: u64, filter: &TopicFilter, shared: bool, msg: &async_nats::Message) {
        let Some(node) = self.node() else {
            return;
        };
        let own = msg
            .headers
            .as_ref()
            .and_then(|h| h.get(ORIGIN))
            .is_some_and(|origin| origin.as_str() == self.node_id);
        if own && !shared {
            return;
        }
        let message = match Message::decode_record(&msg.payload) {
            Ok(message) => message,
            Err(error) => {
                self.unreadable.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(subject = %msg.subject, %error, "unreadable message from the cluster");
                return;
            }
        };
        if shared {
            if !node.deliver_shared(filter, &message) {
                tracing::debug!(%filter, "shared group without a member here any more");
            }
            return;
        }
        let first = self
            .interest
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_first(id, &message.topic);
        if first {
            node.deliver(&message);
        }
    }

    /// The headers of a message published here; `id` for JetStream's deduplication.
    fn headers(&self, id: Option<u64>) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(ORIGIN, self.node_id.as_str());
        if let Some(id) = id {
            headers.insert(
                header::NATS_MESSAGE_ID,
                format!("{}-{id}", self.node_id).as_str(),
            );
        }
        headers
    }

    /// Publishes one message, and keeps or clears its retained copy.
    async fn publish(
        self: &Arc<Self>,
        message: Message,
        stored: Option<oneshot::Sender<()>>,
        seq: u64,
    ) {
        let max = self.client.max_payload();
        let body = match message.encode_record() {
            Ok(body) if body.len().saturating_add(self.headroom()) <= max => Bytes::from(body),
            _ => {
                // Beyond what NATS carries: a message of this node only, acknowledged as such,
                // since holding its acknowledgement back would hold back every later one of
                // the node. A retained one is cleared cluster-wide rather than left stale on
                // the other nodes.
                self.too_large.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    topic = %message.topic,
                    size = message.payload.len(),
                    max_payload = max,
                    "message too large for NATS: delivered on this node only"
                );
                if message.retain {
                    let _ = self.retain(&message, None, None).await;
                }
                if let Some(stored) = stored {
                    let _ = stored.send(());
                }
                return;
            }
        };
        let stored = if message.retain {
            let value = (!message.payload.is_empty()).then(|| body.clone());
            self.retain(&message, value, stored).await
        } else {
            stored
        };
        if message.qos == QoS::AtMostOnce {
            let Ok(subject) = self.q0.subject(&message.topic) else {
                return;
            };
            if let Err(error) = self
                .client
                .publish_with_headers(subject, self.headers(None), body)
                .await
            {
                tracing::debug!(%error, "QoS 0 publish to the cluster failed");
            }
            return;
        }
        let Ok(subject) = self.q1.subject(&message.topic) else {
            // Not mappable (too long): acknowledged, as a local-only message.
            if let Some(stored) = stored {
                let _ = stored.send(());
            }
            return;
        };
        let headers = self.headers(Some(seq));
        let first = self
            .js
            .publish_with_headers(subject.clone(), headers.clone(), body.clone())
            .await;
        let inner = Arc::downgrade(self);
        // Acknowledgements come back in their own time; retries keep the message id, so the
        // stream keeps one copy. They end with the cluster (the broker gone, nobody waits).
        tokio::spawn(async move {
            let mut attempt = first;
            let mut backoff = Duration::from_millis(50);
            loop {
                let Some(timeout) = inner.upgrade().map(|inner| inner.timeout) else {
                    return;
                };
                let acked = match attempt {
                    Ok(ack) => tokio::time::timeout(timeout, ack)
                        .await
                        .map_err(|_| String::from("timed out"))
                        .and_then(|r| r.map_err(|e| e.to_string())),
                    Err(e)
                        if e.kind() == jetstream::context::PublishErrorKind::MaxPayloadExceeded =>
                    {
                        // The server's limit is lower than the one checked (another server
                        // since): as above, a message of this node only.
                        if let Some(inner) = inner.upgrade() {
                            inner.too_large.fetch_add(1, Ordering::Relaxed);
                        }
                        tracing::warn!(%subject, error = %e, "message too large for NATS: delivered on this node only");
                        if let Some(stored) = stored {
                            let _ = stored.send(());
                        }
                        return;
                    }
                    Err(e) => Err(e.to_string()),
                };
                match acked {
                    Ok(_) => {
                        if let Some(stored) = stored {
                            let _ = stored.send(());
                        }
                        return;
                    }
                    Err(error) => {
                        tracing::warn!(%subject, %error, "JetStream did not store a message; retrying");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(2));
                        let Some(inner) = inner.upgrade() else {
                            return;
                        };
                        attempt = inner
                            .js
                            .publish_with_headers(subject.clone(), headers.clone(), body.clone())
                            .await;
                    }
                }
            }
        });
    }

    /// Room kept in NATS's `max_payload` for the headers of a message (origin and message id).
    fn headroom(&self) -> usize {
        128 + 2 * self.node_id.len()
    }

    /// Queues the put (`value`, the record) or delete (none) of the retained message of
    /// `message`'s topic in the bucket,
    /// behind the earlier ones (so a set followed by a clear never ends up set). When the
    /// publisher waits for `stored`, the returned sender stands for the stream's store and
    /// `stored` is sent once both the stream and the bucket have the message.
    async fn retain(
        &self,
        message: &Message,
        value: Option<Bytes>,
        stored: Option<oneshot::Sender<()>>,
    ) -> Option<oneshot::Sender<()>> {
        let Ok(key) = self.keys.subject(&message.topic) else {
            return stored;
        };
        let (done, stream) = match stored {
            Some(stored) => {
                let (kv_tx, kv_rx) = oneshot::channel();
                let (stream_tx, stream_rx) = oneshot::channel();
                tokio::spawn(async move {
                    if let (Ok(()), Ok(())) = tokio::join!(kv_rx, stream_rx) {
                        let _ = stored.send(());
                    }
                });
                (Some(kv_tx), Some(stream_tx))
            }
            None => (None, None),
        };
        let update = RetainUpdate { key, value, done };
        if self.retain_queue.send(update).await.is_err() {
            tracing::warn!("retained updates stopped");
        }
        stream
    }
}

/// One change of the retained bucket, in the order the node received the messages.
struct RetainUpdate {
    key: String,
    /// The record to keep, or none to clear the topic.
    value: Option<Bytes>,
    /// Sent once the bucket has it, or the update was given up.
    done: Option<oneshot::Sender<()>>,
}

/// How many times a retained update is tried before it is given up (with a warning).
const RETAIN_ATTEMPTS: u32 = 8;

/// Applies the retained updates one after the other, each retried with bounded backoff.
async fn retainer(store: kv::Store, mut rx: mpsc::Receiver<RetainUpdate>, timeout: Duration) {
    while let Some(update) = rx.recv().await {
        let mut backoff = Duration::from_millis(50);
        for attempt in 1..=RETAIN_ATTEMPTS {
            let result = match &update.value {
                Some(value) => tokio::time::timeout(timeout, store.put(&update.key, value.clone()))
                    .await
                    .map(|r| r.map(|_| ()).map_err(|e| e.to_string())),
                None => tokio::time::timeout(timeout, store.delete(&update.key))
                    .await
                    .map(|r| r.map_err(|e| e.to_string())),
            };
            let error = match result {
                Ok(Ok(())) => break,
                Ok(Err(error)) => error,
                Err(_) => String::from("timed out"),
            };
            if attempt == RETAIN_ATTEMPTS {
                // Given up: the publisher's acknowledgement still waits for the stream (fail
                // closed while the engine is away), but not for the bucket, whose refusal
                // would otherwise hold back every later acknowledgement of the node.
                tracing::warn!(key = %update.key, %error, "cannot update the retained message in the cluster; given up");
            } else {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
        }
        if let Some(done) = update.done {
            let _ = done.send(());
        }
    }
}

/// Reads one subscription until it ends or the cluster is gone.
async fn read(
    inner: std::sync::Weak<Inner>,
    id: u64,
    filter: TopicFilter,
    shared: bool,
    mut sub: async_nats::Subscriber,
) {
    while let Some(msg) = sub.next().await {
        let Some(inner) = inner.upgrade() else {
            return;
        };
        inner.receive(id, &filter, shared, &msg);
    }
}

/// The name of node `node_id`'s durable consumer of the stream.
fn node_consumer(node_id: &str) -> String {
    format!("node-{}", crate::proto::subject::encode_token(node_id))
}

/// How long a node that comes back may take to catch up with its consumer's backlog before it
/// accepts clients anyway.
const CATCH_UP_LIMIT: Duration = Duration::from_secs(30);

/// Delivers the stream's messages to the broker, acknowledging each once what it made durable
/// here is committed (many at once, in any order).
async fn consume(inner: std::sync::Weak<Inner>, consumer: jetstream::consumer::PullConsumer) {
    const IN_PROGRESS: usize = 1024;
    loop {
        let mut messages = match consumer.messages().await {
            Ok(messages) => messages,
            Err(error) => {
                tracing::warn!(%error, "cannot read the node's stream consumer");
                tokio::time::sleep(Duration::from_secs(1)).await;
                if inner.strong_count() == 0 {
                    return;
                }
                continue;
            }
        };
        let mut pending = JoinSet::new();
        while let Some(msg) = messages.next().await {
            let Some(inner) = inner.upgrade() else {
                return;
            };
            let Ok(msg) = msg else {
                // Missed heartbeats and the like: the stream of messages goes on.
                continue;
            };
            let own = msg
                .headers
                .as_ref()
                .and_then(|h| h.get(ORIGIN))
                .is_some_and(|origin| origin.as_str() == inner.node_id);
            let done = match (own, inner.node()) {
                (false, Some(node)) => match Message::decode_record(&msg.payload) {
                    Ok(message) => Some(node.deliver_stored(&message)),
                    Err(error) => {
                        inner.unreadable.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(subject = %msg.subject, %error, "unreadable message in the stream");
                        None
                    }
                },
                _ => None,
            };
            // Routed: a subscription made from now on gets only later messages.
            let target = inner.catch_up.load(Ordering::Relaxed);
            if target != 0 && msg.info().is_ok_and(|info| info.stream_sequence >= target) {
                inner.catch_up.store(0, Ordering::Relaxed);
                tracing::info!("caught up with the stream: accepting clients");
            }
            pending.spawn(async move {
                if let Some(done) = done {
                    done.await;
                }
                let _ = msg.ack().await;
            });
            while pending.len() > IN_PROGRESS {
                pending.join_next().await;
            }
            while pending.try_join_next().is_some() {}
        }
        if inner.strong_count() == 0 {
            return;
        }
    }
}

/// Hands the group consumer's messages to a member of the local group `filter`, and
/// acknowledges each once that member has taken it ([`ClusterNode::deliver_shared_tracked`]:
/// acknowledged by the client, or kept with its persistent session), telling the engine it is
/// still in progress meanwhile. A message the group has no member here for, or that its member
/// did not take (its connection ended with its session), is refused: the engine gives it to
/// another node, or to the next member here.
async fn consume_shared(
    inner: std::sync::Weak<Inner>,
    filter: TopicFilter,
    consumer: jetstream::consumer::PullConsumer,
) {
    // At most as many messages wait for their members as the consumer lets out
    // unacknowledged. Each waits on a task of its own, which outlives this reader: the group's
    // last member here leaving stops the reader, and the message it had is then refused.
    let pending = Arc::new(tokio::sync::Semaphore::new(SHARED_MAX_ACK_PENDING as usize));
    let Some(progress) = inner.upgrade().map(|i| i.shared_ack_wait / 3) else {
        return;
    };
    loop {
        let mut messages = match consumer.messages().await {
            Ok(messages) => messages,
            Err(error) => {
                tracing::warn!(%filter, %error, "cannot read the shared group's stream consumer");
                tokio::time::sleep(Duration::from_secs(1)).await;
                if inner.strong_count() == 0 {
                    return;
                }
                continue;
            }
        };
        while let Some(msg) = messages.next().await {
            let Some(inner) = inner.upgrade() else {
                return;
            };
            let Ok(msg) = msg else {
                continue;
            };
            let Some(node) = inner.node() else {
                continue;
            };
            let taken = match Message::decode_record(&msg.payload) {
                Ok(message) => node.deliver_shared_tracked(&filter, &message),
                Err(error) => {
                    inner.unreadable.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(subject = %msg.subject, %error, "unreadable message in the stream");
                    let _ = msg.ack().await;
                    continue;
                }
            };
            let Some(taken) = taken else {
                // No member here (any more): another node's, or this node's next one.
                let _ = msg.ack_with(jetstream::AckKind::Nak(None)).await;
                continue;
            };
            let Ok(permit) = Arc::clone(&pending).acquire_owned().await else {
                return;
            };
            tokio::spawn(async move {
                let _permit = permit;
                tokio::pin!(taken);
                let taken = loop {
                    tokio::select! {
                        taken = &mut taken => break taken,
                        () = tokio::time::sleep(progress) => {
                            let _ = msg.ack_with(jetstream::AckKind::Progress).await;
                        }
                    }
                };
                let kind = if taken {
                    jetstream::AckKind::Ack
                } else {
                    // Not delivered: to another member, after a pause (the member's queue
                    // may have been full).
                    jetstream::AckKind::Nak(Some(Duration::from_millis(500)))
                };
                let _ = msg.ack_with(kind).await;
            });
        }
        if inner.strong_count() == 0 {
            return;
        }
    }
}

/// Publishes what the broker handed over, in order.
async fn publisher(inner: std::sync::Weak<Inner>, mut rx: mpsc::Receiver<Command>) {
    let mut seq = 0u64;
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64);
    while let Some(Command::Publish(message, stored)) = rx.recv().await {
        let Some(inner) = inner.upgrade() else {
            return;
        };
        seq += 1;
        // Unique across restarts of this node within the duplicate window.
        inner
            .publish(message, stored, started.wrapping_add(seq))
            .await;
    }
}

/// Puts this node's heartbeat every interval and, once the node has been up long enough to
/// have seen everyone's, adopts the sessions of nodes whose heartbeat expired.
async fn heartbeat(inner: std::sync::Weak<Inner>, node: ClusterNode) {
    let Some(every) = inner.upgrade().map(|i| i.heartbeat) else {
        return;
    };
    let mut started = tokio::time::Instant::now();
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else {
            return;
        };
        if !node.is_alive() {
            return;
        }
        let me = crate::proto::subject::encode_token(&inner.node_id);
        let put = inner.nodes.put(&me, Bytes::from_static(b"alive"));
        if !matches!(tokio::time::timeout(inner.timeout, put).await, Ok(Ok(_))) {
            tracing::debug!("heartbeat not recorded");
            // Once the engine is back, the other nodes need as long as at start to be seen
            // alive again: their heartbeats may have expired meanwhile.
            started = tokio::time::Instant::now();
            continue;
        }
        if started.elapsed() < every * 4 {
            continue;
        }
        let listed = async {
            let mut alive = std::collections::HashSet::new();
            let mut keys = inner.nodes.keys().await.ok()?;
            while let Some(key) = keys.next().await {
                let key = key.ok()?;
                alive.insert(crate::proto::subject::decode_token(&key).ok()?);
            }
            Some(alive)
        };
        let Ok(Some(alive)) = tokio::time::timeout(inner.timeout, listed).await else {
            continue;
        };
        inner.owners.adopt_orphans(&alive, &node).await;
    }
}

/// Watches the retained bucket and mirrors it into the broker. After a reconnect to NATS (a
/// restarted engine leaves the watch silent) it reads the whole bucket again and goes on
/// watching from there.
async fn watch_retained(inner: std::sync::Weak<Inner>, mut watch: kv::Watch) {
    let Some(mut connects) = inner.upgrade().map(|inner| inner.connects.clone()) else {
        return;
    };
    connects.mark_unchanged();
    loop {
        let entry = tokio::select! {
            entry = watch.next() => entry,
            changed = connects.changed() => {
                if changed.is_err() {
                    return;
                }
                None
            }
        };
        let Some(inner) = inner.upgrade() else {
            return;
        };
        let Some(entry) = entry else {
            // Reconnected, or the watch ended: every key's value again, then its changes.
            match inner.retained.watch_with_history(">").await {
                Ok(again) => watch = again,
                Err(error) => {
                    tracing::warn!(%error, "cannot watch the retained messages again; retrying");
                    drop(inner);
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    connects.mark_changed();
                }
            }
            continue;
        };
        let Ok(entry) = entry else {
            continue;
        };
        let Some(node) = inner.node() else {
            continue;
        };
        let Ok(topic) = inner.keys.topic(&entry.key) else {
            continue;
        };
        match entry.operation {
            kv::Operation::Put => match Message::decode_record(&entry.value) {
                Ok(message) if message.topic == topic => node.retain(&topic, Some(&message)),
                _ => tracing::warn!(key = %entry.key, "unreadable retained message in the bucket"),
            },
            kv::Operation::Delete | kv::Operation::Purge => node.retain(&topic, None),
        }
    }
}

impl Cluster for NatsCluster {
    fn attach(&self, node: ClusterNode) {
        let inner = &self.inner;
        if inner.node.set(node.clone()).is_err() {
            return;
        }
        let Initial(initial, watch) = std::mem::take(
            &mut *inner
                .initial_retained
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
        );
        for message in &initial {
            node.retain(&message.topic, Some(message));
        }
        if let Some(watch) = watch {
            tokio::spawn(watch_retained(Arc::downgrade(inner), watch));
        }
        let owners = inner.owners.clone();
        let served = node.clone();
        tokio::spawn(async move {
            if let Err(error) = owners.serve_takeovers(served).await {
                tracing::error!(%error, "cannot answer takeovers");
            }
        });
        let owners = inner.owners.clone();
        let fenced = node.clone();
        let grace = inner.heartbeat * 5;
        tokio::spawn(async move {
            if let Err(error) = owners.fence(fenced, grace).await {
                tracing::error!(%error, "cannot watch the session owners");
            }
        });
        tokio::spawn(heartbeat(Arc::downgrade(inner), node));
        if inner.catch_up.load(Ordering::Relaxed) != 0 {
            // The backlog is delivered from now on, whether or not a subscription asks for it,
            // and clients wait at most so long for it.
            let weak = Arc::downgrade(inner);
            tokio::spawn(async move {
                if let Some(inner) = weak.upgrade() {
                    inner.start_consumer().await;
                }
                tokio::time::sleep(CATCH_UP_LIMIT).await;
                let Some(inner) = weak.upgrade() else {
                    return;
                };
                if inner.catch_up.swap(0, Ordering::Relaxed) != 0 {
                    tracing::warn!(limit = ?CATCH_UP_LIMIT, "still catching up with the stream: accepting clients anyway");
                }
            });
        }
    }

    fn subscribed(&self, filter: &TopicFilter) -> Option<ClusterFuture<()>> {
        let change = self
            .inner
            .interest
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .add(filter);
        let Some(Change::Subscribe { id, filter }) = change else {
            return None;
        };
        let inner = Arc::clone(&self.inner);
        let (tx, rx) = oneshot::channel();
        tokio::spawn(async move {
            let shared = filter.is_shared();
            inner.subscribe(id, filter).await;
            // The server has the subscriptions once it answered a flush.
            let _ = tokio::time::timeout(inner.timeout, inner.client.flush()).await;
            if !shared {
                // Started with the first subscription (and again if its reader ended).
                inner.start_consumer().await;
            }
            let _ = tx.send(());
        });
        Some(Box::pin(async move {
            let _ = rx.await;
        }))
    }

    fn unsubscribed(&self, filter: &TopicFilter) {
        let change = self
            .inner
            .interest
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(filter);
        if let Some(Change::Unsubscribe { id }) = change {
            self.inner.unsubscribe(id);
        }
    }

    fn publish(&self, message: &Message) -> Option<ClusterFuture<()>> {
        if message.qos == QoS::AtMostOnce {
            if self
                .inner
                .publish
                .try_send(Command::Publish(message.clone(), None))
                .is_err()
            {
                self.inner.dropped.fetch_add(1, Ordering::Relaxed);
            }
            return None;
        }
        let (tx, rx) = oneshot::channel();
        let command = Command::Publish(message.clone(), Some(tx));
        // Once one QoS 1/2 message waits for room, the next ones wait behind it: the broker
        // awaits these futures in order, so they reach the queue in order.
        let overflow = &self.inner.overflow;
        let queued = if overflow.load(Ordering::Acquire) == 0 {
            self.inner.publish.try_send(command)
        } else {
            Err(mpsc::error::TrySendError::Full(command))
        };
        let waiting = match queued {
            Err(mpsc::error::TrySendError::Full(command)) => {
                if overflow.fetch_add(1, Ordering::AcqRel) == 0 {
                    tracing::warn!(topic = %message.topic, "cluster publishing queue full: waiting for room");
                }
                Some((Arc::clone(&self.inner), command))
            }
            _ => None,
        };
        Some(Box::pin(async move {
            // The queue was full: queued once there is room, which the broker waits for.
            if let Some((inner, command)) = waiting {
                let _ = inner.publish.send(command).await;
                inner.overflow.fetch_sub(1, Ordering::AcqRel);
            }
            // Never acknowledged unless stored (fail closed).
            if rx.await.is_err() {
                std::future::pending::<()>().await;
            }
        }))
    }

    fn claim(
        &self,
        client_id: &str,
        will: Option<&ClusterWill>,
    ) -> ClusterFuture<Result<Option<StoredSession>, ClaimError>> {
        let owners = self.inner.owners.clone();
        let client_id = client_id.to_owned();
        let will = will.cloned();
        let node = self.inner.node().cloned();
        Box::pin(async move {
            owners
                .claim_with(&client_id, will.as_ref(), node.as_ref())
                .await
        })
    }

    fn will_settled(&self, client_id: &str, connection: u64) {
        let owners = self.inner.owners.clone();
        let client_id = client_id.to_owned();
        tokio::spawn(async move {
            if let Err(error) = owners.settle_will(&client_id, connection).await {
                tracing::debug!(%client_id, %error, "settled Will not recorded");
            }
        });
    }

    fn release(&self, client_id: &str) {
        let owners = self.inner.owners.clone();
        let client_id = client_id.to_owned();
        tokio::spawn(async move {
            if let Err(error) = owners.release(&client_id).await {
                tracing::debug!(%client_id, %error, "session release not recorded");
            }
        });
    }

    fn local_while_unavailable(&self) -> bool {
        self.inner.local_while_unavailable
    }

    fn is_available(&self) -> bool {
        self.inner.client.connection_state() == async_nats::connection::State::Connected
            && self.inner.catch_up.load(Ordering::Relaxed) == 0
    }
}
