//! [`Security`]: a [`Handler`] that authenticates, authorizes and rate-limits, then hands
//! every hook to the application's own handler.
//!
//! It is built only on the public hook API: an application can use it as it is, wrap it, or
//! replace any part (a different password store, its own ACL) with its own handler.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use mqttx_broker::codec::{ProtocolVersion, QoS, ReasonCode};
use mqttx_broker::router::{SubscribeOptions, TopicFilter};
use mqttx_broker::{
    AllowAll, AppMessage, AuthDecision, AuthRequest, ClientInfo, CloseReason, ConnectRefusal,
    ConnectRequest, Delivered, Handler, Message, MessageAction, PublishDecision, SubscribeDecision,
};

use crate::acl::{Acl, AclDecision, AclRule};
use crate::limits::{RateTable, TokenBucket};
use crate::password::{PasswordFile, PasswordHash};
use crate::scram::{self, ScramServer};

/// The security settings: the `[security]` table of `mqttx broker`'s configuration file.
///
/// With the defaults nothing is checked: anonymous clients are allowed, there is no password
/// file and no ACL, and no rate limit applies (the broker's own limits, such as
/// `max_connections`, still do). Rate limits have no finite default because no single value
/// suits both a loopback benchmark opening 10 000 connections and a fleet behind one NAT
/// address; set them for any listener reachable from outside.
///
/// ```toml
/// [security]
/// allow_anonymous = false
/// password_file = "/etc/mqttx/passwd"      # `mqttx passwd` or mosquitto_passwd
/// acl_file = "/etc/mqttx/acl"              # Mosquitto's acl_file format (optional)
/// max_connections_per_address = 100
/// connection_rate = 10                     # new connections per second per address
/// connection_burst = 20
/// message_rate = 1000                      # PUBLISH per second per client
/// byte_rate = 1048576                      # payload bytes per second per client
/// max_subscriptions = 1000                 # per client
/// max_retained_size = 65536                # payload bytes of a retained message
///
/// [[security.acl]]
/// permission = "allow"
/// access = "both"
/// topic = "devices/%c/#"
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
#[non_exhaustive]
pub struct SecurityConfig {
    /// Whether clients without a user name (and without enhanced authentication) may connect
    /// (default `true`).
    pub allow_anonymous: bool,
    /// A password file (Mosquitto's format; `$7$`, `$6$` and `$scram-sha-256$` entries).
    /// With one, a client that gives a user name must give that user's password; SCRAM-SHA-256
    /// enhanced authentication is offered for `$scram-sha-256$` entries.
    pub password_file: Option<PathBuf>,
    /// Mosquitto's `acl_file`; its rules come after those of [`acl`](Self::acl).
    pub acl_file: Option<PathBuf>,
    /// ACL rules, first match decides (see [`crate::acl`]). With neither rules nor a file,
    /// every topic is open.
    pub acl: Vec<AclRule>,
    /// Use the TLS client certificate's identity (subject CN, else the first SAN) as the user
    /// name, as Mosquitto's `use_identity_as_username` (default `false`).
    pub use_identity_as_username: bool,
    /// The most connections from one source address (default: no limit).
    pub max_connections_per_address: Option<u32>,
    /// New connections per second from one source address (default: no limit); over it,
    /// CONNACK 0x9F for MQTT 5.0, the connection closed for 3.1.x.
    pub connection_rate: Option<u32>,
    /// How many new connections one source address may open at once before
    /// [`connection_rate`](Self::connection_rate) applies (default: the rate, at least 1).
    pub connection_burst: Option<u32>,
    /// New connections per second in all (the listener's limit; default: no limit).
    pub total_connection_rate: Option<u32>,
    /// PUBLISH packets per second per client (default: no limit): QoS 0 over it is dropped
    /// and counted, QoS 1 and 2 get PUBACK/PUBREC 0x97 Quota exceeded (MQTT 5.0; 0x96 Message
    /// rate too high is a DISCONNECT code only, Table 2-6), and MQTT 3.1.x clients are
    /// disconnected (0x96) rather than told a false success.
    pub message_rate: Option<u32>,
    /// Payload bytes per second per client (default: no limit), with the same consequences.
    pub byte_rate: Option<u32>,
    /// The most subscriptions per client (default 10 000); more get 0x97 Quota exceeded.
    pub max_subscriptions: usize,
    /// The largest retained payload (default: no limit beyond the packet size); a larger
    /// retained PUBLISH gets 0x97 Quota exceeded and is neither retained nor delivered.
    pub max_retained_size: Option<usize>,
    /// Settings per named listener: anonymous access and a connection rate of its own.
    pub listeners: Vec<ListenerSecurity>,
}

