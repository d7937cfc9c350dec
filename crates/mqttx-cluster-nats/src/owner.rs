//! Session ownership: which node of the cluster holds each client's session.
//!
//! One JetStream key-value bucket maps each client identifier (escaped into one key with
//! [`encode_token`]) to the identifier of the node that owns its session. An entry changes
//! only by create-if-absent or by an update naming the revision the node read, so the
//! revision is a fencing token: of two nodes claiming one client at once, exactly one
//! succeeds, and the other refuses its CONNECT.
//!
//! A node that claims a client owned by another node asks that node, by a NATS request on the
//! old owner's takeover subject, to close the client's connection (DISCONNECT 0x8E) and hand
//! its session over ([`ClusterNode::take_over`]); the reply is the session's byte form
//! ([`StoredSession::encode`]), or empty when the old owner held none. An old owner that does
//! not answer (it is gone) hands nothing over: the session is read from its journal.
//!
//! While a client with a Will is connected, its entry also holds the Will ([`ClusterWill`]):
//! the value is the node identifier, then a zero byte, the connection's number (8 bytes, big
//! endian), the Will's delay in seconds (4 bytes, big endian) and the Will's record
//! ([`Message::encode_record`]). A node that takes the entry of a node that stopped publishes
//! that Will, so a client's Will survives the node it was connected to.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_nats::jetstream::{self, kv};
use bytes::Bytes;
use futures_util::StreamExt as _;

use mqttx_broker::{
    ClaimError, ClusterNode, ClusterWill, ForeignSession, Message, StoredSession, journal_client,
};

use crate::journal::{purge_node, read_node};
use crate::proto::subject::{decode_token, encode_token};

/// Where the owners of sessions are recorded, and how takeovers are asked for.
#[derive(Clone, Debug)]
pub struct Ownership {
    client: async_nats::Client,
    kv: kv::Store,
    node_id: String,
    /// The takeover subjects are `{control}.{node token}.takeover`.
    control: String,
    timeout: Duration,
    /// The cluster's journal bucket: a dead owner's sessions are read from it.
    journal: Option<kv::Store>,
    /// Changes at each connection to NATS: the owners' watch starts again after a reconnect.
    reconnects: Option<tokio::sync::watch::Receiver<u64>>,
}

/// Journals of nodes that stopped, read once per pass over the owners: per node, per client.
type Journals = HashMap<String, HashMap<String, Vec<mqttx_broker::Entry>>>;

/// One client's entry: its owner, the Will of its connection there, and the revision.
#[derive(Debug)]
struct Entry {
    owner: String,
    will: Option<ClusterWill>,
    revision: u64,
}

/// The value of an entry owned by `node_id`, with the Will of the connection if it has one.
fn owner_value(node_id: &str, will: Option<&ClusterWill>) -> Bytes {
    let mut value = node_id.as_bytes().to_vec();
    if let Some(will) = will {
        match will.message.encode_record() {
            Ok(record) => {
                value.push(0);
                value.extend_from_slice(&will.connection.to_be_bytes());
                value.extend_from_slice(&will.delay.to_be_bytes());
                value.extend_from_slice(&record);
            }
            Err(error) => {
                tracing::warn!(topic = %will.message.topic, %error, "a Will that cannot be stored is not kept in the cluster");
            }
        }
    }
    value.into()
}

/// Reads an entry's value (see the module documentation): the owner, and the Will if one is
/// there and readable.
fn parse_value(value: &[u8]) -> (String, Option<ClusterWill>) {
    let Some(split) = value.iter().position(|&b| b == 0) else {
        return (String::from_utf8_lossy(value).into_owned(), None);
    };
    let owner = String::from_utf8_lossy(&value[..split]).into_owned();
    let rest = &value[split + 1..];
    let will = (rest.len() > 12).then(|| {
        let connection = u64::from_be_bytes(rest[..8].try_into().ok()?);
        let delay = u32::from_be_bytes(rest[8..12].try_into().ok()?);
        let message = Message::decode_record(&rest[12..]).ok()?;
        Some(ClusterWill::new(message, delay, connection))
    });
    (owner, will.flatten())
}

/// The wall clock and the process clock, read at one moment, for a session's byte form.
fn now() -> (std::time::Instant, u64) {
    let unix_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    (std::time::Instant::now(), unix_ms)
}

