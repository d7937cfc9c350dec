//! The [`Handler`] trait: the application's extension point, with typed decisions.

use std::any::Any;
use std::future::Future;

use mqttx_codec::{ProtocolVersion, QoS, ReasonCode};
use mqttx_router::{SubscribeOptions, TopicFilter};

use bytes::Bytes;

use crate::proto::{
    AuthRequest, CloseReason, ConnectRequest, Delivered, Message, ServerDisconnect,
};

/// The application's hooks into the broker. Every method has a default that allows, so an
/// implementation overrides only what it needs; hooks added later come with defaults too, so
/// adding one is not a breaking change.
///
/// The broker calls the hooks of one connection one at a time, in the order of that
/// connection's packets, from the task that drives the connection; the connection processes
/// nothing else meanwhile, so a hook should not wait long. Hooks of different connections run
/// concurrently.
///
/// `Session` is the application's per-connection state: [`on_connect`](Self::on_connect)
/// creates it, the other hooks borrow it, [`on_disconnect`](Self::on_disconnect) receives it.
/// It needs `Default` so that the default `on_connect` can create one; `()` is fine.
///
/// ```
/// use mqttx_broker::{ClientInfo, ConnectRefusal, ConnectRequest, Handler, Message, PublishDecision};
/// use mqttx_broker::codec::ReasonCode;
///
/// /// Lets in only clients that give a user name, and keeps `$internal/` to itself.
/// struct Guard;
///
/// impl Handler for Guard {
///     type Session = ();
///
///     async fn on_connect(&self, req: &ConnectRequest) -> Result<(), ConnectRefusal> {
///         match req.username {
///             Some(_) => Ok(()),
///             None => Err(ConnectRefusal::new(ReasonCode::NOT_AUTHORIZED)),
///         }
///     }
///
///     async fn on_publish(&self, _: &(), _: &ClientInfo, message: &Message) -> PublishDecision {
///         if message.topic.as_str().starts_with("$internal/") {
///             PublishDecision::Refuse(ReasonCode::NOT_AUTHORIZED)
///         } else {
///             PublishDecision::Accept
///         }
///     }
/// }
/// # let _ = mqttx_broker::Broker::builder().handler(Guard).build();
/// ```
pub trait Handler: Send + Sync + 'static {
    /// Per-connection application state.
    type Session: Default + Send + Sync + 'static;

    /// Called once per CONNECT, before CONNACK. `Ok` accepts (CONNACK 0x00); `Err` refuses
    /// with the refusal's reason code (MQTT 3.1.x clients get the return code with the same
    /// meaning). Before accepting, it may give the client another identifier with
    /// [`ConnectRequest::assign_client_id`] (sent to MQTT 5.0 clients as the Assigned Client
    /// Identifier). Default: accept.
    fn on_connect(
        &self,
        req: &ConnectRequest,
    ) -> impl Future<Output = Result<Self::Session, ConnectRefusal>> + Send {
        let _ = req;
        async { Ok(Self::Session::default()) }
    }

    /// Called for each step of MQTT 5.0 enhanced authentication (§4.12): first for a CONNECT
    /// with an Authentication Method (before [`on_connect`](Self::on_connect), which follows
    /// a success), then for every AUTH the client sends, including re-authentication
    /// (`req.reauthenticate`). `client_id` is the CONNECT's (or the assigned) identifier.
    /// Default: no method is supported, [`AuthDecision::Failure`] with 0x8C (Bad
    /// authentication method).
    fn on_auth(
        &self,
        client_id: &str,
        req: &AuthRequest,
    ) -> impl Future<Output = AuthDecision> + Send {
        let _ = (client_id, req);
        async { AuthDecision::Failure(ReasonCode::BAD_AUTHENTICATION_METHOD) }
    }

    /// Called for every PUBLISH the client sends, and for its Will when the broker publishes
    /// it, before the message is routed or retained. Default: accept.
    fn on_publish(
        &self,
        session: &Self::Session,
        client: &ClientInfo,
        message: &Message,
    ) -> impl Future<Output = PublishDecision> + Send {
        let _ = (session, client, message);
        async { PublishDecision::Accept }
    }

    /// Called for every valid filter of a SUBSCRIBE. Default: grant the QoS asked for.
    fn on_subscribe(
        &self,
        session: &Self::Session,
        client: &ClientInfo,
        filter: &TopicFilter,
        options: &SubscribeOptions,
    ) -> impl Future<Output = SubscribeDecision> + Send {
        let _ = (session, client, filter);
        let qos = match options.qos {
            mqttx_router::QoS::AtMostOnce => QoS::AtMostOnce,
            mqttx_router::QoS::AtLeastOnce => QoS::AtLeastOnce,
            _ => QoS::ExactlyOnce,
        };
        async move { SubscribeDecision::Grant(qos) }
    }

    /// Called for every valid filter of an UNSUBSCRIBE, after it was removed. Default: nothing.
    fn on_unsubscribe(
        &self,
        session: &Self::Session,
        client: &ClientInfo,
        filter: &TopicFilter,
    ) -> impl Future<Output = ()> + Send {
        let _ = (session, client, filter);
        async {}
    }

    /// Called when the client acknowledged a QoS 1 or 2 message the broker sent it (PUBACK,
    /// or PUBCOMP for QoS 2). Default: nothing.
    fn on_delivered(
        &self,
        session: &Self::Session,
        client: &ClientInfo,
        delivered: &Delivered,
    ) -> impl Future<Output = ()> + Send {
        let _ = (session, client, delivered);
        async {}
    }

    /// Called when a stored session expires: its client did not come back within the Session
    /// Expiry Interval, and its subscriptions and queued messages are gone. Runs on a task of
    /// its own. Default: nothing.
    fn on_session_expired(&self, client_id: &str) -> impl Future<Output = ()> + Send {
        let _ = client_id;
        async {}
    }

    /// Called for each of the application's own messages sent to this client's connection
    /// with [`Broker::send_to`](crate::Broker::send_to): a bridge from the application's
    /// channels, timers or other services to one connection (what MqttX's `handle_info`
    /// does). The handler downcasts the message to the type it sent and decides what the
    /// connection does: send the client a PUBLISH, disconnect it, or nothing. Called in order
    /// with the connection's other hooks. Default: nothing ([`MessageAction::None`]).
    ///
    /// ```
    /// use mqttx_broker::router::TopicName;
    /// use mqttx_broker::codec::QoS;
    /// use mqttx_broker::{AppMessage, ClientInfo, Handler, Message, MessageAction};
    ///
    /// /// What the application's device service sends to one connection.
    /// struct Downlink { command: String }
    ///
    /// struct Devices;
    ///
    /// impl Handler for Devices {
    ///     type Session = ();
    ///
    ///     async fn on_message(&self, _: &(), client: &ClientInfo, message: AppMessage) -> MessageAction {
    ///         match message.downcast::<Downlink>() {
    ///             Ok(downlink) => {
    ///                 let Ok(topic) = TopicName::new(&format!("devices/{}/commands", client.client_id)) else {
    ///                     return MessageAction::None;
    ///                 };
    ///                 MessageAction::Publish(Message::new(topic, downlink.command, QoS::AtLeastOnce, false))
    ///             }
    ///             Err(_) => MessageAction::None,
    ///         }
    ///     }
    /// }
    /// # let broker = mqttx_broker::Broker::builder().handler(Devices).build();
    /// // From anywhere in the application:
    /// let found = broker.send_to("sensor-7", Downlink { command: "reboot".into() });
    /// # assert!(!found);
    /// ```
    fn on_message(
        &self,
        session: &Self::Session,
        client: &ClientInfo,
        message: AppMessage,
    ) -> impl Future<Output = MessageAction> + Send {
        let _ = (session, client, message);
        async { MessageAction::None }
    }

    /// Called once when an accepted connection ends, with the reason. Default: nothing.
    fn on_disconnect(
        &self,
        session: Self::Session,
        client: &ClientInfo,
        reason: CloseReason,
    ) -> impl Future<Output = ()> + Send {
        let _ = (session, client, reason);
        async {}
    }
}

