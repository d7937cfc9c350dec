//! The `Security` handler in a real broker on loopback, exercised with `mqttx-client`:
//! passwords (ours and Mosquitto's formats), the ACL matrix with exact reason codes in MQTT
//! 3.1.1 and 5.0, SCRAM-SHA-256 at CONNECT and for re-authentication, a connection flood
//! stopped by the rate limit while existing clients keep working, and reload without
//! disconnects.

#[path = "../../mqttx-transport-tls/tests/support/pki.rs"]
mod pki;

use std::net::SocketAddr;
use std::time::Duration;

use mqttx_auth::acl::{Access, AclRule, Permission};
use mqttx_auth::{
    PasswordFile, PasswordHash, ScramAuthenticator, ScramCredentials, Security, SecurityConfig,
};
use mqttx_broker::codec::{ProtocolVersion, QoS, ReasonCode};
use mqttx_broker::{Broker, Config};
use mqttx_client::{Client, ConnectOptions, Error, Event, Events};

const WAIT: Duration = Duration::from_secs(10);
const V5: ProtocolVersion = ProtocolVersion::V5;
const V311: ProtocolVersion = ProtocolVersion::V311;

/// Written by `mosquitto_passwd -c -b pw.txt alice secret` (Mosquitto 2.0).
const MOSQUITTO_ALICE: &str = "alice:$7$101$KJj3vm6JA0xxlV8p$VZaiBTuiIuJrpfgboGXP+RSMfmwfeUueXQaVP1N5IFrpF/Z4z/hGP8/5xYcKTagZ97cYhx4h23FgBW8kTtH9CA==";

/// A temporary file that is removed when dropped.
struct TempFile(std::path::PathBuf);