impl Ownership {
    /// Opens (creating it if need be) the bucket `bucket` with `replicas` copies. `node_id`
    /// names this node; `control` is the subject prefix of the nodes' takeover requests (keep
    /// it outside the subjects of any stream); `timeout` bounds every call on the engine.
    ///
    /// # Errors
    /// The bucket could not be created or opened.
    pub async fn open(
        client: async_nats::Client,
        bucket: &str,
        replicas: usize,
        node_id: &str,
        control: &str,
        timeout: Duration,
    ) -> Result<Self, async_nats::Error> {
        if node_id.contains('\0') {
            return Err("a node id must not contain a zero byte".into());
        }
        let js = jetstream::new(client.clone());
        let config = kv::Config {
            bucket: bucket.to_owned(),
            description: "mqttx: the node that owns each client's session".to_owned(),
            history: 1,
            num_replicas: replicas.max(1),
            storage: jetstream::stream::StorageType::File,
            ..Default::default()
        };
        let kv = match tokio::time::timeout(timeout, js.create_key_value(config)).await {
            Ok(Ok(kv)) => kv,
            Ok(Err(e)) => {
                // It may exist already with another configuration (e.g. replicas).
                match tokio::time::timeout(timeout, js.get_key_value(bucket)).await {
                    Ok(Ok(kv)) => kv,
                    _ => return Err(e.into()),
                }
            }
            Err(_) => return Err("timed out creating the sessions bucket".into()),
        };
        Ok(Self {
            client,
            kv,
            node_id: node_id.to_owned(),
            control: control.to_owned(),
            timeout,
            journal: None,
            reconnects: None,
        })
    }

    /// Reads the session of an owner that does not answer a takeover from the nodes' journal
    /// bucket ([`NatsJournal`](crate::NatsJournal)), and moves it out of that node's keys.
    #[must_use]
    pub fn with_journal(mut self, journal: kv::Store) -> Self {
        self.journal = Some(journal);
        self
    }

    /// Watches the owners again (from every entry's current value) whenever `reconnects`
    /// changes: the NATS client's connection count, which a restarted engine bumps while
    /// leaving the watch silent.
    #[must_use]
    pub fn with_reconnects(mut self, reconnects: tokio::sync::watch::Receiver<u64>) -> Self {
        self.reconnects = Some(reconnects);
        self
    }

    /// The session of `client_id` that node `previous` journaled, taken out of its keys.
    async fn recover_from_journal(&self, client_id: &str, previous: &str) -> Option<StoredSession> {
        self.take_from_journal(client_id, previous)
            .await
            .map(|found| found.session)
    }

    /// The session (and delayed Will) of `client_id` that node `previous` journaled, taken out
    /// of its keys.
    async fn take_from_journal(&self, client_id: &str, previous: &str) -> Option<ForeignSession> {
        let store = self.journal.as_ref()?;
        let entries = match read_node(store, previous, self.timeout).await {
            Ok(entries) => entries,
            Err(error) => {
                tracing::warn!(%client_id, node = %previous, %error, "cannot read the previous owner's journal");
                return None;
            }
        };
        self.recover(client_id, previous, entries).await
    }

    /// Like [`take_from_journal`](Self::take_from_journal), reading each node's journal once
    /// into `journals` (split per client) for all the sessions of that node taken in one pass.
    async fn take_from_journals(
        &self,
        journals: &mut Journals,
        client_id: &str,
        previous: &str,
    ) -> Option<ForeignSession> {
        let store = self.journal.as_ref()?;
        if !journals.contains_key(previous) {
            let entries = match read_node(store, previous, self.timeout).await {
                Ok(entries) => entries,
                Err(error) => {
                    tracing::warn!(%client_id, node = %previous, %error, "cannot read the previous owner's journal");
                    return None;
                }
            };
            let mut by_client: HashMap<String, Vec<mqttx_broker::Entry>> = HashMap::new();
            for entry in entries {
                if let Some(client) = journal_client(entry.0, &entry.1) {
                    by_client.entry(client.to_owned()).or_default().push(entry);
                }
            }
            journals.insert(previous.to_owned(), by_client);
        }
        let entries = journals.get_mut(previous)?.remove(client_id)?;
        self.recover(client_id, previous, entries).await
    }

    /// `client_id`'s session read from `entries` of node `previous`'s journal, and removed
    /// from that journal.
    async fn recover(
        &self,
        client_id: &str,
        previous: &str,
        entries: Vec<mqttx_broker::Entry>,
    ) -> Option<ForeignSession> {
        let store = self.journal.as_ref()?;
        match mqttx_broker::recover_session(client_id, entries) {
            Ok(Some(found)) => {
                if let Err(error) = purge_node(store, previous, &found.keys).await {
                    tracing::warn!(%client_id, node = %previous, %error, "cannot remove the session from the previous owner's journal");
                }
                tracing::info!(%client_id, node = %previous, "session recovered from the journal of a node that did not answer");
                Some(found)
            }
            Ok(None) => None,
            Err(error) => {
                tracing::warn!(%client_id, node = %previous, %error, "the previous owner's journal holds an unreadable session");
                None
            }
        }
    }

