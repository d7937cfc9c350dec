//! [`Cluster`]: the seam through which a broker becomes one node of several serving one MQTT
//! service, and [`ClusterNode`], the handle through which the cluster hands this node what the
//! other nodes publish.
//!
//! See [`Cluster`] for what the broker does with one.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Weak};

use mqttx_router::{TopicFilter, TopicName};

use crate::proto::Message;
use crate::store::StoredSession;

/// A future the broker awaits, boxed so that [`Cluster`] stays object safe.
pub type ClusterFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// Why the cluster refused to give this node a client identifier.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClaimError {
    /// The engine could not be reached or did not answer in time: the CONNECT is refused with
    /// 0x88 Server unavailable.
    Unavailable,
    /// Another node holds the session and would not give it up.
    Refused,
}

impl fmt::Display for ClaimError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unavailable => f.write_str("the cluster's engine is unavailable"),
            Self::Refused => f.write_str("another node holds the session"),
        }
    }
}

impl std::error::Error for ClaimError {}

/// The Will of a connection, handed to the cluster with its claim ([`Cluster::claim`]) so that
/// it is published even if this node stops while the connection lasts: a node that adopts
/// this node's clients then publishes it, after [`delay`](Self::delay) seconds.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClusterWill {
    /// The Will.
    pub message: Message,
    /// Seconds between the end of the connection and the Will's publication: the smaller of
    /// its Will Delay Interval and the session's Session Expiry Interval.
    pub delay: u32,
    /// Which connection set it, unique on this node: [`Cluster::will_settled`] names it, so
    /// that a later connection's Will is never taken for this one's.
    pub connection: u64,
}

impl ClusterWill {
    /// The Will `message` of connection `connection`, due `delay` seconds after the
    /// connection ends.
    pub fn new(message: Message, delay: u32, connection: u64) -> Self {
        Self {
            message,
            delay,
            connection,
        }
    }
}