impl SecurityConfig {
    /// Whether anonymous clients may connect through the listener named `listener`.
    pub fn allows_anonymous_on(&self, listener: Option<&str>) -> bool {
        self.listener(listener)
            .and_then(|l| l.allow_anonymous)
            .unwrap_or(self.allow_anonymous)
    }

    fn listener(&self, name: Option<&str>) -> Option<&ListenerSecurity> {
        let name = name?;
        self.listeners.iter().find(|l| l.name == name)
    }
}

impl Default for SecurityConfig {
    fn default() -> Self {
        Self {
            allow_anonymous: true,
            password_file: None,
            acl_file: None,
            acl: Vec::new(),
            use_identity_as_username: false,
            max_connections_per_address: None,
            connection_rate: None,
            connection_burst: None,
            total_connection_rate: None,
            message_rate: None,
            byte_rate: None,
            max_subscriptions: 10_000,
            max_retained_size: None,
            listeners: Vec::new(),
        }
    }
}

/// Settings for one named listener (`[[security.listeners]]`; the broker's `[[listeners]]`
/// table names it with `name = "..."`). What it leaves out comes from [`SecurityConfig`].
///
/// ```toml
/// [[security.listeners]]
/// name = "public"
/// allow_anonymous = false
/// connection_rate = 50          # new connections per second on this listener, all addresses
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(deny_unknown_fields))]
#[non_exhaustive]
pub struct ListenerSecurity {
    /// The listener's name.
    pub name: String,
    /// Overrides [`SecurityConfig::allow_anonymous`] on this listener.
    #[cfg_attr(feature = "serde", serde(default))]
    pub allow_anonymous: Option<bool>,
    /// New connections per second accepted on this listener, from all addresses together
    /// (default: no limit); over it, CONNACK 0x9F (MQTT 5.0) or a close (3.1.x).
    #[cfg_attr(feature = "serde", serde(default))]
    pub connection_rate: Option<u32>,
    /// How many new connections may arrive at once before `connection_rate` applies
    /// (default: the rate).
    #[cfg_attr(feature = "serde", serde(default))]
    pub connection_burst: Option<u32>,
}

impl ListenerSecurity {
    /// Settings for the listener `name`, all inherited.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            allow_anonymous: None,
            connection_rate: None,
            connection_burst: None,
        }
    }
}

/// Why the security configuration could not be loaded.
#[derive(Debug)]
#[non_exhaustive]
pub enum SecurityError {
    /// A file could not be read.
    Io(PathBuf, std::io::Error),
    /// The password file is invalid.
    Password(PathBuf, crate::PasswordError),
    /// An ACL (file or inline rules) is invalid.
    Acl(Option<PathBuf>, crate::acl::AclError),
}

impl fmt::Display for SecurityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Io(path, e) => write!(f, "{}: {e}", path.display()),
            Self::Password(path, e) => write!(f, "{}: {e}", path.display()),
            Self::Acl(Some(path), e) => write!(f, "{}: {e}", path.display()),
            Self::Acl(None, e) => write!(f, "security.acl rule {}: {}", e.line, e.message),
        }
    }
}

impl std::error::Error for SecurityError {}