/// The handler that allows everything: the broker of `mqttx broker`.
#[derive(Clone, Copy, Debug, Default)]
pub struct AllowAll;

impl Handler for AllowAll {
    type Session = ();
}

/// Who a hook is called for.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClientInfo {
    /// The client identifier (assigned by the broker if the client sent none).
    pub client_id: String,
    /// The protocol version.
    pub protocol: ProtocolVersion,
    /// The User Name of the CONNECT.
    pub username: Option<String>,
}

/// A refused CONNECT: the reason code of the CONNACK.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectRefusal {
    code: ReasonCode,
}

impl ConnectRefusal {
    /// A refusal with `code`, e.g. [`ReasonCode::NOT_AUTHORIZED`] (0x87) or
    /// [`ReasonCode::BAD_USER_NAME_OR_PASSWORD`] (0x86). A code that is not a CONNACK error
    /// code becomes 0x80 (Unspecified error).
    pub const fn new(code: ReasonCode) -> Self {
        Self { code }
    }

    /// The reason code.
    pub const fn reason_code(&self) -> ReasonCode {
        self.code
    }
}

/// What [`Handler::on_auth`] decided for one step.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum AuthDecision {
    /// Another round: the client gets AUTH 0x18 with this Authentication Data.
    Continue(Option<Bytes>),
    /// Authenticated: the CONNACK (or, for re-authentication, AUTH 0x00) carries this data.
    Success(Option<Bytes>),
    /// Refused with this reason code: CONNACK at CONNECT, DISCONNECT for re-authentication
    /// (0x87 when the code is not one DISCONNECT may carry).
    Failure(ReasonCode),
}

/// What [`Handler::on_publish`] decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PublishDecision {
    /// Route (and retain) the message.
    Accept,
    /// Drop it; QoS 1 and 2 publishers get PUBACK / PUBREC with this code (MQTT 5.0), e.g.
    /// 0x87 Not authorized. MQTT 3.1.x publishers get a normal acknowledgement.
    Refuse(ReasonCode),
    /// Drop it and disconnect the client with this code (DISCONNECT for MQTT 5.0).
    Disconnect(ReasonCode),
}

/// What [`Handler::on_subscribe`] decided for one filter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SubscribeDecision {
    /// Subscribe with at most this QoS (never more than the client asked for).
    Grant(QoS),
    /// Refuse this filter with a SUBACK code ≥ 0x80, e.g. 0x87 Not authorized (MQTT 3.1.1
    /// clients get 0x80).
    Refuse(ReasonCode),
}

/// An application message for [`Handler::on_message`]: any `Send` value, sent with
/// [`Broker::send_to`](crate::Broker::send_to); downcast it with `Box::downcast`.
pub type AppMessage = Box<dyn Any + Send>;

/// What [`Handler::on_message`] decided the connection does.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum MessageAction {
    /// Nothing.
    None,
    /// Send this message to the client at its QoS and RETAIN flag, as the broker itself
    /// (not routed, not retained, `on_publish` not called); it waits in the client's queue
    /// like any other.
    Publish(Message),
    /// Disconnect the client: DISCONNECT with this code and properties for MQTT 5.0 clients,
    /// then close; its Will is published.
    Disconnect(ServerDisconnect),
}