/// A broker's link to the other nodes of its cluster.
///
/// A broker built without a cluster (the default) pays one `Option` test per publish,
/// subscription change and CONNECT. With one ([`Builder::cluster`](crate::Builder::cluster)):
///
/// - every local subscription added or removed is reported ([`Cluster::subscribed`],
///   [`Cluster::unsubscribed`]), once per subscriber and filter, so the cluster can keep one
///   reference-counted interest per distinct filter;
/// - every message published on this node (by a client, a Will, the application through
///   [`Broker::publish`](crate::Broker::publish), the broker's `$SYS` statistics excepted) is
///   delivered to this node's normal subscribers and then handed to [`Cluster::publish`];
///   shared subscriptions are left to the cluster, which must pick one member cluster-wide
///   and hand the message to its node through [`ClusterNode::deliver_shared`];
/// - a QoS 1 or 2 PUBLISH is acknowledged (PUBACK, PUBREC) only once the future
///   [`Cluster::publish`] returned for it has completed, that is once the cluster has stored
///   the message;
/// - a CONNECT is accepted only once [`Cluster::claim`] has made this node the owner of the
///   client identifier, and resumes the session the previous owner handed over; a node that
///   loses a client identifier to another node is asked for the session through
///   [`ClusterNode::take_over`], which closes the connection here (DISCONNECT 0x8E) and hands
///   the session over;
/// - while [`Cluster::is_available`] is false, CONNECTs are refused with 0x88 Server
///   unavailable (0x03 for MQTT 3.1.x): a node cut off from its engine fails closed;
/// - a connection's Will goes to the cluster with its claim (once the handler's
///   [`on_publish`](crate::Handler::on_publish) accepted it, at CONNECT), so that the cluster
///   can publish it should this node stop while the connection lasts; once the connection has
///   ended and this node has settled the Will (published it, kept it as a delayed Will, or
///   dropped it after a normal DISCONNECT), [`Cluster::will_settled`] says so.
///
/// The broker calls these methods from synchronous sections, some under its shared lock: an
/// implementation must return at once (queueing the work for a task of its own), and must
/// never call back into the broker from within them, `attach` excepted (it is called once,
/// holding no lock). Its own tasks call the [`ClusterNode`] handle, which takes the broker's
/// lock briefly.
pub trait Cluster: Send + Sync + fmt::Debug + 'static {
    /// Called once, when the broker is built, with the handle through which the cluster
    /// hands this node what other nodes publish.
    fn attach(&self, node: ClusterNode);

    /// A local subscriber subscribed to `filter` (shared or not). Called once per subscriber
    /// and filter: a SUBSCRIBE that replaces an existing subscription is not reported again.
    ///
    /// The future returned, if any, completes once messages published anywhere in the
    /// cluster from then on reach this node: the SUBACK waits for it, so that a client that
    /// got its SUBACK misses nothing published on another node afterwards. Its work must be
    /// under way when `subscribed` returns.
    fn subscribed(&self, filter: &TopicFilter) -> Option<ClusterFuture<()>>;

    /// A local subscriber's subscription to `filter` was removed (UNSUBSCRIBE, the end of a
    /// session, a Clean Start).
    fn unsubscribed(&self, filter: &TopicFilter);

    /// A message published on this node, already delivered to its normal (not shared)
    /// subscribers. The cluster delivers it to the other nodes' normal subscribers (never
    /// back to this node's, through [`ClusterNode::deliver`]) and to one member of each
    /// matching shared group cluster-wide (this node's included, through
    /// [`ClusterNode::deliver_shared`]); a retained message (RETAIN 1) is also kept, or
    /// cleared by an empty payload, for every node ([`ClusterNode::retain`]).
    ///
    /// For QoS 1 and 2 it returns a future that completes once the cluster has stored the
    /// message; the publisher's PUBACK or PUBREC waits for it, so a cluster whose engine is
    /// away simply never completes it (fail closed). `None`: nothing to wait for. The work
    /// must be under way when `publish` returns: the broker awaits these futures one after
    /// the other, in the order of the messages, on one task.
    fn publish(&self, message: &Message) -> Option<ClusterFuture<()>>;

    /// Makes this node the owner of `client_id`'s session before its CONNECT is accepted,
    /// taking it over from another node if need be: that node closes its connection and hands
    /// the session over ([`ClusterNode::take_over`]), which the claim returns. The CONNECT
    /// then resumes it (Clean Start 0: its subscriptions, queued messages and messages in
    /// flight) or discards it (Clean Start 1).
    ///
    /// `will` is the Will of the connecting client, if it has one the handler accepted: the
    /// cluster keeps it with the claim until [`will_settled`](Self::will_settled), and has
    /// another node publish it should this one stop meanwhile ([`ClusterNode::publish`],
    /// [`ClusterNode::adopt`]).
    ///
    /// The default grants the claim at once, with no session.
    fn claim(
        &self,
        client_id: &str,
        will: Option<&ClusterWill>,
    ) -> ClusterFuture<Result<Option<StoredSession>, ClaimError>> {
        let _ = (client_id, will);
        Box::pin(std::future::ready(Ok(None)))
    }

    /// The connection `connection` of `client_id`, whose Will went with its claim, has ended
    /// and its Will is settled here: the cluster forgets it (unless a later connection's Will
    /// replaced it). Not called when [`release`](Self::release) is, which forgets it too.
    fn will_settled(&self, client_id: &str, connection: u64) {
        let _ = (client_id, connection);
    }

    /// This node no longer holds `client_id`'s session: its connection ended with its session
    /// (Session Expiry Interval 0), or the session kept after it expired. Not called when
    /// another node took the session over ([`ClusterNode::take_over`]), nor when a new
    /// connection on this node took it over.
    fn release(&self, client_id: &str) {
        let _ = client_id;
    }

    /// Whether this node is in touch with the cluster: while it is not, new CONNECTs are
    /// refused with 0x88 Server unavailable. The default is always.
    fn is_available(&self) -> bool {
        true
    }

    /// Whether messages still go from this node's publishers to its own subscribers while it
    /// is unavailable (QoS 0 ones, in effect: QoS 1 and 2 PUBLISHes are not acknowledged
    /// then, so their publishers send them again). The default is yes; `false` makes a node
    /// cut off from its cluster deliver nothing.
    fn local_while_unavailable(&self) -> bool {
        true
    }
}

/// What the broker does for its [`ClusterNode`] handle (implemented by the broker's shared
/// state, behind a `Weak` so that the cluster does not keep a dropped broker alive).
pub(crate) trait LocalNode: Send + Sync {
    fn holds(&self, client_id: &str) -> bool;
    fn publish(self: Arc<Self>, message: &Message);
    fn deliver(&self, message: &Message);
    fn deliver_stored(self: Arc<Self>, message: &Message) -> ClusterFuture<()>;
    fn deliver_shared(&self, filter: &TopicFilter, message: &Message) -> bool;
    fn deliver_shared_tracked(
        self: Arc<Self>,
        filter: &TopicFilter,
        message: &Message,
    ) -> Option<ClusterFuture<bool>>;
    fn retain(&self, topic: &TopicName, message: Option<&Message>);
    fn take_over(self: Arc<Self>, client_id: String) -> ClusterFuture<Option<StoredSession>>;
    fn adopt(
        &self,
        client_id: &str,
        session: StoredSession,
        will: Option<(std::time::Instant, Message)>,
    ) -> bool;
}

/// The cluster's handle on its broker: cheap to clone, and inert once the broker is dropped.
#[derive(Clone)]
pub struct ClusterNode {
    local: Weak<dyn LocalNode>,
}