/// What [`Security`] checks, loaded from a [`SecurityConfig`]; replaced whole on reload.
#[derive(Debug)]
struct Rules {
    config: SecurityConfig,
    passwords: Option<PasswordFile>,
    acl: Option<Acl>,
}

impl Rules {
    fn load(config: SecurityConfig) -> Result<Self, SecurityError> {
        let read = |path: &PathBuf| {
            std::fs::read_to_string(path).map_err(|e| SecurityError::Io(path.clone(), e))
        };
        let passwords = match &config.password_file {
            Some(path) => Some(
                PasswordFile::parse(&read(path)?)
                    .map_err(|e| SecurityError::Password(path.clone(), e))?,
            ),
            None => None,
        };
        let mut rules = Vec::new();
        if !config.acl.is_empty() {
            rules = Acl::new(config.acl.clone())
                .map_err(|e| SecurityError::Acl(None, e))?
                .rules()
                .to_vec();
        }
        if let Some(path) = &config.acl_file {
            let file = Acl::parse_mosquitto(&read(path)?)
                .map_err(|e| SecurityError::Acl(Some(path.clone()), e))?;
            rules.extend_from_slice(file.rules());
        }
        let acl = if config.acl.is_empty() && config.acl_file.is_none() {
            None
        } else {
            Some(Acl::new(rules).map_err(|e| SecurityError::Acl(None, e))?)
        };
        Ok(Self {
            config,
            passwords,
            acl,
        })
    }
}

/// Counters of what [`Security`] refused.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SecurityStats {
    /// CONNECTs refused: bad or missing credentials, anonymous not allowed.
    pub refused_connects: u64,
    /// CONNECTs refused by a connection limit or rate.
    pub rate_limited_connects: u64,
    /// PUBLISH packets (and Wills) the ACL refused.
    pub denied_publishes: u64,
    /// Subscriptions the ACL refused.
    pub denied_subscriptions: u64,
    /// PUBLISH packets over a message or byte rate.
    pub rate_limited_publishes: u64,
    /// Subscriptions over `max_subscriptions`, retained messages over `max_retained_size`.
    pub quota_exceeded: u64,
    /// SCRAM exchanges that failed.
    pub failed_authentications: u64,
}

#[derive(Debug, Default)]
struct Counters {
    refused_connects: AtomicU64,
    rate_limited_connects: AtomicU64,
    denied_publishes: AtomicU64,
    denied_subscriptions: AtomicU64,
    rate_limited_publishes: AtomicU64,
    quota_exceeded: AtomicU64,
    failed_authentications: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// A SCRAM exchange waiting for its client-final message.
#[derive(Debug)]
struct PendingScram {
    server: ScramServer,
    since: Instant,
}

/// The most SCRAM exchanges in progress at once, and how long one may wait.
const MAX_PENDING_SCRAM: usize = 10_000;
const SCRAM_TIMEOUT: Duration = Duration::from_secs(60);

/// Connection accounting per source address.
#[derive(Debug)]
struct ConnectionLimits {
    per_address: RateTable<Option<std::net::IpAddr>>,
    total: Option<TokenBucket>,
    per_listener: HashMap<String, TokenBucket>,
    open: HashMap<Option<std::net::IpAddr>, u32>,
}

/// Per-connection state: the application's session plus what the checks need.
#[derive(Debug, Default)]
pub struct SecuritySession<S> {
    /// The application handler's own session.
    pub inner: S,
    user: Option<String>,
    address: Option<std::net::IpAddr>,
    messages: Option<Mutex<TokenBucket>>,
    bytes: Option<Mutex<TokenBucket>>,
    subscriptions: Mutex<HashSet<String>>,
}

impl<S> SecuritySession<S> {
    /// The user name the client authenticated as (from CONNECT, SCRAM, or the TLS identity).
    pub fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }
}

