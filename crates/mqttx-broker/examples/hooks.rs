//! A broker with its own authentication and access control, written against the `Handler`
//! trait: users log in with a password, each may publish only under `users/<name>/`, and may
//! subscribe to that and to `public/#`. (The `mqttx-auth` crate does the same from password
//! and ACL files, with hashed passwords; see docs/security.md.)
//!
//! ```text
//! cargo run -p mqttx-broker --example hooks -- 127.0.0.1:1883
//! mosquitto_pub -u alice -P wonderland -t users/alice/status -m online -r
//! mosquitto_sub -u bob -P builder -t users/alice/status -C 1      # refused: not bob's topic
//! mosquitto_sub -u bob -P builder -t public/# -v                   # allowed
//! ```

use std::collections::HashMap;

use mqttx_broker::codec::{QoS, ReasonCode};
use mqttx_broker::router::{SubscribeOptions, TopicFilter};
use mqttx_broker::{
    Broker, ClientInfo, CloseReason, Config, ConnectRefusal, ConnectRequest, Handler, Message,
    PublishDecision, SubscribeDecision,
};

/// The example's user table: name → password. A real broker keeps salted hashes, never
/// passwords (`mqttx passwd` writes them).
pub(crate) struct Hooks {
    users: HashMap<String, String>,
}

impl Hooks {
    /// The two users of the example.
    pub(crate) fn new() -> Self {
        let users = [("alice", "wonderland"), ("bob", "builder")];
        Self {
            users: users.map(|(u, p)| (u.into(), p.into())).into(),
        }
    }

    /// Whether `user` may use `topic` (a topic name or filter): their own tree, and for
    /// subscriptions also `public/`. Filters that start with a wildcard are refused, since
    /// they would reach into other users' trees.
    fn allowed(user: &str, topic: &str, subscribing: bool) -> bool {
        let own = topic
            .strip_prefix("users/")
            .and_then(|rest| rest.strip_prefix(user))
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'));
        own || (subscribing && (topic == "public" || topic.starts_with("public/")))
    }
}

impl Handler for Hooks {
    /// The user name, once authenticated.
    type Session = String;

    async fn on_connect(&self, req: &ConnectRequest) -> Result<String, ConnectRefusal> {
        let Some(user) = &req.username else {
            // Anonymous clients are not welcome: 0x87 Not authorized (3.1.1: return code 5).
            return Err(ConnectRefusal::new(ReasonCode::NOT_AUTHORIZED));
        };
        let given = req.password.as_deref().unwrap_or_default();
        match self.users.get(user) {
            Some(password) if password.as_bytes() == given => Ok(user.clone()),
            // 0x86 Bad User Name or Password (3.1.1: return code 4).
            _ => Err(ConnectRefusal::new(ReasonCode::BAD_USER_NAME_OR_PASSWORD)),
        }
    }

    async fn on_publish(&self, user: &String, _: &ClientInfo, msg: &Message) -> PublishDecision {
        if Self::allowed(user, msg.topic.as_str(), false) {
            PublishDecision::Accept
        } else {
            // MQTT 5.0 publishers see 0x87 in their PUBACK; the message goes nowhere.
            PublishDecision::Refuse(ReasonCode::NOT_AUTHORIZED)
        }
    }

    async fn on_subscribe(
        &self,
        user: &String,
        _: &ClientInfo,
        filter: &TopicFilter,
        _: &SubscribeOptions,
    ) -> SubscribeDecision {
        // `filter()` is the filter without a `$share/<group>/` prefix.
        if Self::allowed(user, filter.filter(), true) {
            // A grant is capped at the QoS the client asked for: this grants what it asked.
            SubscribeDecision::Grant(QoS::ExactlyOnce)
        } else {
            SubscribeDecision::Refuse(ReasonCode::NOT_AUTHORIZED)
        }
    }

    async fn on_disconnect(&self, user: String, client: &ClientInfo, reason: CloseReason) {
        println!("{user} ({}) left: {reason:?}", client.client_id);
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut config = Config::default();
    if let Some(addr) = std::env::args().nth(1) {
        config.bind = addr.parse()?;
    }
    let server = Broker::builder()
        .config(config)
        .handler(Hooks::new())
        .bind()
        .await?;
    println!("listening on {}", server.local_addr()?);
    server
        .run_until(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