    /// The takeover subject of node `node_id`.
    fn takeover_subject(&self, node_id: &str) -> String {
        format!("{}.{}.takeover", self.control, encode_token(node_id))
    }

    /// The node recorded as the owner of `client_id`, if any.
    ///
    /// # Errors
    /// The engine did not answer.
    pub async fn owner(&self, client_id: &str) -> Result<Option<String>, ClaimError> {
        Ok(self.entry(client_id).await?.map(|entry| entry.owner))
    }

    /// The Will `client_id`'s entry holds for its connection, if any.
    ///
    /// # Errors
    /// The engine did not answer.
    pub async fn will(&self, client_id: &str) -> Result<Option<ClusterWill>, ClaimError> {
        Ok(self.entry(client_id).await?.and_then(|entry| entry.will))
    }

    /// `client_id`'s entry (`None`: absent or deleted).
    async fn entry(&self, client_id: &str) -> Result<Option<Entry>, ClaimError> {
        let key = encode_token(client_id);
        let entry = tokio::time::timeout(self.timeout, self.kv.entry(key))
            .await
            .map_err(|_| ClaimError::Unavailable)?
            .map_err(|_| ClaimError::Unavailable)?;
        Ok(entry
            .filter(|e| e.operation == kv::Operation::Put)
            .map(|e| {
                let (owner, will) = parse_value(&e.value);
                Entry {
                    owner,
                    will,
                    revision: e.revision,
                }
            }))
    }

    /// Makes this node the owner of `client_id`: creates the entry, or replaces another
    /// node's by compare-and-set and asks that node for the session, which is returned.
    ///
    /// # Errors
    /// [`ClaimError::Refused`] when another node's claim won the compare-and-set,
    /// [`ClaimError::Unavailable`] when the engine did not answer.
    pub async fn claim(&self, client_id: &str) -> Result<Option<StoredSession>, ClaimError> {
        self.claim_with(client_id, None, None).await
    }

    /// [`claim`](Self::claim), keeping `will` (the connecting client's Will) in the entry
    /// while the connection lasts. When the previous owner does not answer (it stopped), the
    /// Will of the client's connection there is published through `node` if it was due at once
    /// (a delayed Will is dropped: its client is back).
    ///
    /// # Errors
    /// As [`claim`](Self::claim).
    pub async fn claim_with(
        &self,
        client_id: &str,
        will: Option<&ClusterWill>,
        node: Option<&ClusterNode>,
    ) -> Result<Option<StoredSession>, ClaimError> {
        let key = encode_token(client_id);
        let me = owner_value(&self.node_id, will);
        let (previous, previous_will) = match self.entry(client_id).await? {
            Some(entry)
                if entry.owner == self.node_id && will.is_none() && entry.will.is_none() =>
            {
                return Ok(None);
            }
            Some(entry) if entry.owner == self.node_id => {
                // This node's already: the entry takes this connection's Will.
                self.replace(client_id, &key, me, entry.revision).await?;
                return Ok(None);
            }
            Some(Entry {
                owner,
                will: previous_will,
                revision,
            }) => {
                self.replace(client_id, &key, me, revision).await?;
                (owner, previous_will)
            }
            None => {
                let create = self.kv.create(&key, me);
                return match tokio::time::timeout(self.timeout, create).await {
                    Ok(Ok(_)) => Ok(None),
                    Ok(Err(e)) if e.kind() == kv::CreateErrorKind::AlreadyExists => {
                        tracing::debug!(%client_id, "session claim lost to another node");
                        Err(ClaimError::Refused)
                    }
                    _ => Err(ClaimError::Unavailable),
                };
            }
        };
        // This node owns the session now; the previous owner hands it over.
        let subject = self.takeover_subject(&previous);
        let request = self.client.request(subject, client_id.to_owned().into());
        let answer = tokio::time::timeout(self.timeout, request).await;
        let reply = match answer {
            Ok(Ok(reply)) => reply,
            _ => {
                match answer {
                    Ok(Err(error)) => {
                        tracing::warn!(%client_id, node = %previous, %error, "the previous owner did not hand the session over");
                    }
                    _ => {
                        tracing::warn!(%client_id, node = %previous, "the previous owner did not hand the session over in time");
                    }
                }
                // Its connection there ended when it stopped: a Will due at once is due now.
                if let (Some(node), Some(lost)) = (node, previous_will)
                    && lost.delay == 0
                {
                    tracing::info!(%client_id, node = %previous, topic = %lost.message.topic, "publishing the Will of a connection on a node that stopped");
                    node.publish(&lost.message);
                }
                return Ok(self.recover_from_journal(client_id, &previous).await);
            }
        };
        if reply.payload.is_empty() {
            return Ok(None);
        }
        let (now, unix_ms) = now();
        match StoredSession::decode(&reply.payload, now, unix_ms) {
            Ok(session) => Ok(Some(session)),
            Err(error) => {
                tracing::warn!(%client_id, node = %previous, %error, "the handed-over session could not be read");
                Ok(None)
            }
        }
    }