/// A [`Handler`] that checks credentials, ACLs and limits, then calls `H`.
///
/// ```
/// use mqttx_auth::{Security, SecurityConfig};
/// use mqttx_auth::acl::{AclRule, Access, Permission};
///
/// let mut config = SecurityConfig::default();
/// config.allow_anonymous = false;
/// config.acl = vec![AclRule::new(Permission::Allow, Access::Both, "users/%u/#")];
/// let security = Security::new(config)?; // wraps `AllowAll`; `Security::wrap` takes yours
/// let broker = mqttx_broker::Broker::builder().handler(security).build();
/// # let _ = broker;
/// # Ok::<(), mqttx_auth::SecurityError>(())
/// ```
pub struct Security<H: Handler = AllowAll> {
    inner: H,
    rules: RwLock<Arc<Rules>>,
    limits: Mutex<ConnectionLimits>,
    scram: Mutex<HashMap<String, PendingScram>>,
    /// Users authenticated by SCRAM, by client identifier, until `on_connect` takes them.
    scram_users: Mutex<HashMap<String, String>>,
    counters: Counters,
}

impl<H: Handler> fmt::Debug for Security<H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Security")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl Security<AllowAll> {
    /// Security in front of the allow-all handler (what `mqttx broker` runs).
    pub fn new(config: SecurityConfig) -> Result<Self, SecurityError> {
        Self::wrap(AllowAll, config)
    }
}

fn limits_for(config: &SecurityConfig, now: Instant) -> ConnectionLimits {
    let rate = config.connection_rate.unwrap_or(u32::MAX);
    let burst = config.connection_burst.unwrap_or(rate).max(1);
    ConnectionLimits {
        per_address: RateTable::new(rate, burst, 100_000),
        total: config
            .total_connection_rate
            .map(|r| TokenBucket::new(r, r.max(1), now)),
        per_listener: config
            .listeners
            .iter()
            .filter_map(|l| {
                let rate = l.connection_rate?;
                let burst = l.connection_burst.unwrap_or(rate).max(1);
                Some((l.name.clone(), TokenBucket::new(rate, burst, now)))
            })
            .collect(),
        open: HashMap::new(),
    }
}

impl<H: Handler> Security<H> {
    /// Security in front of `inner`: loads the files the configuration names.
    pub fn wrap(inner: H, config: SecurityConfig) -> Result<Self, SecurityError> {
        let limits = limits_for(&config, Instant::now());
        Ok(Self {
            inner,
            rules: RwLock::new(Arc::new(Rules::load(config)?)),
            limits: Mutex::new(limits),
            scram: Mutex::default(),
            scram_users: Mutex::default(),
            counters: Counters::default(),
        })
    }

    /// The application's handler.
    pub fn inner(&self) -> &H {
        &self.inner
    }

    /// Replaces the configuration, re-reading its files, without touching connections:
    /// clients already connected stay, and the new rules apply from their next packet. On
    /// error the old configuration stays in force.
    pub fn reload(&self, config: SecurityConfig) -> Result<(), SecurityError> {
        let rules = Rules::load(config)?;
        let rate_changed = {
            let old = self.current();
            old.config.connection_rate != rules.config.connection_rate
                || old.config.connection_burst != rules.config.connection_burst
                || old.config.total_connection_rate != rules.config.total_connection_rate
                || old.config.listeners != rules.config.listeners
        };
        if rate_changed {
            if let Ok(mut limits) = self.limits.lock() {
                let open = std::mem::take(&mut limits.open);
                *limits = limits_for(&rules.config, Instant::now());
                limits.open = open;
            }
        }
        if let Ok(mut current) = self.rules.write() {
            *current = Arc::new(rules);
        }
        Ok(())
    }

    /// Re-reads the files of the current configuration.
    pub fn reload_files(&self) -> Result<(), SecurityError> {
        let config = self.current().config.clone();
        self.reload(config)
    }

    /// The configuration in force.
    pub fn config(&self) -> SecurityConfig {
        self.current().config.clone()
    }

