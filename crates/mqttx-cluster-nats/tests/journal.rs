//! `NatsJournal` and `read_node` against a real nats-server (`support::nats`): nodes sharing
//! one bucket each read back only their own live keys, in key order, and a node's entries
//! taken over by another are purged.

mod support;

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, kv};
use mqttx_broker::{Journal, JournalOp, Table};
use mqttx_cluster_nats::{NatsJournal, purge_node, read_node};
use support::nats::NatsServer;

/// Bounds every wait on the server.
const TIMEOUT: Duration = Duration::from_secs(10);

fn put(table: Table, key: &[u8], value: &[u8]) -> JournalOp {
    JournalOp::Put {
        table,
        key: key.to_vec(),
        value: value.to_vec(),
    }
}

/// Commits `ops` to `journal` (its `commit` blocks: off the runtime's workers).
async fn commit(journal: &Arc<NatsJournal>, ops: Vec<JournalOp>) {
    let journal = Arc::clone(journal);
    tokio::task::spawn_blocking(move || journal.commit(&ops))
        .await
        .expect("commit task")
        .expect("commit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_node_reads_back_only_its_own_live_entries() {
    let server = NatsServer::start();
    let client = async_nats::connect(server.url()).await.expect("connect");
    let js = jetstream::new(client);
    let store = js
        .create_key_value(kv::Config {
            bucket: String::from("journal_test"),
            history: 1,
            ..Default::default()
        })
        .await
        .expect("bucket");
    // Two nodes, one of whose identifiers needs escaping, and keys the other also uses.
    let n1 = Arc::new(
        NatsJournal::open(store.clone(), "n1", TIMEOUT)
            .await
            .unwrap(),
    );
    let n2 = Arc::new(
        NatsJournal::open(store.clone(), "n1.b", TIMEOUT)
            .await
            .unwrap(),
    );
    assert!(n1.is_empty() && n2.is_empty());
    commit(
        &n1,
        vec![
            put(Table::Messages, b"\x00\x01am", b"message"),
            put(Table::Sessions, b"\x00\x01a", b"session a"),
            put(Table::Sessions, b"\x00\x01b", b"session b"),
            put(Table::Inbound, b"\x00\x01a\x00\x07", b""),
        ],
    )
    .await;
    commit(
        &n1,
        vec![JournalOp::Delete {
            table: Table::Sessions,
            key: b"\x00\x01b".to_vec(),
        }],
    )
    .await;
    commit(&n2, vec![put(Table::Sessions, b"\x00\x01a", b"other node")]).await;

    let want = vec![
        (
            Table::Sessions,
            b"\x00\x01a".to_vec(),
            b"session a".to_vec(),
        ),
        (Table::Messages, b"\x00\x01am".to_vec(), b"message".to_vec()),
        (Table::Inbound, b"\x00\x01a\x00\x07".to_vec(), Vec::new()),
    ];
    let mut sorted = want.clone();
    sorted.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
    assert_eq!(read_node(&store, "n1", TIMEOUT).await.unwrap(), sorted);
    assert_eq!(
        read_node(&store, "n1.b", TIMEOUT).await.unwrap(),
        [(
            Table::Sessions,
            b"\x00\x01a".to_vec(),
            b"other node".to_vec()
        )]
    );
    assert!(read_node(&store, "n3", TIMEOUT).await.unwrap().is_empty());
    // A node that starts again gets its entries to load.
    let again = NatsJournal::open(store.clone(), "n1", TIMEOUT)
        .await
        .unwrap();
    assert_eq!(again.len(), 3);
    assert_eq!(again.load().unwrap(), sorted);

    // Taken over by another node: purged, leaving the rest.
    purge_node(
        &store,
        "n1",
        &[
            (Table::Sessions, b"\x00\x01a".to_vec()),
            (Table::Messages, b"\x00\x01am".to_vec()),
        ],
    )
    .await
    .unwrap();
    assert_eq!(
        read_node(&store, "n1", TIMEOUT).await.unwrap(),
        [(Table::Inbound, b"\x00\x01a\x00\x07".to_vec(), Vec::new())]
    );
    assert_eq!(read_node(&store, "n1.b", TIMEOUT).await.unwrap().len(), 1);
}