impl TempFile {
    /// A file with a name of its own: the tests run in parallel in one process.
    fn new(name: &str, text: &str) -> Self {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("mqttx-auth-{}-{n}-{name}", std::process::id()));
        std::fs::write(&path, text).expect("write temp file");
        Self(path)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A password file: alice from Mosquitto, bob ($7$) and carol (SCRAM) written here with few
/// iterations so the test is quick.
fn passwords() -> TempFile {
    let mut file = PasswordFile::parse(MOSQUITTO_ALICE).expect("mosquitto entry");
    file.insert("bob", PasswordHash::pbkdf2(b"builder", 1000).expect("hash"));
    file.insert(
        "carol",
        PasswordHash::Scram(ScramCredentials::new(b"s3cret", 4096).expect("scram")),
    );
    TempFile::new("passwd", &file.to_string())
}

async fn start(security: SecurityConfig) -> (SocketAddr, Broker<Security>) {
    let mut config = Config::default();
    config.bind = SocketAddr::from(([127, 0, 0, 1], 0));
    start_with(config, security).await
}

async fn start_with(config: Config, security: SecurityConfig) -> (SocketAddr, Broker<Security>) {
    let server = Broker::builder()
        .config(config)
        .handler(Security::new(security).expect("security config"))
        .bind()
        .await
        .expect("bind");
    let addr = server.local_addr().expect("address");
    let broker = server.broker().clone();
    tokio::spawn(server.run());
    (addr, broker)
}

fn options(
    addr: SocketAddr,
    id: &str,
    version: ProtocolVersion,
    user: Option<(&str, &str)>,
) -> ConnectOptions {
    let mut o = ConnectOptions::new(addr.ip().to_string(), addr.port(), id).protocol(version);
    o.reconnect = false;
    if let Some((user, password)) = user {
        o.session.username = Some(user.into());
        o.session.password = Some(password.as_bytes().to_vec());
    }
    o
}

async fn connect(o: ConnectOptions) -> Result<(Client, Events), Error> {
    tokio::time::timeout(WAIT, Client::connect(o))
        .await
        .expect("CONNACK in time")
}

fn refused(result: Result<(Client, Events), Error>) -> ReasonCode {
    match result {
        Err(Error::Refused(code)) => code,
        Err(other) => panic!("expected a refusal, got {other:?}"),
        Ok(_) => panic!("expected a refusal, got a connection"),
    }
}

/// Subscribes at QoS 1; the per-filter result of the SUBACK.
async fn suback(client: &Client, filter: &str) -> Result<QoS, ReasonCode> {
    client
        .subscribe(filter, QoS::AtLeastOnce)
        .await
        .expect("SUBACK")
}

/// Publishes at QoS 1; the PUBACK's reason code.
async fn puback(
    client: &Client,
    topic: &str,
    payload: impl Into<Vec<u8>>,
    retain: bool,
) -> ReasonCode {
    client
        .publish(topic, payload, QoS::AtLeastOnce, retain)
        .await
        .expect("queued")
        .await
        .expect("PUBACK")
}

/// The next application message, within the wait.
async fn message(events: &mut Events) -> (String, Vec<u8>) {
    loop {
        match tokio::time::timeout(WAIT, events.recv()).await {
            Ok(Some(Event::Message(p))) => return (p.topic.to_string(), p.payload.to_vec()),
            Ok(Some(_)) => {}
            Ok(None) => panic!("the client stopped"),
            Err(_) => panic!("no message in time"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passwords_and_anonymous_access() {
    let file = passwords();
    let mut config = SecurityConfig::default();
    config.allow_anonymous = false;
    config.password_file = Some(file.0.clone());
    let (addr, broker) = start(config).await;

    for version in [V5, V311] {
        // Mosquitto's $7$ entry and our own.
        let (alice, _) = connect(options(addr, "a", version, Some(("alice", "secret"))))
            .await
            .expect("alice connects");
        let (bob, _) = connect(options(addr, "b", version, Some(("bob", "builder"))))
            .await
            .expect("bob connects");
        // SCRAM verifiers check plain passwords too.
        let (carol, _) = connect(options(addr, "c", version, Some(("carol", "s3cret"))))
            .await
            .expect("carol connects");
        // MQTT 5.0 §3.2.2.2: 0x86 Bad User Name or Password (3.1.1: return code 4), 0x87 Not
        // authorized for an anonymous client (return code 5).
        let wrong = connect(options(addr, "w", version, Some(("bob", "guess")))).await;
        assert_eq!(
            refused(wrong),
            ReasonCode::BAD_USER_NAME_OR_PASSWORD,
            "{version:?}"
        );
        let unknown = connect(options(addr, "u", version, Some(("mallory", "x")))).await;
        assert_eq!(refused(unknown), ReasonCode::BAD_USER_NAME_OR_PASSWORD);
        let anonymous = connect(options(addr, "n", version, None)).await;
        assert_eq!(refused(anonymous), ReasonCode::NOT_AUTHORIZED);
        for c in [alice, bob, carol] {
            c.disconnect().await.expect("disconnect");
        }
    }
    assert_eq!(broker.handler().stats().refused_connects, 6);
}

/// The ACL of the matrix: each user owns `home/<user>/#`; `news/#` is readable by everyone
/// and writable by `editor` only; `admin` may subscribe to everything except `vault/#`
/// (refused with 0x80), and nobody may publish to `vault/#`.
fn matrix_acl() -> Vec<AclRule> {
    let mut deny_vault = AclRule::new(Permission::Deny, Access::Both, "vault/#");
    deny_vault.reason_code = Some(0x80);
    vec![
        deny_vault,
        AclRule::new(Permission::Allow, Access::Both, "home/%u/#"),
        AclRule::new(Permission::Allow, Access::Publish, "news/#").user("editor"),
        AclRule::new(Permission::Allow, Access::Subscribe, "news/#"),
        AclRule::new(Permission::Allow, Access::Subscribe, "#").user("admin"),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acl_matrix_with_exact_reason_codes() {
    let mut config = SecurityConfig::default();
    config.acl = matrix_acl();
    let (addr, broker) = start(config).await;
    let allow = |qos: QoS| Ok(qos);
    let na = Err(ReasonCode::NOT_AUTHORIZED);
    // (user, filter, SUBACK result in MQTT 5.0)
    let subscriptions = [
        ("alice", "home/alice/#", allow(QoS::AtLeastOnce)),
        ("alice", "home/bob/#", na),
        ("alice", "home/+/x", na),
        ("alice", "news/+", allow(QoS::AtLeastOnce)),
        ("editor", "news/#", allow(QoS::AtLeastOnce)),
        ("admin", "home/#", allow(QoS::AtLeastOnce)),
        ("admin", "#", Err(ReasonCode::UNSPECIFIED_ERROR)),
        ("admin", "vault/x", Err(ReasonCode::UNSPECIFIED_ERROR)),
        ("alice", "$share/g/home/alice/#", allow(QoS::AtLeastOnce)),
    ];
    for version in [V5, V311] {
        for (user, filter, expected) in &subscriptions {
            let (client, _) = connect(options(
                addr,
                &format!("{user}-s"),
                version,
                Some((user, "-")),
            ))
            .await
            .expect("connect");
            let got = suback(&client, filter).await;
            // MQTT 3.1.1 has one failure code, 0x80 [MQTT-3.9.3].
            let expected = match (version, expected) {
                (V311, Err(_)) => Err(ReasonCode::UNSPECIFIED_ERROR),
                _ => *expected,
            };
            assert_eq!(got, expected, "{version:?} {user} subscribes to {filter}");
            client.disconnect().await.expect("disconnect");
        }
    }

    // Publishing: an admin watches everything it may; each allowed publish arrives, each
    // denied one gets PUBACK 0x87 (MQTT 5.0) or a plain PUBACK and is dropped (3.1.1).
    let (watcher, mut seen) = connect(options(addr, "watch", V5, Some(("admin", "-"))))
        .await
        .expect("connect");
    for filter in ["home/#", "news/#"] {
        suback(&watcher, filter).await.expect("granted");
    }
    // (user, topic, PUBACK code in MQTT 5.0): the vault rule names 0x80.
    let publications = [
        ("alice", "home/alice/t", ReasonCode::SUCCESS),
        ("alice", "home/bob/t", ReasonCode::NOT_AUTHORIZED),
        ("alice", "news/today", ReasonCode::NOT_AUTHORIZED),
        ("editor", "news/today", ReasonCode::SUCCESS),
        ("editor", "vault/gold", ReasonCode::UNSPECIFIED_ERROR),
    ];
    let mut denied = 0;
    for version in [V5, V311] {
        for (user, topic, code) in publications {
            let allowed = code == ReasonCode::SUCCESS;
            let (client, _) = connect(options(
                addr,
                &format!("{user}-p"),
                version,
                Some((user, "-")),
            ))
            .await
            .expect("connect");
            let payload = format!("{version:?} {user}");
            let ack = puback(&client, topic, payload.clone(), false).await;
            // MQTT 3.1.1 cannot refuse a PUBLISH: a plain PUBACK, and the message dropped.
            let expected = if version == V311 {
                ReasonCode::SUCCESS
            } else {
                code
            };
            assert_eq!(ack, expected, "{version:?} {user} publishes to {topic}");
            if allowed {
                assert_eq!(
                    message(&mut seen).await,
                    (topic.to_owned(), payload.into_bytes())
                );
            } else {
                denied += 1;
            }
            client.disconnect().await.expect("disconnect");
        }
    }
    // Nothing denied arrived: the marker is the next message.
    let (marker, _) = connect(options(addr, "m", V5, Some(("alice", "-"))))
        .await
        .expect("connect");
    puback(&marker, "home/alice/marker", "m", false).await;
    assert_eq!(message(&mut seen).await.0, "home/alice/marker");
    let stats = broker.handler().stats();
    assert_eq!(stats.denied_publishes, denied);
    assert_eq!(stats.denied_subscriptions, 2 * 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scram_sha_256_at_connect_and_reauthentication() {
    let file = passwords();
    let mut config = SecurityConfig::default();
    config.allow_anonymous = false;
    config.password_file = Some(file.0.clone());
    config.acl = vec![AclRule::new(Permission::Allow, Access::Both, "home/%u/#")];
    let (addr, broker) = start(config).await;

    let mut o = options(addr, "scram-1", V5, None);
    let scram = ScramAuthenticator::new("carol", "s3cret").expect("authenticator");
    scram.apply(&mut o);
    let (client, mut events) = connect(o).await.expect("SCRAM succeeds");
    // The connection's user is carol, as the ACL's %u shows.
    suback(&client, "home/carol/#").await.expect("granted");
    assert_eq!(
        suback(&client, "home/bob/#").await,
        Err(ReasonCode::NOT_AUTHORIZED)
    );
    // Re-authentication (AUTH 0x19) with a fresh exchange keeps the connection.
    tokio::time::timeout(
        WAIT,
        client.reauthenticate(scram.restart().expect("restart")),
    )
    .await
    .expect("in time")
    .expect("re-authenticated");
    puback(&client, "home/carol/x", "still here", false).await;
    assert_eq!(message(&mut events).await.1, b"still here");

    // A wrong password: CONNACK 0x86.
    let mut o = options(addr, "scram-2", V5, None);
    ScramAuthenticator::new("carol", "wrong")
        .expect("authenticator")
        .apply(&mut o);
    assert_eq!(
        refused(connect(o).await),
        ReasonCode::BAD_USER_NAME_OR_PASSWORD
    );
    // A user with no SCRAM verifier (bob has a $7$ hash): refused the same way.
    let mut o = options(addr, "scram-3", V5, None);
    ScramAuthenticator::new("bob", "builder")
        .expect("authenticator")
        .apply(&mut o);
    assert_eq!(
        refused(connect(o).await),
        ReasonCode::BAD_USER_NAME_OR_PASSWORD
    );
    assert_eq!(broker.handler().stats().failed_authentications, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_flood_is_limited_and_existing_clients_keep_working() {
    let mut config = SecurityConfig::default();
    // One new connection per second, three at once.
    config.connection_rate = Some(1);
    config.connection_burst = Some(3);
    let (addr, broker) = start(config).await;
    let (existing, mut inbox) = connect(options(addr, "existing", V5, None))
        .await
        .expect("connect");
    suback(&existing, "flood/ok").await.expect("granted");

    let mut accepted = Vec::new();
    let mut rate_limited = 0;
    for i in 0..30 {
        let version = if i % 2 == 0 { V5 } else { V311 };
        match connect(options(addr, &format!("flood-{i}"), version, None)).await {
            Ok(c) => accepted.push(c),
            // MQTT 5.0: CONNACK 0x9F. 3.1.1 has no such return code: the broker closes the
            // connection without CONNACK [MQTT-3.2.2-6].
            Err(Error::Refused(ReasonCode::CONNECTION_RATE_EXCEEDED)) if version == V5 => {
                rate_limited += 1;
            }
            Err(Error::Io(_) | Error::Session(_) | Error::Closed) if version == V311 => {
                rate_limited += 1;
            }
            Err(other) => panic!("{version:?}: unexpected {other:?}"),
        }
    }
    // The existing client was admitted before the flood and used 1 of the 3; 30 attempts in
    // far less than 28 s cannot all pass.
    assert!(rate_limited >= 20, "only {rate_limited} refused");
    assert!(accepted.len() <= 10, "{} accepted", accepted.len());
    assert_eq!(broker.handler().stats().rate_limited_connects, rate_limited);
    puback(&existing, "flood/ok", "alive", false).await;
    assert_eq!(message(&mut inbox).await.1, b"alive");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_applies_new_rules_without_disconnecting() {
    let mut config = SecurityConfig::default();
    config.acl = vec![AclRule::new(Permission::Allow, Access::Both, "#")];
    let (addr, broker) = start(config.clone()).await;
    let (client, mut events) = connect(options(addr, "stays", V5, None))
        .await
        .expect("connect");
    suback(&client, "rooms/#").await.expect("granted");
    let publish = |topic: &'static str| {
        let client = client.clone();
        async move { puback(&client, topic, "x", false).await }
    };
    assert_eq!(publish("rooms/a").await, ReasonCode::SUCCESS);
    assert_eq!(message(&mut events).await.0, "rooms/a");

    // Publishing to rooms/b is now refused; the connection and its subscription stay.
    config.acl = vec![
        AclRule::new(Permission::Deny, Access::Publish, "rooms/b"),
        AclRule::new(Permission::Allow, Access::Both, "#"),
    ];
    broker.handler().reload(config).expect("reload");
    assert_eq!(publish("rooms/b").await, ReasonCode::NOT_AUTHORIZED);
    assert_eq!(publish("rooms/a").await, ReasonCode::SUCCESS);
    assert_eq!(message(&mut events).await.0, "rooms/a");
    assert_eq!(broker.clients(), ["stays"]);

    // A broken configuration is refused and the rules in force stay.
    let mut broken = SecurityConfig::default();
    broken.acl_file = Some("/nonexistent/mqttx/acl".into());
    assert!(broker.handler().reload(broken).is_err());
    assert_eq!(publish("rooms/b").await, ReasonCode::NOT_AUTHORIZED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_rate_subscription_and_retained_quotas() {
    let mut config = SecurityConfig::default();
    // Three PUBLISH per second (and as a burst), two subscriptions, 8-byte retained payloads.
    config.message_rate = Some(3);
    config.max_subscriptions = 2;
    config.max_retained_size = Some(8);
    let (addr, broker) = start(config).await;

    // MQTT 5.0: over the rate, QoS 1 gets PUBACK 0x97 Quota exceeded (0x96 Message rate too
    // high may only be a DISCONNECT's code, Table 2-6).
    let (v5, _) = connect(options(addr, "fast5", V5, None))
        .await
        .expect("connect");
    let mut codes = Vec::new();
    for i in 0..10 {
        let handle = v5
            .publish("rate/t", format!("{i}"), QoS::AtLeastOnce, false)
            .await
            .expect("queued");
        codes.push(handle.await.expect("PUBACK"));
    }
    let limited = codes
        .iter()
        .filter(|&&c| c == ReasonCode::QUOTA_EXCEEDED)
        .count();
    assert!(limited >= 5, "{codes:?}");
    assert!(
        codes
            .iter()
            .all(|&c| c == ReasonCode::SUCCESS || c == ReasonCode::QUOTA_EXCEEDED)
    );

    // MQTT 3.1.1 cannot say so: the client is disconnected instead of told a false success.
    let (v3, mut events) = connect(options(addr, "fast3", V311, None))
        .await
        .expect("connect");
    let mut disconnected = false;
    for i in 0..10 {
        let Ok(handle) = v3
            .publish("rate/t", format!("{i}"), QoS::AtLeastOnce, false)
            .await
        else {
            break;
        };
        let _ = tokio::time::timeout(Duration::from_millis(500), handle).await;
        while let Some(event) = events.try_recv() {
            disconnected |= matches!(event, Event::Disconnected { .. } | Event::Stopped(_));
        }
        if disconnected {
            break;
        }
    }
    if !disconnected {
        disconnected = tokio::time::timeout(WAIT, async {
            while let Some(event) = events.recv().await {
                if matches!(event, Event::Disconnected { .. } | Event::Stopped(_)) {
                    return true;
                }
            }
            true
        })
        .await
        .unwrap_or(false);
    }
    assert!(
        disconnected,
        "the 3.1.1 client over the rate is disconnected"
    );
    assert!(broker.handler().stats().rate_limited_publishes >= 6);

    // Subscriptions: two distinct filters, the third gets 0x97; re-subscribing is no new one.
    let (c, _) = connect(options(addr, "subs", V5, None))
        .await
        .expect("connect");
    for filter in ["a/#", "b/#", "a/#"] {
        c.subscribe(filter, QoS::AtMostOnce)
            .await
            .expect("SUBACK")
            .expect("granted");
    }
    assert_eq!(
        c.subscribe("c/#", QoS::AtMostOnce).await.expect("SUBACK"),
        Err(ReasonCode::QUOTA_EXCEEDED)
    );
    c.unsubscribe(vec!["b/#".into()]).await.expect("UNSUBACK");
    c.subscribe("c/#", QoS::AtMostOnce)
        .await
        .expect("SUBACK")
        .expect("room again");

    // A retained payload over 8 bytes: 0x97, and nothing retained.
    let (r, _) = connect(options(addr, "retain", V5, None))
        .await
        .expect("connect");
    let big = r
        .publish("ret/big", "123456789", QoS::AtLeastOnce, true)
        .await
        .expect("queued");
    assert_eq!(big.await.expect("PUBACK"), ReasonCode::QUOTA_EXCEEDED);
    let small = r
        .publish("ret/small", "12345678", QoS::AtLeastOnce, true)
        .await
        .expect("queued");
    assert_eq!(small.await.expect("PUBACK"), ReasonCode::SUCCESS);
    assert_eq!(broker.retained_count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_identity_as_username() {
    // `use_identity_as_username`: the verified client certificate (CN device-1) is the user
    // the ACL's %u names; no user name or password is needed, anonymous clients are refused.
    let pki = pki::make();
    let mut config = Config::default();
    config.listeners = vec![
        mqttx_broker::Listener::tls(
            SocketAddr::from(([127, 0, 0, 1], 0)),
            &pki.server_cert,
            &pki.server_key,
        )
        .with_client_ca(&pki.ca),
    ];
    let mut security = SecurityConfig::default();
    security.allow_anonymous = false;
    security.use_identity_as_username = true;
    security.acl = vec![AclRule::new(
        Permission::Allow,
        Access::Both,
        "devices/%u/#",
    )];
    let (addr, broker) = start_with(config, security).await;
    let tls = |with_cert: bool| {
        let mut o = mqttx_transport_tls::ClientOptions::default().with_ca_file(&pki.ca);
        if with_cert {
            o = o.with_client_cert(&pki.client_cert, &pki.client_key);
        }
        let tls = mqttx_transport_tls::TlsConnector::new(&o).expect("tls");
        move || {
            let tls = tls.clone();
            async move {
                tls.connect("localhost", tokio::net::TcpStream::connect(addr).await?)
                    .await
            }
        }
    };
    let connect_tls = |id: &str, with_cert: bool| {
        let o = options(addr, id, V5, None);
        let connector = tls(with_cert);
        async move {
            tokio::time::timeout(WAIT, Client::connect_with(o, connector))
                .await
                .expect("in time")
        }
    };
    let (device, _) = connect_tls("dev", true)
        .await
        .expect("the certificate is the identity");
    suback(&device, "devices/device-1/#")
        .await
        .expect("its own topics");
    assert_eq!(
        suback(&device, "devices/device-2/#").await,
        Err(ReasonCode::NOT_AUTHORIZED)
    );
    let _ = broker;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_per_listener() {
    // Two named TCP listeners: "local" inherits (anonymous allowed, no rate), "public"
    // refuses anonymous clients and accepts one new connection per second (two at once).
    let file = passwords();
    let any = SocketAddr::from(([127, 0, 0, 1], 0));
    let mut config = Config::default();
    config.listeners = vec![
        mqttx_broker::Listener::tcp(any).with_name("local"),
        mqttx_broker::Listener::tcp(any).with_name("public"),
    ];
    let mut security = SecurityConfig::default();
    security.password_file = Some(file.0.clone());
    let mut public = mqttx_auth::ListenerSecurity::new("public");
    public.allow_anonymous = Some(false);
    public.connection_rate = Some(1);
    public.connection_burst = Some(2);
    security.listeners = vec![public];
    let server = Broker::builder()
        .config(config)
        .handler(Security::new(security).expect("security config"))
        .bind()
        .await
        .expect("bind");
    let addrs: Vec<SocketAddr> = server
        .local_addrs()
        .expect("addresses")
        .into_iter()
        .map(|(_, a)| a)
        .collect();
    tokio::spawn(server.run());
    let (local, public) = (addrs[0], addrs[1]);

    for i in 0..3 {
        connect(options(local, &format!("anon-local-{i}"), V5, None))
            .await
            .expect("anonymous on the local listener");
    }
    let anonymous = connect(options(public, "anon-public", V5, None)).await;
    assert_eq!(refused(anonymous), ReasonCode::NOT_AUTHORIZED);
    let mut accepted = 0;
    let mut limited = 0;
    for i in 0..6 {
        match connect(options(
            public,
            &format!("bob-{i}"),
            V5,
            Some(("bob", "builder")),
        ))
        .await
        {
            Ok(_) => accepted += 1,
            Err(Error::Refused(ReasonCode::CONNECTION_RATE_EXCEEDED)) => limited += 1,
            Err(other) => panic!("unexpected {other:?}"),
        }
    }
    assert!(
        accepted >= 2 && limited >= 3,
        "{accepted} accepted, {limited} limited"
    );
    // The local listener is not limited by the public one's rate.
    connect(options(local, "anon-local-after", V5, None))
        .await
        .expect("the local listener still accepts");
}
