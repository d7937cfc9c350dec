//! A bridge between MQTT clients and an application service inside the broker's process.
//!
//! Messages that clients publish to `app/inbox` go into the application's channel (a tokio
//! `mpsc`), from `Handler::on_publish`. The service answers through `Broker::send_to`, and
//! `Handler::on_message`, on the client's own connection, turns each answer into a PUBLISH to
//! the Response Topic the client gave (MQTT 5.0 request/response), or disconnects the client.
//!
//! ```text
//! cargo run -p mqttx-broker --example bridge -- 127.0.0.1:1883
//! mosquitto_rr -t app/inbox -e replies/me -m hello    # prints HELLO
//! mosquitto_rr -t app/inbox -e replies/me -m bye      # disconnected by the service (0x98)
//! ```

use bytes::Bytes;
use tokio::sync::mpsc;

use mqttx_broker::codec::{QoS, ReasonCode};
use mqttx_broker::router::TopicName;
use mqttx_broker::{
    AppMessage, Broker, ClientInfo, Config, Handler, Message, MessageAction, PublishDecision,
    ServerDisconnect,
};

/// A request from a client, on its way to the service.
#[derive(Debug)]
pub(crate) struct Request {
    client_id: String,
    payload: Bytes,
    response_topic: Option<String>,
    correlation_data: Option<Bytes>,
}

/// What the service sends back to one client's connection.
#[derive(Debug)]
pub(crate) enum Answer {
    Reply {
        to: String,
        payload: String,
        correlation_data: Option<Bytes>,
    },
    Goodbye,
}

/// The handler: the MQTT end of the bridge.
pub(crate) struct Bridge {
    inbox: mpsc::Sender<Request>,
}

impl Handler for Bridge {
    type Session = ();

    async fn on_publish(&self, _: &(), client: &ClientInfo, msg: &Message) -> PublishDecision {
        if msg.topic.as_str() != "app/inbox" {
            return PublishDecision::Accept;
        }
        let request = Request {
            client_id: client.client_id.clone(),
            payload: msg.payload.clone(),
            response_topic: msg.properties.response_topic.as_deref().map(Into::into),
            correlation_data: msg
                .properties
                .correlation_data
                .as_deref()
                .map(Bytes::copy_from_slice),
        };
        // The channel is bounded: when the service falls behind, publishers are told so
        // (0x97 Quota exceeded in the PUBACK) instead of the broker buffering without end.
        match self.inbox.try_send(request) {
            Ok(()) => PublishDecision::Accept,
            Err(_) => PublishDecision::Refuse(ReasonCode::QUOTA_EXCEEDED),
        }
    }

    async fn on_message(&self, _: &(), _: &ClientInfo, message: AppMessage) -> MessageAction {
        let Ok(answer) = message.downcast::<Answer>() else {
            return MessageAction::None;
        };
        match *answer {
            Answer::Reply {
                to,
                payload,
                correlation_data,
            } => {
                let Ok(topic) = TopicName::new(&to) else {
                    return MessageAction::None;
                };
                let mut reply = Message::new(topic, payload, QoS::AtLeastOnce, false);
                reply.properties.correlation_data = correlation_data.map(|c| c.to_vec().into());
                MessageAction::Publish(reply)
            }
            Answer::Goodbye => {
                let mut bye = ServerDisconnect::new(ReasonCode::ADMINISTRATIVE_ACTION);
                bye.reason_string = Some("the service said goodbye".into());
                MessageAction::Disconnect(bye)
            }
        }
    }
}

/// The application's end: answers every request on the requester's own connection.
pub(crate) async fn service(broker: Broker<Bridge>, mut inbox: mpsc::Receiver<Request>) {
    while let Some(request) = inbox.recv().await {
        let text = String::from_utf8_lossy(&request.payload);
        let answer = match (&*text, request.response_topic) {
            ("bye", _) => Answer::Goodbye,
            (_, Some(to)) => Answer::Reply {
                to,
                payload: text.to_uppercase(),
                correlation_data: request.correlation_data,
            },
            (_, None) => continue, // nowhere to answer
        };
        // False when the client has gone meanwhile; the answer is dropped.
        broker.send_to(&request.client_id, answer);
    }
}

/// The broker with the bridge, and the service task, for `config`.
pub(crate) async fn start(config: Config) -> std::io::Result<mqttx_broker::Server<Bridge>> {
    let (tx, rx) = mpsc::channel(1024);
    let server = Broker::builder()
        .config(config)
        .handler(Bridge { inbox: tx })
        .bind()
        .await?;
    tokio::spawn(service(server.broker().clone(), rx));
    Ok(server)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut config = Config::default();
    if let Some(addr) = std::env::args().nth(1) {
        config.bind = addr.parse()?;
    }
    let server = start(config).await?;
    println!("listening on {}", server.local_addr()?);
    server
        .run_until(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