    /// Replaces `client_id`'s entry (bucket key `key`) by `value` if it is still at `revision`.
    async fn replace(
        &self,
        client_id: &str,
        key: &str,
        value: Bytes,
        revision: u64,
    ) -> Result<(), ClaimError> {
        let update = self.kv.update(key, value, revision);
        match tokio::time::timeout(self.timeout, update).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                tracing::debug!(%client_id, "session claim lost to another node");
                Err(ClaimError::Refused)
            }
            _ => Err(ClaimError::Unavailable),
        }
    }

    /// Claims every session whose owner is not in `alive` (the nodes whose heartbeat is
    /// current) and reads it from that node's journal for `node` to keep until its client
    /// comes back ([`ClusterNode::adopt`]): its Session Expiry and delayed Will are honoured
    /// here. Of several nodes doing this at once, the compare-and-set lets one win each
    /// session. Returns how many sessions were adopted.
    pub async fn adopt_orphans(&self, alive: &HashSet<String>, node: &ClusterNode) -> usize {
        let listed = async {
            let mut out = Vec::new();
            let mut keys = self.kv.keys().await.ok()?;
            while let Some(key) = keys.next().await {
                out.push(key.ok()?);
            }
            Some(out)
        };
        let Ok(Some(keys)) = tokio::time::timeout(self.timeout, listed).await else {
            return 0;
        };
        let mut adopted = 0;
        // Each dead node's journal is read once for all its sessions.
        let mut journals = Journals::new();
        for key in keys {
            let Ok(client_id) = decode_token(&key) else {
                continue;
            };
            let Ok(Some(Entry {
                owner,
                will,
                revision,
            })) = self.entry(&client_id).await
            else {
                continue;
            };
            if owner == self.node_id || alive.contains(&owner) {
                continue;
            }
            let me = owner_value(&self.node_id, None);
            let update = self.kv.update(&key, me, revision);
            if !matches!(tokio::time::timeout(self.timeout, update).await, Ok(Ok(_))) {
                continue;
            }
            if node.holds(&client_id) {
                // This node serves the client (the dead owner's claim came after a partition
                // here): the entry is this node's again, and nothing is to be read.
                continue;
            }
            let found = self
                .take_from_journals(&mut journals, &client_id, &owner)
                .await;
            let Some(found) = found else {
                // Nothing journaled (it ended with its connection): nothing to keep, and the
                // Will of the connection, if any, is due now.
                let _ = self.release(&client_id).await;
                if let Some(will) = will {
                    tracing::info!(%client_id, node = %owner, topic = %will.message.topic, "publishing the Will of a connection on a node that stopped");
                    node.publish(&will.message);
                }
                continue;
            };
            // A delayed Will journaled after the connection ended, or the Will of the
            // connection, due after its delay (counted from now: when the node stopped is
            // not known more closely).
            let will = found.will.or_else(|| {
                will.map(|will| {
                    let delay = Duration::from_secs(u64::from(will.delay));
                    (std::time::Instant::now() + delay, will.message)
                })
            });
            if node.adopt(&client_id, found.session, will) {
                tracing::info!(%client_id, node = %owner, "adopted the session of a node that stopped");
                adopted += 1;
            }
        }
        adopted
    }

    /// Watches the owners: when another node becomes the owner of a client this node still
    /// holds and has not asked for it within `grace` (this node was cut off, and the takeover
    /// request never came), closes the client's connection here (DISCONNECT 0x8E) and drops
    /// its session. Runs on a task of its own until the broker is gone.
    ///
    /// # Errors
    /// The watch could not be started.
    pub async fn fence(
        &self,
        node: ClusterNode,
        grace: Duration,
    ) -> Result<tokio::task::JoinHandle<()>, async_nats::Error> {
        let mut watch = self.kv.watch_all().await?;
        let this = self.clone();
        let mut reconnects = self.reconnects.clone();
        if let Some(reconnects) = &mut reconnects {
            reconnects.mark_unchanged();
        }
        Ok(tokio::spawn(async move {
            loop {
                let reconnected = async {
                    match &mut reconnects {
                        Some(reconnects) => reconnects.changed().await.is_ok(),
                        None => std::future::pending().await,
                    }
                };
                let entry = tokio::select! {
                    entry = watch.next() => entry,
                    again = reconnected => {
                        if !again {
                            return;
                        }
                        None
                    }
                };
                if !node.is_alive() {
                    return;
                }
                let Some(entry) = entry else {
                    // Reconnected, or the watch ended: every entry again, then its changes.
                    match this.kv.watch_with_history(">").await {
                        Ok(again) => watch = again,
                        Err(error) => {
                            tracing::warn!(%error, "cannot watch the session owners again; retrying");
                            tokio::time::sleep(Duration::from_secs(1)).await;
                            if let Some(reconnects) = &mut reconnects {
                                reconnects.mark_changed();
                            }
                        }
                    }
                    continue;
                };
                let Ok(entry) = entry else {
                    continue;
                };
                if entry.operation != kv::Operation::Put
                    || parse_value(&entry.value).0 == this.node_id
                {
                    continue;
                }
                let Ok(client_id) = decode_token(&entry.key) else {
                    continue;
                };
                if !node.holds(&client_id) {
                    continue;
                }
                let (node, this) = (node.clone(), this.clone());
                tokio::spawn(async move {
                    tokio::time::sleep(grace).await;
                    let owner = this.owner(&client_id).await.ok().flatten();
                    if node.holds(&client_id) && owner.as_ref().is_some_and(|o| *o != this.node_id)
                    {
                        tracing::warn!(%client_id, owner = ?owner, "another node owns this session: closing it here");
                        let _ = node.take_over(&client_id).await;
                    }
                });
            }
        }))
    }

    /// Removes this node's entry for `client_id`, unless another node owns it by now.
    ///
    /// # Errors
    /// The engine did not answer.
    pub async fn release(&self, client_id: &str) -> Result<(), ClaimError> {
        if let Some(entry) = self.entry(client_id).await?
            && entry.owner == self.node_id
        {
            let delete = self
                .kv
                .delete_expect_revision(encode_token(client_id), Some(entry.revision));
            // A failed revision check means another node claimed it meanwhile: its entry
            // stays.
            let _ = tokio::time::timeout(self.timeout, delete).await;
        }
        Ok(())
    }

    /// Removes the Will of connection `connection` from this node's entry for `client_id`: the
    /// connection ended and this node settled its Will. A later connection's Will, or another
    /// node's entry, stays.
    ///
    /// # Errors
    /// The engine did not answer.
    pub async fn settle_will(&self, client_id: &str, connection: u64) -> Result<(), ClaimError> {
        if let Some(entry) = self.entry(client_id).await?
            && entry.owner == self.node_id
            && entry.will.is_some_and(|will| will.connection == connection)
        {
            let value = owner_value(&self.node_id, None);
            let update = self
                .kv
                .update(encode_token(client_id), value, entry.revision);
            // A failed revision check means a claim changed the entry meanwhile: it stays.
            let _ = tokio::time::timeout(self.timeout, update).await;
        }
        Ok(())
    }

    /// Answers the other nodes' takeover requests for this node's sessions, through `node`,
    /// on a task of its own, until the broker is gone or the connection closes.
    ///
    /// # Errors
    /// The subscription could not be made.
    pub async fn serve_takeovers(
        &self,
        node: ClusterNode,
    ) -> Result<tokio::task::JoinHandle<()>, async_nats::Error> {
        let mut requests = self
            .client
            .subscribe(self.takeover_subject(&self.node_id))
            .await?;
        let client = self.client.clone();
        Ok(tokio::spawn(async move {
            while let Some(request) = requests.next().await {
                if !node.is_alive() {
                    return;
                }
                let Some(reply) = request.reply.clone() else {
                    continue;
                };
                let Ok(client_id) = std::str::from_utf8(&request.payload).map(str::to_owned) else {
                    continue;
                };
                let node = node.clone();
                let client = client.clone();
                // Each takeover waits for its connection to close: one task each.
                tokio::spawn(async move {
                    let session = node.take_over(&client_id).await;
                    let mut bytes = Vec::new();
                    if let Some(session) = session {
                        let (now, unix_ms) = now();
                        session.encode(now, unix_ms, &mut bytes);
                    }
                    tracing::debug!(%client_id, bytes = bytes.len(), "session handed over");
                    if let Err(error) = client.publish(reply, bytes.into()).await {
                        tracing::warn!(%client_id, %error, "could not answer a takeover");
                    }
                });
            }
        }))
    }
}