impl fmt::Debug for ClusterNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterNode")
            .field("alive", &(self.local.strong_count() > 0))
            .finish()
    }
}

impl ClusterNode {
    pub(crate) fn new(local: Weak<dyn LocalNode>) -> Self {
        Self { local }
    }

    fn local(&self) -> Option<Arc<dyn LocalNode>> {
        self.local.upgrade()
    }

    /// Whether the broker still exists.
    pub fn is_alive(&self) -> bool {
        self.local.strong_count() > 0
    }

    /// Whether `client_id` is connected here or has a session kept here.
    pub fn holds(&self, client_id: &str) -> bool {
        self.local().is_some_and(|local| local.holds(client_id))
    }

    /// Publishes `message` as if published on this node (as [`Broker::publish`] does): to
    /// this node's subscribers and, through [`Cluster::publish`], to the rest of the cluster,
    /// retained if RETAIN is set. For the Will of a client whose node stopped.
    ///
    /// [`Broker::publish`]: crate::Broker::publish
    pub fn publish(&self, message: &Message) {
        if let Some(local) = self.local() {
            local.publish(message);
        }
    }

    /// Delivers a message another node published to this node's normal subscribers: each
    /// matching subscriber once (at the highest QoS of its matching subscriptions), shared
    /// subscriptions and retained state left alone. A persistent session whose client is away
    /// gets QoS 1 and 2 messages queued.
    pub fn deliver(&self, message: &Message) {
        if let Some(local) = self.local() {
            local.deliver(message);
        }
    }

    /// Like [`deliver`](Self::deliver), for a message the cluster keeps until this node has
    /// taken it: the future completes once what the delivery made durable here (the message
    /// queued or in flight for persistent sessions, with a journal) is committed, so the
    /// cluster may then forget the message for this node.
    pub fn deliver_stored(&self, message: &Message) -> ClusterFuture<()> {
        match self.local() {
            Some(local) => local.deliver_stored(message),
            None => Box::pin(std::future::ready(())),
        }
    }

    /// Delivers a message to one member of this node's shared group `filter`
    /// (`$share/{ShareName}/{filter}`), which the cluster picked for it. Returns false when
    /// the group has no member here (any more), so the cluster may try another node.
    pub fn deliver_shared(&self, filter: &TopicFilter, message: &Message) -> bool {
        self.local()
            .is_some_and(|local| local.deliver_shared(filter, message))
    }

    /// Like [`deliver_shared`](Self::deliver_shared), for a message the cluster keeps until a
    /// member has taken it: `None` when the group has no member here (any more); otherwise a
    /// future telling what became of the member's copy. `true`: taken care of, that is
    /// acknowledged by the member (PUBACK, or PUBREC at QoS 2), expired, or kept with the
    /// member's persistent session when its connection ended (what that journaled is
    /// committed by then); the cluster may forget the message. `false`: not delivered (the
    /// member's connection ended with its session, or its queue was full), so the cluster
    /// gives it to another member, here or on another node.
    pub fn deliver_shared_tracked(
        &self,
        filter: &TopicFilter,
        message: &Message,
    ) -> Option<ClusterFuture<bool>> {
        self.local()?.deliver_shared_tracked(filter, message)
    }

    /// Sets this node's copy of the retained message of `topic` (`None` clears it), as set on
    /// another node; nothing is delivered.
    pub fn retain(&self, topic: &TopicName, message: Option<&Message>) {
        if let Some(local) = self.local() {
            local.retain(topic, message);
        }
    }

    /// Keeps, as the session of a client that is away, `client_id`'s session from a node that
    /// died (read from its journal), with its delayed Will (when it is due, and the Will) if it
    /// had one: here it collects messages for its client, ends at its Session Expiry Interval,
    /// and its Will is published when due unless the client comes back first. Returns false,
    /// changing nothing, when the client is connected here, this node already holds a session
    /// for it, or the stored-session limit is reached.
    pub fn adopt(
        &self,
        client_id: &str,
        session: StoredSession,
        will: Option<(std::time::Instant, Message)>,
    ) -> bool {
        self.local()
            .is_some_and(|local| local.adopt(client_id, session, will))
    }

    /// Another node now owns `client_id`'s session: closes its connection here, if any, with
    /// DISCONNECT 0x8E Session taken over, waits until the connection has ended, and removes
    /// the session from this node, returning it (subscriptions, queued messages, messages in
    /// flight with their Packet Identifiers, inbound QoS 2 identifiers) for the new owner.
    /// `None`: this node held no session for `client_id` (none, or one that ended with its
    /// connection).
    pub fn take_over(&self, client_id: &str) -> ClusterFuture<Option<StoredSession>> {
        match self.local() {
            Some(local) => local.take_over(client_id.to_owned()),
            None => Box::pin(std::future::ready(None)),
        }
    }
}
