//! Against a real nats-server with JetStream (`support::nats`): the mapped subjects on core
//! NATS, a JetStream stream holding a message on a mapped subject, and the two key-value
//! primitives that session ownership will be fenced with: create-if-absent and update by
//! revision (compare-and-set).

mod support;

use std::path::PathBuf;
use std::time::Duration;

use async_nats::jetstream::{self, kv, stream};
use futures_util::StreamExt as _;
use mqttx_cluster_nats::{Namespace, encode_token};
use mqttx_router::{TopicFilter, TopicName};
use support::nats::{NatsServer, locate};

/// Bounds every wait on the server.
const TIMEOUT: Duration = Duration::from_secs(10);

async fn connect(server: &NatsServer) -> async_nats::Client {
    async_nats::ConnectOptions::new()
        .connection_timeout(TIMEOUT)
        .request_timeout(Some(TIMEOUT))
        .connect(server.url())
        .await
        .unwrap_or_else(|e| panic!("connect to {}: {e}\n{}", server.url(), server.log()))
}

#[test]
fn a_missing_nats_server_fails_with_how_to_install_it() {
    let e = locate(Some(PathBuf::from("/nonexistent/nats-server"))).unwrap_err();
    assert!(e.contains("/nonexistent/nats-server"), "{e}");
    assert!(e.contains(".ci/requirements-nats.txt"), "{e}");
}

#[tokio::test]
async fn mapped_filters_receive_what_the_router_would_match() {
    let server = NatsServer::start();
    let client = connect(&server).await;
    let ns = Namespace::new("mqttx.t").unwrap();

    // `a/#` subscribes `a.>` and `a`; `$share/g/a/+` the subject `a.*` in a queue group.
    let filter = ns.filter(&TopicFilter::new("a/#").unwrap()).unwrap();
    assert_eq!(filter.parent(), Some("mqttx.t.a"));
    let mut children = client.subscribe(filter.subject().to_owned()).await.unwrap();
    let mut parent = client.subscribe("mqttx.t.a").await.unwrap();
    let shared = ns
        .filter(&TopicFilter::new("$share/g/a/+").unwrap())
        .unwrap();
    let group = shared.queue_group().unwrap().to_owned();
    let mut queue = client
        .queue_subscribe(shared.subject().to_owned(), group)
        .await
        .unwrap();

    for topic in ["a", "a/b c", "a/b/c", "b", "a.b", "/a", "$SYS/a", "a/end"] {
        let subject = ns.subject(&TopicName::new(topic).unwrap()).unwrap();
        client.publish(subject, topic.into()).await.unwrap();
    }
    // The parent subject's own end marker: topic `a` again, payload `end`.
    client.publish("mqttx.t.a", "end".into()).await.unwrap();
    client.flush().await.unwrap();

    // What a subscription receives up to its end marker, as topics (core NATS keeps the
    // order of one publisher's messages).
    async fn until_end(sub: &mut async_nats::Subscriber, ns: &Namespace) -> Vec<String> {
        let mut topics = Vec::new();
        while let Some(msg) = sub.next().await {
            let topic = ns.topic(&msg.subject).unwrap();
            if topic.as_str() == "a/end" || &msg.payload[..] == b"end" {
                return topics;
            }
            assert_eq!(&msg.payload[..], topic.as_str().as_bytes());
            topics.push(topic.as_str().to_owned());
        }
        panic!("subscription closed")
    }
    tokio::time::timeout(TIMEOUT, async {
        assert_eq!(until_end(&mut children, &ns).await, ["a/b c", "a/b/c"]);
        assert_eq!(until_end(&mut parent, &ns).await, ["a"]);
        assert_eq!(until_end(&mut queue, &ns).await, ["a/b c"]);
    })
    .await
    .expect("messages within the timeout");
}

#[tokio::test]
async fn jetstream_stream_and_kv_fencing_primitives() {
    let server = NatsServer::start();
    let js = jetstream::new(connect(&server).await);
    let ns = Namespace::new("mqttx.t").unwrap();

    // QoS 1/2 messages will be stored once in a stream over the namespace; the publisher's
    // PUBACK waits for JetStream's acknowledgement.
    let stream = js
        .create_stream(stream::Config {
            name: "mqttx-messages".to_owned(),
            subjects: vec![format!("{}.>", ns.prefix())],
            ..Default::default()
        })
        .await
        .unwrap();
    let topic = TopicName::new("sensors/kitchen 1/$temp").unwrap();
    let subject = ns.subject(&topic).unwrap();
    let ack = js
        .publish(subject.clone(), "21.5".into())
        .await
        .unwrap()
        .await
        .unwrap();
    assert_eq!((ack.stream.as_str(), ack.sequence), ("mqttx-messages", 1));
    let stored = stream.get_raw_message(ack.sequence).await.unwrap();
    assert_eq!(ns.topic(&stored.subject), Ok(topic));
    assert_eq!(&stored.payload[..], b"21.5");

    // Session ownership: one entry per client identifier, its key an escaped token.
    let owners = js
        .create_key_value(kv::Config {
            bucket: "mqttx-owners".to_owned(),
            history: 1,
            ..Default::default()
        })
        .await
        .unwrap();
    let key = encode_token("client/1 é");
    let claimed = owners.create(&key, "n1".into()).await.unwrap();

    // Create-if-absent: a second claim fails, and the first owner stays.
    let second = owners.create(&key, "n2".into()).await.unwrap_err();
    assert_eq!(
        second.kind(),
        kv::CreateErrorKind::AlreadyExists,
        "{second}"
    );

    // Compare-and-set: a takeover names the revision it saw, and gets a new one.
    let taken = owners.update(&key, "n2".into(), claimed).await.unwrap();
    assert!(taken > claimed);
    // A node still holding the old revision (the fencing token) cannot write.
    let stale = owners.update(&key, "n1".into(), claimed).await.unwrap_err();
    assert_eq!(
        stale.kind(),
        kv::UpdateErrorKind::WrongLastRevision,
        "{stale}"
    );

    let entry = owners.entry(&key).await.unwrap().unwrap();
    assert_eq!((&entry.value[..], entry.revision), (&b"n2"[..], taken));
}