    /// What was refused so far.
    pub fn stats(&self) -> SecurityStats {
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        SecurityStats {
            refused_connects: get(&c.refused_connects),
            rate_limited_connects: get(&c.rate_limited_connects),
            denied_publishes: get(&c.denied_publishes),
            denied_subscriptions: get(&c.denied_subscriptions),
            rate_limited_publishes: get(&c.rate_limited_publishes),
            quota_exceeded: get(&c.quota_exceeded),
            failed_authentications: get(&c.failed_authentications),
        }
    }

    fn current(&self) -> Arc<Rules> {
        match self.rules.read() {
            Ok(rules) => Arc::clone(&rules),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// Admits a new connection from `address` under the connection limits; counts it open.
    fn admit(
        &self,
        rules: &Rules,
        address: Option<std::net::IpAddr>,
        listener: Option<&str>,
    ) -> bool {
        let Ok(mut limits) = self.limits.lock() else {
            return false;
        };
        let now = Instant::now();
        if let Some(max) = rules.config.max_connections_per_address {
            if limits.open.get(&address).copied().unwrap_or(0) >= max {
                return false;
            }
        }
        if let Some(total) = &mut limits.total {
            if !total.try_take(now, 1) {
                return false;
            }
        }
        if let Some(bucket) = listener.and_then(|name| limits.per_listener.get_mut(name)) {
            if !bucket.try_take(now, 1) {
                return false;
            }
        }
        if rules.config.connection_rate.is_some() && !limits.per_address.try_take(&address, now) {
            return false;
        }
        *limits.open.entry(address).or_insert(0) += 1;
        true
    }

    fn release(&self, address: Option<std::net::IpAddr>) {
        if let Ok(mut limits) = self.limits.lock() {
            if let Some(n) = limits.open.get_mut(&address) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    limits.open.remove(&address);
                }
            }
        }
    }

    fn scram_credentials(&self, user: &str) -> Option<crate::ScramCredentials> {
        match self.current().passwords.as_ref()?.hash(user)? {
            PasswordHash::Scram(c) => Some(c.clone()),
            _ => None,
        }
    }

    async fn check_password(rules: &Rules, user: &str, password: Option<&Bytes>) -> bool {
        let Some(file) = &rules.passwords else {
            return true;
        };
        let (Some(hash), Some(password)) = (file.hash(user).cloned(), password.cloned()) else {
            return false;
        };
        // PBKDF2 takes a tenth of a second by design: off the connection's task.
        tokio::task::spawn_blocking(move || hash.verify(&password))
            .await
            .unwrap_or(false)
    }

    fn refuse(&self, code: ReasonCode) -> ConnectRefusal {
        bump(&self.counters.refused_connects);
        ConnectRefusal::new(code)
    }
}

impl<H: Handler> Handler for Security<H> {
    type Session = SecuritySession<H::Session>;

    async fn on_connect(&self, req: &ConnectRequest) -> Result<Self::Session, ConnectRefusal> {
        let rules = self.current();
        let address = req.peer_addr.map(|a| a.ip());
        let scram_user = self
            .scram_users
            .lock()
            .ok()
            .and_then(|mut users| users.remove(&req.client_id));
        let identity_user = if rules.config.use_identity_as_username {
            req.peer_identity
                .as_ref()
                .and_then(|id| id.name().map(str::to_owned))
        } else {
            None
        };
        let user = if let Some(user) = scram_user.clone() {
            Some(user)
        } else if let Some(user) = identity_user.clone() {
            Some(user)
        } else {
            req.username.clone()
        };
        if scram_user.is_none() && identity_user.is_none() {
            match &req.username {
                None if !rules.config.allows_anonymous_on(req.listener.as_deref()) => {
                    return Err(self.refuse(ReasonCode::NOT_AUTHORIZED));
                }
                Some(name) if !Self::check_password(&rules, name, req.password.as_ref()).await => {
                    return Err(self.refuse(ReasonCode::BAD_USER_NAME_OR_PASSWORD));
                }
                _ => {}
            }
        }
        if !self.admit(&rules, address, req.listener.as_deref()) {
            bump(&self.counters.rate_limited_connects);
            return Err(ConnectRefusal::new(ReasonCode::CONNECTION_RATE_EXCEEDED));
        }
        let inner = match self.inner.on_connect(req).await {
            Ok(inner) => inner,
            Err(refusal) => {
                self.release(address);
                return Err(refusal);
            }
        };
        let now = Instant::now();
        let bucket = |rate: Option<u32>| rate.map(|r| Mutex::new(TokenBucket::new(r, r, now)));
        Ok(SecuritySession {
            inner,
            user,
            address,
            messages: bucket(rules.config.message_rate),
            bytes: bucket(rules.config.byte_rate),
            subscriptions: Mutex::default(),
        })
    }

    async fn on_auth(&self, client_id: &str, req: &AuthRequest) -> AuthDecision {
        if req.method != scram::METHOD {
            return self.inner.on_auth(client_id, req).await;
        }
        let data = req.data.as_deref().unwrap_or_default();
        let pending = self.scram.lock().ok().and_then(|mut p| p.remove(client_id));
        let fail = |code| {
            bump(&self.counters.failed_authentications);
            AuthDecision::Failure(code)
        };
        match pending {
            // A new exchange (at CONNECT, or AUTH 0x19 for re-authentication).
            None => {
                let started = ScramServer::start(data, |user| self.scram_credentials(user));
                let Ok((server, server_first)) = started else {
                    return fail(ReasonCode::BAD_AUTHENTICATION_METHOD);
                };
                let Ok(mut pending) = self.scram.lock() else {
                    return fail(ReasonCode::SERVER_BUSY);
                };
                let now = Instant::now();
                if pending.len() >= MAX_PENDING_SCRAM {
                    pending.retain(|_, p| now.duration_since(p.since) < SCRAM_TIMEOUT);
                    if pending.len() >= MAX_PENDING_SCRAM {
                        return fail(ReasonCode::SERVER_BUSY);
                    }
                }
                pending.insert(client_id.to_owned(), PendingScram { server, since: now });
                AuthDecision::Continue(Some(server_first.into()))
            }
            Some(PendingScram { server, .. }) => match server.finish(data) {
                Ok((user, server_final)) => {
                    if req.reauthenticate {
                        // Re-authentication must be for the same user (the connection's
                        // authority does not change mid-session).
                        let known = self
                            .scram_users
                            .lock()
                            .ok()
                            .and_then(|u| u.get(client_id).cloned());
                        if known.as_deref().is_some_and(|k| k != user) {
                            return fail(ReasonCode::NOT_AUTHORIZED);
                        }
                    }
                    if let Ok(mut users) = self.scram_users.lock() {
                        users.insert(client_id.to_owned(), user);
                    }
                    AuthDecision::Success(Some(server_final.into()))
                }
                Err(_) => fail(ReasonCode::BAD_USER_NAME_OR_PASSWORD),
            },
        }
    }

    async fn on_publish(
        &self,
        session: &Self::Session,
        client: &ClientInfo,
        message: &Message,
    ) -> PublishDecision {
        let rules = self.current();
        if let Some(acl) = &rules.acl {
            let decision =
                acl.check_publish(session.user(), &client.client_id, message.topic.as_str());
            if let AclDecision::Deny(code) = decision {
                bump(&self.counters.denied_publishes);
                return PublishDecision::Refuse(code);
            }
        }
        if let Some(max) = rules.config.max_retained_size {
            if message.retain && message.payload.len() > max {
                bump(&self.counters.quota_exceeded);
                return PublishDecision::Refuse(ReasonCode::QUOTA_EXCEEDED);
            }
        }
        let now = Instant::now();
        let over = |bucket: &Option<Mutex<TokenBucket>>, n: u64| {
            bucket
                .as_ref()
                .and_then(|b| b.lock().ok().map(|mut b| !b.try_take(now, n)))
                .unwrap_or(false)
        };
        if over(&session.messages, 1) || over(&session.bytes, message.payload.len() as u64) {
            bump(&self.counters.rate_limited_publishes);
            return match (message.qos, client.protocol) {
                // 0x96 Message rate too high is a DISCONNECT code only (MQTT 5.0 Table 2-6);
                // a PUBACK or PUBREC says 0x97 Quota exceeded.
                (QoS::AtMostOnce, _) | (_, ProtocolVersion::V5) => {
                    PublishDecision::Refuse(ReasonCode::QUOTA_EXCEEDED)
                }
                // MQTT 3.1.x has no way to refuse a QoS 1/2 PUBLISH: disconnect rather than
                // acknowledge a message that was dropped.
                _ => PublishDecision::Disconnect(ReasonCode::MESSAGE_RATE_TOO_HIGH),
            };
        }
        self.inner.on_publish(&session.inner, client, message).await
    }

    async fn on_subscribe(
        &self,
        session: &Self::Session,
        client: &ClientInfo,
        filter: &TopicFilter,
        options: &SubscribeOptions,
    ) -> SubscribeDecision {
        let rules = self.current();
        if let Some(acl) = &rules.acl {
            let decision = acl.check_subscribe(session.user(), &client.client_id, filter.as_str());
            if let AclDecision::Deny(code) = decision {
                bump(&self.counters.denied_subscriptions);
                return SubscribeDecision::Refuse(code);
            }
        }
        {
            let Ok(mut subs) = session.subscriptions.lock() else {
                return SubscribeDecision::Refuse(ReasonCode::UNSPECIFIED_ERROR);
            };
            if !subs.contains(filter.as_str()) {
                if subs.len() >= rules.config.max_subscriptions {
                    bump(&self.counters.quota_exceeded);
                    return SubscribeDecision::Refuse(ReasonCode::QUOTA_EXCEEDED);
                }
                subs.insert(filter.as_str().to_owned());
            }
        }
        let decision = self
            .inner
            .on_subscribe(&session.inner, client, filter, options)
            .await;
        if matches!(decision, SubscribeDecision::Refuse(_)) {
            if let Ok(mut subs) = session.subscriptions.lock() {
                subs.remove(filter.as_str());
            }
        }
        decision
    }

    async fn on_unsubscribe(
        &self,
        session: &Self::Session,
        client: &ClientInfo,
        filter: &TopicFilter,
    ) {
        if let Ok(mut subs) = session.subscriptions.lock() {
            subs.remove(filter.as_str());
        }
        self.inner
            .on_unsubscribe(&session.inner, client, filter)
            .await;
    }

    async fn on_delivered(
        &self,
        session: &Self::Session,
        client: &ClientInfo,
        delivered: &Delivered,
    ) {
        self.inner
            .on_delivered(&session.inner, client, delivered)
            .await;
    }

    async fn on_session_expired(&self, client_id: &str) {
        self.inner.on_session_expired(client_id).await;
    }

    async fn on_message(
        &self,
        session: &Self::Session,
        client: &ClientInfo,
        message: AppMessage,
    ) -> MessageAction {
        self.inner.on_message(&session.inner, client, message).await
    }

    async fn on_disconnect(
        &self,
        session: Self::Session,
        client: &ClientInfo,
        reason: CloseReason,
    ) {
        self.release(session.address);
        if let Ok(mut pending) = self.scram.lock() {
            pending.remove(&client.client_id);
        }
        if reason != CloseReason::TakenOver {
            if let Ok(mut users) = self.scram_users.lock() {
                users.remove(&client.client_id);
            }
        }
        self.inner
            .on_disconnect(session.inner, client, reason)
            .await;
    }
}
