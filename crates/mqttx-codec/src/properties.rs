//! MQTT 5.0 properties (§2.2.2): the 27 identifiers, the [`Properties`] set, and their
//! validation, decoding and encoding.

use alloc::borrow::Cow;
use alloc::boxed::Box;
use core::fmt;
use core::ops::{Deref, DerefMut};

use crate::error::{DecodeError, EncodeError};
use crate::items::{Items, UserProperty};
use crate::types::{PacketType, QoS};
use crate::wire::{MAX_VARINT, Out, Reader, Scan, scan, varint_len};

/// A property identifier (MQTT 5.0 §2.2.2.2, Table 2-4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[allow(clippy::exhaustive_enums)] // The 27 identifiers of MQTT 5.0.
#[repr(u8)]
pub enum PropertyId {
    /// 0x01 Payload Format Indicator (Byte).
    PayloadFormatIndicator = 0x01,
    /// 0x02 Message Expiry Interval (Four Byte Integer).
    MessageExpiryInterval = 0x02,
    /// 0x03 Content Type (UTF-8 String).
    ContentType = 0x03,
    /// 0x08 Response Topic (UTF-8 String).
    ResponseTopic = 0x08,
    /// 0x09 Correlation Data (Binary Data).
    CorrelationData = 0x09,
    /// 0x0B Subscription Identifier (Variable Byte Integer).
    SubscriptionIdentifier = 0x0B,
    /// 0x11 Session Expiry Interval (Four Byte Integer).
    SessionExpiryInterval = 0x11,
    /// 0x12 Assigned Client Identifier (UTF-8 String).
    AssignedClientIdentifier = 0x12,
    /// 0x13 Server Keep Alive (Two Byte Integer).
    ServerKeepAlive = 0x13,
    /// 0x15 Authentication Method (UTF-8 String).
    AuthenticationMethod = 0x15,
    /// 0x16 Authentication Data (Binary Data).
    AuthenticationData = 0x16,
    /// 0x17 Request Problem Information (Byte).
    RequestProblemInformation = 0x17,
    /// 0x18 Will Delay Interval (Four Byte Integer).
    WillDelayInterval = 0x18,
    /// 0x19 Request Response Information (Byte).
    RequestResponseInformation = 0x19,
    /// 0x1A Response Information (UTF-8 String).
    ResponseInformation = 0x1A,
    /// 0x1C Server Reference (UTF-8 String).
    ServerReference = 0x1C,
    /// 0x1F Reason String (UTF-8 String).
    ReasonString = 0x1F,
    /// 0x21 Receive Maximum (Two Byte Integer).
    ReceiveMaximum = 0x21,
    /// 0x22 Topic Alias Maximum (Two Byte Integer).
    TopicAliasMaximum = 0x22,
    /// 0x23 Topic Alias (Two Byte Integer).
    TopicAlias = 0x23,
    /// 0x24 Maximum QoS (Byte).
    MaximumQoS = 0x24,
    /// 0x25 Retain Available (Byte).
    RetainAvailable = 0x25,
    /// 0x26 User Property (UTF-8 String Pair).
    UserProperty = 0x26,
    /// 0x27 Maximum Packet Size (Four Byte Integer).
    MaximumPacketSize = 0x27,
    /// 0x28 Wildcard Subscription Available (Byte).
    WildcardSubscriptionAvailable = 0x28,
    /// 0x29 Subscription Identifier Available (Byte).
    SubscriptionIdentifierAvailable = 0x29,
    /// 0x2A Shared Subscription Available (Byte).
    SharedSubscriptionAvailable = 0x2A,
}

/// Where a property set sits; decides which identifiers are allowed (Table 2-4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum PropCtx {
    Connect,
    Will,
    ConnAck,
    Publish,
    /// PUBACK, PUBREC, PUBREL and PUBCOMP.
    PubResp(PacketType),
    Subscribe,
    SubAck,
    Unsubscribe,
    UnsubAck,
    Disconnect,
    Auth,
}

impl PropCtx {
    pub(crate) fn packet(self) -> PacketType {
        match self {
            Self::Connect | Self::Will => PacketType::Connect,
            Self::ConnAck => PacketType::ConnAck,
            Self::Publish => PacketType::Publish,
            Self::PubResp(t) => t,
            Self::Subscribe => PacketType::Subscribe,
            Self::SubAck => PacketType::SubAck,
            Self::Unsubscribe => PacketType::Unsubscribe,
            Self::UnsubAck => PacketType::UnsubAck,
            Self::Disconnect => PacketType::Disconnect,
            Self::Auth => PacketType::Auth,
        }
    }
}

impl PropertyId {
    /// The identifier for a value, if MQTT 5.0 defines it.
    pub const fn from_u32(value: u32) -> Option<Self> {
        use PropertyId::*;
        Some(match value {
            0x01 => PayloadFormatIndicator,
            0x02 => MessageExpiryInterval,
            0x03 => ContentType,
            0x08 => ResponseTopic,
            0x09 => CorrelationData,
            0x0B => SubscriptionIdentifier,
            0x11 => SessionExpiryInterval,
            0x12 => AssignedClientIdentifier,
            0x13 => ServerKeepAlive,
            0x15 => AuthenticationMethod,
            0x16 => AuthenticationData,
            0x17 => RequestProblemInformation,
            0x18 => WillDelayInterval,
            0x19 => RequestResponseInformation,
            0x1A => ResponseInformation,
            0x1C => ServerReference,
            0x1F => ReasonString,
            0x21 => ReceiveMaximum,
            0x22 => TopicAliasMaximum,
            0x23 => TopicAlias,
            0x24 => MaximumQoS,
            0x25 => RetainAvailable,
            0x26 => UserProperty,
            0x27 => MaximumPacketSize,
            0x28 => WildcardSubscriptionAvailable,
            0x29 => SubscriptionIdentifierAvailable,
            0x2A => SharedSubscriptionAvailable,
            _ => return None,
        })
    }

    /// Whether Table 2-4 allows this property in the given place.
    pub(crate) const fn allowed_in(self, ctx: PropCtx) -> bool {
        use PropCtx as C;
        use PropertyId::*;
        match self {
            UserProperty => true,
            PayloadFormatIndicator
            | MessageExpiryInterval
            | ContentType
            | ResponseTopic
            | CorrelationData => matches!(ctx, C::Publish | C::Will),
            SubscriptionIdentifier => matches!(ctx, C::Publish | C::Subscribe),
            SessionExpiryInterval => matches!(ctx, C::Connect | C::ConnAck | C::Disconnect),
            AssignedClientIdentifier
            | ServerKeepAlive
            | ResponseInformation
            | MaximumQoS
            | RetainAvailable
            | WildcardSubscriptionAvailable
            | SubscriptionIdentifierAvailable
            | SharedSubscriptionAvailable => matches!(ctx, C::ConnAck),
            AuthenticationMethod | AuthenticationData => {
                matches!(ctx, C::Connect | C::ConnAck | C::Auth)
            }
            RequestProblemInformation | RequestResponseInformation => matches!(ctx, C::Connect),
            WillDelayInterval => matches!(ctx, C::Will),
            ServerReference => matches!(ctx, C::ConnAck | C::Disconnect),
            ReasonString => matches!(
                ctx,
                C::ConnAck | C::PubResp(_) | C::SubAck | C::UnsubAck | C::Disconnect | C::Auth
            ),
            ReceiveMaximum | TopicAliasMaximum | MaximumPacketSize => {
                matches!(ctx, C::Connect | C::ConnAck)
            }
            TopicAlias => matches!(ctx, C::Publish),
        }
    }

    /// Advances past this property's value (already validated or not: every read is checked).
    pub(crate) fn skip_value(self, r: &mut Reader<'_>) -> Result<(), DecodeError> {
        use PropertyId::*;
        match self {
            PayloadFormatIndicator
            | RequestProblemInformation
            | RequestResponseInformation
            | MaximumQoS
            | RetainAvailable
            | WildcardSubscriptionAvailable
            | SubscriptionIdentifierAvailable
            | SharedSubscriptionAvailable => {
                r.u8()?;
            }
            ServerKeepAlive | ReceiveMaximum | TopicAliasMaximum | TopicAlias => {
                r.u16()?;
            }
            MessageExpiryInterval
            | SessionExpiryInterval
            | WillDelayInterval
            | MaximumPacketSize => {
                r.u32()?;
            }
            SubscriptionIdentifier => {
                r.varint()?;
            }
            ContentType
            | ResponseTopic
            | AssignedClientIdentifier
            | AuthenticationMethod
            | ResponseInformation
            | ServerReference
            | ReasonString
            | CorrelationData
            | AuthenticationData => {
                r.binary()?;
            }
            UserProperty => {
                r.binary()?;
                r.binary()?;
            }
        }
        Ok(())
    }
}

/// The properties of one packet (or of a Will), MQTT 5.0 §2.2.2.
///
/// Every field is optional; which ones a packet may carry is checked on decode and on encode
/// (Table 2-4). Strings and binary data borrow from the decoded input. User Properties and
/// Subscription Identifiers may repeat and are kept as [`Items`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[allow(clippy::exhaustive_structs)] // The 27 properties of MQTT 5.0.
pub struct Properties<'a> {
    /// 0x01: the payload is UTF-8 (`true`) or unspecified bytes (`false`).
    pub payload_format_indicator: Option<bool>,
    /// 0x02: lifetime of the message in seconds.
    pub message_expiry_interval: Option<u32>,
    /// 0x03: content type of the payload.
    pub content_type: Option<Cow<'a, str>>,
    /// 0x08: topic name for a response message.
    pub response_topic: Option<Cow<'a, str>>,
    /// 0x09: correlation data of a request/response.
    pub correlation_data: Option<Cow<'a, [u8]>>,
    /// 0x0B: subscription identifiers (one in SUBSCRIBE; any number in PUBLISH).
    pub subscription_identifiers: Items<'a, u32>,
    /// 0x11: session expiry interval in seconds.
    pub session_expiry_interval: Option<u32>,
    /// 0x12: client identifier assigned by the server.
    pub assigned_client_identifier: Option<Cow<'a, str>>,
    /// 0x13: keep alive the server requires, in seconds.
    pub server_keep_alive: Option<u16>,
    /// 0x15: name of the enhanced authentication method.
    pub authentication_method: Option<Cow<'a, str>>,
    /// 0x16: enhanced authentication data.
    pub authentication_data: Option<Cow<'a, [u8]>>,
    /// 0x17: whether the server may send Reason String and User Properties on failures.
    pub request_problem_information: Option<bool>,
    /// 0x18: delay before the Will is published, in seconds.
    pub will_delay_interval: Option<u32>,
    /// 0x19: whether the client asks for Response Information in CONNACK.
    pub request_response_information: Option<bool>,
    /// 0x1A: basis for response topics.
    pub response_information: Option<Cow<'a, str>>,
    /// 0x1C: another server the client may use.
    pub server_reference: Option<Cow<'a, str>>,
    /// 0x1F: human-readable diagnostic.
    pub reason_string: Option<Cow<'a, str>>,
    /// 0x21: how many QoS 1 and 2 publications the sender will process concurrently.
    pub receive_maximum: Option<u16>,
    /// 0x22: the highest Topic Alias the sender accepts.
    pub topic_alias_maximum: Option<u16>,
    /// 0x23: a Topic Alias for this PUBLISH.
    pub topic_alias: Option<u16>,
    /// 0x24: the highest QoS the server supports (0 or 1; absent means 2).
    pub maximum_qos: Option<QoS>,
    /// 0x25: whether the server supports retained messages.
    pub retain_available: Option<bool>,
    /// 0x26: application-defined name/value pairs.
    pub user_properties: Items<'a, UserProperty>,
    /// 0x27: the largest packet the sender accepts.
    pub maximum_packet_size: Option<u32>,
    /// 0x28: whether the server supports wildcard subscriptions.
    pub wildcard_subscription_available: Option<bool>,
    /// 0x29: whether the server supports subscription identifiers.
    pub subscription_identifier_available: Option<bool>,
    /// 0x2A: whether the server supports shared subscriptions.
    pub shared_subscription_available: Option<bool>,
}

impl Properties<'_> {
    /// An empty property set.
    pub const fn new() -> Self {
        Self {
            payload_format_indicator: None,
            message_expiry_interval: None,
            content_type: None,
            response_topic: None,
            correlation_data: None,
            subscription_identifiers: Items::new(),
            session_expiry_interval: None,
            assigned_client_identifier: None,
            server_keep_alive: None,
            authentication_method: None,
            authentication_data: None,
            request_problem_information: None,
            will_delay_interval: None,
            request_response_information: None,
            response_information: None,
            server_reference: None,
            reason_string: None,
            receive_maximum: None,
            topic_alias_maximum: None,
            topic_alias: None,
            maximum_qos: None,
            retain_available: None,
            user_properties: Items::new(),
            maximum_packet_size: None,
            wildcard_subscription_available: None,
            subscription_identifier_available: None,
            shared_subscription_available: None,
        }
    }

    /// Whether no property is set.
    pub fn is_empty(&self) -> bool {
        let Self {
            payload_format_indicator,
            message_expiry_interval,
            content_type,
            response_topic,
            correlation_data,
            subscription_identifiers,
            session_expiry_interval,
            assigned_client_identifier,
            server_keep_alive,
            authentication_method,
            authentication_data,
            request_problem_information,
            will_delay_interval,
            request_response_information,
            response_information,
            server_reference,
            reason_string,
            receive_maximum,
            topic_alias_maximum,
            topic_alias,
            maximum_qos,
            retain_available,
            user_properties,
            maximum_packet_size,
            wildcard_subscription_available,
            subscription_identifier_available,
            shared_subscription_available,
        } = self;
        payload_format_indicator.is_none()
            && message_expiry_interval.is_none()
            && content_type.is_none()
            && response_topic.is_none()
            && correlation_data.is_none()
            && subscription_identifiers.is_empty()
            && session_expiry_interval.is_none()
            && assigned_client_identifier.is_none()
            && server_keep_alive.is_none()
            && authentication_method.is_none()
            && authentication_data.is_none()
            && request_problem_information.is_none()
            && will_delay_interval.is_none()
            && request_response_information.is_none()
            && response_information.is_none()
            && server_reference.is_none()
            && reason_string.is_none()
            && receive_maximum.is_none()
            && topic_alias_maximum.is_none()
            && topic_alias.is_none()
            && maximum_qos.is_none()
            && retain_available.is_none()
            && user_properties.is_empty()
            && maximum_packet_size.is_none()
            && wildcard_subscription_available.is_none()
            && subscription_identifier_available.is_none()
            && shared_subscription_available.is_none()
    }

    /// Copies every borrowed value so the set no longer borrows the input.
    pub fn into_owned(self) -> Properties<'static> {
        fn s(v: Option<Cow<'_, str>>) -> Option<Cow<'static, str>> {
            v.map(|c| Cow::Owned(c.into_owned()))
        }
        fn b(v: Option<Cow<'_, [u8]>>) -> Option<Cow<'static, [u8]>> {
            v.map(|c| Cow::Owned(c.into_owned()))
        }
        Properties {
            payload_format_indicator: self.payload_format_indicator,
            message_expiry_interval: self.message_expiry_interval,
            content_type: s(self.content_type),
            response_topic: s(self.response_topic),
            correlation_data: b(self.correlation_data),
            subscription_identifiers: self.subscription_identifiers.into_owned(),
            session_expiry_interval: self.session_expiry_interval,
            assigned_client_identifier: s(self.assigned_client_identifier),
            server_keep_alive: self.server_keep_alive,
            authentication_method: s(self.authentication_method),
            authentication_data: b(self.authentication_data),
            request_problem_information: self.request_problem_information,
            will_delay_interval: self.will_delay_interval,
            request_response_information: self.request_response_information,
            response_information: s(self.response_information),
            server_reference: s(self.server_reference),
            reason_string: s(self.reason_string),
            receive_maximum: self.receive_maximum,
            topic_alias_maximum: self.topic_alias_maximum,
            topic_alias: self.topic_alias,
            maximum_qos: self.maximum_qos,
            retain_available: self.retain_available,
            user_properties: self.user_properties.into_owned(),
            maximum_packet_size: self.maximum_packet_size,
            wildcard_subscription_available: self.wildcard_subscription_available,
            subscription_identifier_available: self.subscription_identifier_available,
            shared_subscription_available: self.shared_subscription_available,
        }
    }
}

/// The properties of a packet as the packet holds them: nothing at all when there are none
/// (no allocation, and a small packet), or one boxed [`Properties`].
///
/// It dereferences to [`Properties`], so `publish.properties.content_type` reads as a field;
/// assigning through it (`publish.properties.content_type = Some(..)`) allocates the box on
/// first use.
///
/// ```
/// use mqttx_codec::{Props, Publish};
/// let mut publish = Publish::new("t", &b""[..]);
/// assert!(publish.properties.is_empty());
/// publish.properties.message_expiry_interval = Some(60);
/// assert_eq!(publish.properties.message_expiry_interval, Some(60));
/// assert_eq!(Props::new(), Props::from(mqttx_codec::Properties::new()));
/// ```
#[derive(Clone, Default)]
pub struct Props<'a>(Option<Box<PropsInner<'a>>>);

#[derive(Clone)]
struct PropsInner<'a> {
    props: Properties<'a>,
    /// The property block this set was decoded from, and where it sat, while the set is
    /// unmodified: encoding the same kind of packet again copies it as it is.
    raw: Option<(Cow<'a, [u8]>, PropCtx)>,
}

static EMPTY: Properties<'static> = Properties::new();

impl<'a> Props<'a> {
    /// No properties.
    pub const fn new() -> Self {
        Self(None)
    }

    /// Whether no property is set.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.0.as_ref().is_none_or(|p| p.props.is_empty())
    }

    /// Copies every borrowed value so the set no longer borrows the input.
    pub fn into_owned(self) -> Props<'static> {
        Props(self.0.map(|inner| {
            let PropsInner { props, raw } = *inner;
            Box::new(PropsInner {
                props: props.into_owned(),
                raw: raw.map(|(bytes, ctx)| (Cow::Owned(bytes.into_owned()), ctx)),
            })
        }))
    }

    /// The boxed set, if one was allocated.
    #[inline]
    pub fn as_option(&self) -> Option<&Properties<'a>> {
        self.0.as_deref().map(|inner| &inner.props)
    }

    /// The decoded block, if the set is unmodified and was decoded for `ctx`.
    #[inline]
    pub(crate) fn raw_for(&self, ctx: PropCtx) -> Option<&[u8]> {
        match self.0.as_deref()?.raw.as_ref()? {
            (bytes, c) if *c == ctx => Some(bytes),
            _ => None,
        }
    }
}

impl<'a> Deref for Props<'a> {
    type Target = Properties<'a>;

    #[inline]
    fn deref(&self) -> &Properties<'a> {
        match &self.0 {
            Some(inner) => &inner.props,
            None => &EMPTY,
        }
    }
}

impl DerefMut for Props<'_> {
    /// Mutable access forgets the decoded block, so a changed set is encoded from its fields.
    #[inline]
    fn deref_mut(&mut self) -> &mut Self::Target {
        let inner = self.0.get_or_insert_with(|| {
            Box::new(PropsInner {
                props: Properties::new(),
                raw: None,
            })
        });
        inner.raw = None;
        &mut inner.props
    }
}

impl<'a> From<Properties<'a>> for Props<'a> {
    fn from(props: Properties<'a>) -> Self {
        Self(Some(Box::new(PropsInner { props, raw: None })))
    }
}

impl PartialEq for Props<'_> {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl Eq for Props<'_> {}

impl fmt::Debug for Props<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

/// A Byte property that must be 0 or 1 ("It is a Protocol Error to include … a value other
/// than 0 or 1", MQTT 5.0 §3.1.2.11.6, §3.2.2.3.5, §3.2.2.3.11–13).
fn read_bool(r: &mut Reader<'_>, id: PropertyId) -> Result<bool, DecodeError> {
    match r.u8()? {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(DecodeError::InvalidBooleanProperty(id as u8)),
    }
}

fn read_str<'a>(r: &mut Reader<'a>) -> Result<Option<Cow<'a, str>>, DecodeError> {
    Ok(Some(Cow::Borrowed(r.string()?)))
}

fn read_bin<'a>(r: &mut Reader<'a>) -> Result<Option<Cow<'a, [u8]>>, DecodeError> {
    Ok(Some(Cow::Borrowed(r.binary()?)))
}

/// Reads a Property Length and the properties after it.
pub(crate) fn decode_properties<'a>(
    r: &mut Reader<'a>,
    ctx: PropCtx,
) -> Result<Props<'a>, DecodeError> {
    let len = r.varint()? as usize;
    let block = r.take(len)?;
    if block.is_empty() {
        return Ok(Props::new());
    }
    let mut boxed = Box::new(PropsInner {
        props: Properties::new(),
        raw: Some((Cow::Borrowed(block), ctx)),
    });
    let p = &mut boxed.props;
    let mut br = Reader::new(block);
    let mut seen: u64 = 0;
    let mut users = 0usize;
    let mut sub_ids = 0usize;
    while !br.is_empty() {
        let raw = br.varint()?;
        let id = PropertyId::from_u32(raw).ok_or(DecodeError::UnknownProperty(
            u8::try_from(raw).unwrap_or(u8::MAX),
        ))?;
        if !id.allowed_in(ctx) {
            return Err(DecodeError::PropertyNotAllowed {
                id: id as u8,
                packet: ctx.packet(),
            });
        }
        // MQTT 5.0 §2.2.2.2: "It is a Protocol Error to include the same property more than
        // once", except User Property, and Subscription Identifier in a PUBLISH (§3.3.2.3.8).
        let repeatable = id == PropertyId::UserProperty
            || (id == PropertyId::SubscriptionIdentifier && ctx == PropCtx::Publish);
        let bit = 1u64 << (id as u8);
        if !repeatable {
            if seen & bit != 0 {
                return Err(DecodeError::DuplicateProperty(id as u8));
            }
            seen |= bit;
        }
        use PropertyId::*;
        match id {
            PayloadFormatIndicator => p.payload_format_indicator = Some(read_bool(&mut br, id)?),
            MessageExpiryInterval => p.message_expiry_interval = Some(br.u32()?),
            ContentType => p.content_type = read_str(&mut br)?,
            ResponseTopic => {
                // [MQTT-3.3.2-14] The Response Topic MUST be a UTF-8 Encoded String; it is a
                // topic name, so wildcards are not allowed (MQTT 5.0 §3.3.2.3.5).
                let topic = br.string()?;
                if topic.contains(['+', '#']) {
                    return Err(DecodeError::WildcardInTopicName);
                }
                p.response_topic = Some(Cow::Borrowed(topic));
            }
            CorrelationData => p.correlation_data = read_bin(&mut br)?,
            SubscriptionIdentifier => {
                // "It is a Protocol Error if the Subscription Identifier has a value of 0."
                if br.varint()? == 0 {
                    return Err(DecodeError::ZeroPropertyValue(id as u8));
                }
                sub_ids += 1;
            }
            SessionExpiryInterval => p.session_expiry_interval = Some(br.u32()?),
            AssignedClientIdentifier => p.assigned_client_identifier = read_str(&mut br)?,
            ServerKeepAlive => p.server_keep_alive = Some(br.u16()?),
            AuthenticationMethod => p.authentication_method = read_str(&mut br)?,
            AuthenticationData => p.authentication_data = read_bin(&mut br)?,
            RequestProblemInformation => {
                p.request_problem_information = Some(read_bool(&mut br, id)?);
            }
            WillDelayInterval => p.will_delay_interval = Some(br.u32()?),
            RequestResponseInformation => {
                p.request_response_information = Some(read_bool(&mut br, id)?);
            }
            ResponseInformation => p.response_information = read_str(&mut br)?,
            ServerReference => p.server_reference = read_str(&mut br)?,
            ReasonString => p.reason_string = read_str(&mut br)?,
            ReceiveMaximum => {
                // "It is a Protocol Error to include the Receive Maximum value more than once
                // or for it to have the value 0." (MQTT 5.0 §3.1.2.11.3)
                let v = br.u16()?;
                if v == 0 {
                    return Err(DecodeError::ZeroPropertyValue(id as u8));
                }
                p.receive_maximum = Some(v);
            }
            TopicAliasMaximum => p.topic_alias_maximum = Some(br.u16()?),
            TopicAlias => {
                // [MQTT-3.3.2-8] A sender MUST NOT send a PUBLISH packet containing a Topic
                // Alias which has the value 0.
                let v = br.u16()?;
                if v == 0 {
                    return Err(DecodeError::TopicAliasZero);
                }
                p.topic_alias = Some(v);
            }
            MaximumQoS => {
                // "It is a Protocol Error to include Maximum QoS more than once, or to have a
                // value other than 0 or 1." (MQTT 5.0 §3.2.2.3.4)
                p.maximum_qos = Some(match br.u8()? {
                    0 => QoS::AtMostOnce,
                    1 => QoS::AtLeastOnce,
                    _ => return Err(DecodeError::InvalidBooleanProperty(id as u8)),
                });
            }
            RetainAvailable => p.retain_available = Some(read_bool(&mut br, id)?),
            UserProperty => {
                br.string()?;
                br.string()?;
                users += 1;
            }
            MaximumPacketSize => {
                // "It is a Protocol Error to include the Maximum Packet Size more than once,
                // or for the value to be set to zero." (MQTT 5.0 §3.1.2.11.4)
                let v = br.u32()?;
                if v == 0 {
                    return Err(DecodeError::ZeroPropertyValue(id as u8));
                }
                p.maximum_packet_size = Some(v);
            }
            WildcardSubscriptionAvailable => {
                p.wildcard_subscription_available = Some(read_bool(&mut br, id)?);
            }
            SubscriptionIdentifierAvailable => {
                p.subscription_identifier_available = Some(read_bool(&mut br, id)?);
            }
            SharedSubscriptionAvailable => {
                p.shared_subscription_available = Some(read_bool(&mut br, id)?);
            }
        }
    }
    // MQTT 5.0 §3.1.2.11.10: "It is a Protocol Error to include Authentication Data if there
    // is no Authentication Method."
    if p.authentication_data.is_some() && p.authentication_method.is_none() {
        return Err(DecodeError::AuthenticationDataWithoutMethod);
    }
    if users > 0 {
        p.user_properties = Items::from_wire(block, users);
    }
    if sub_ids > 0 {
        p.subscription_identifiers = Items::from_wire(block, sub_ids);
    }
    Ok(Props(Some(boxed)))
}

/// Checks a string field for encoding: at most 65 535 bytes and no U+0000.
#[inline]
pub(crate) fn check_str(s: &str) -> Result<usize, EncodeError> {
    if s.len() > usize::from(u16::MAX) {
        return Err(EncodeError::FieldTooLong { len: s.len() });
    }
    if scan(s.as_bytes(), false) != Scan::Clean {
        return Err(EncodeError::NullCharacter);
    }
    Ok(2 + s.len())
}

/// Checks a binary field for encoding: at most 65 535 bytes.
#[inline]
pub(crate) fn check_bin(b: &[u8]) -> Result<usize, EncodeError> {
    if b.len() > usize::from(u16::MAX) {
        return Err(EncodeError::FieldTooLong { len: b.len() });
    }
    Ok(2 + b.len())
}

/// Validates `p` for `ctx` and returns the length of its encoded content (without the
/// Property Length prefix).
pub(crate) fn properties_len(p: &Properties<'_>, ctx: PropCtx) -> Result<usize, EncodeError> {
    let mut n = 0usize;
    let mut add = |id: PropertyId, len: usize| -> Result<(), EncodeError> {
        if !id.allowed_in(ctx) {
            return Err(EncodeError::PropertyNotAllowed {
                id: id as u8,
                packet: ctx.packet(),
            });
        }
        n += 1 + len;
        Ok(())
    };
    use PropertyId::*;
    if p.payload_format_indicator.is_some() {
        add(PayloadFormatIndicator, 1)?;
    }
    if p.message_expiry_interval.is_some() {
        add(MessageExpiryInterval, 4)?;
    }
    if let Some(v) = &p.content_type {
        add(ContentType, check_str(v)?)?;
    }
    if let Some(v) = &p.response_topic {
        if v.contains(['+', '#']) {
            return Err(EncodeError::InvalidTopicName("wildcard in response topic"));
        }
        add(ResponseTopic, check_str(v)?)?;
    }
    if let Some(v) = &p.correlation_data {
        add(CorrelationData, check_bin(v)?)?;
    }
    let sub_ids = p.subscription_identifiers.len();
    if sub_ids > 1 && ctx != PropCtx::Publish {
        return Err(EncodeError::PropertyOutOfRange(
            SubscriptionIdentifier as u8,
        ));
    }
    for id in p.subscription_identifiers.iter() {
        if id == 0 || id > MAX_VARINT {
            return Err(EncodeError::PropertyOutOfRange(
                SubscriptionIdentifier as u8,
            ));
        }
        add(SubscriptionIdentifier, varint_len(id))?;
    }
    if p.session_expiry_interval.is_some() {
        add(SessionExpiryInterval, 4)?;
    }
    if let Some(v) = &p.assigned_client_identifier {
        add(AssignedClientIdentifier, check_str(v)?)?;
    }
    if p.server_keep_alive.is_some() {
        add(ServerKeepAlive, 2)?;
    }
    if let Some(v) = &p.authentication_method {
        add(AuthenticationMethod, check_str(v)?)?;
    }
    if let Some(v) = &p.authentication_data {
        if p.authentication_method.is_none() {
            return Err(EncodeError::PropertyOutOfRange(AuthenticationData as u8));
        }
        add(AuthenticationData, check_bin(v)?)?;
    }
    if p.request_problem_information.is_some() {
        add(RequestProblemInformation, 1)?;
    }
    if p.will_delay_interval.is_some() {
        add(WillDelayInterval, 4)?;
    }
    if p.request_response_information.is_some() {
        add(RequestResponseInformation, 1)?;
    }
    if let Some(v) = &p.response_information {
        add(ResponseInformation, check_str(v)?)?;
    }
    if let Some(v) = &p.server_reference {
        add(ServerReference, check_str(v)?)?;
    }
    if let Some(v) = &p.reason_string {
        add(ReasonString, check_str(v)?)?;
    }
    if let Some(v) = p.receive_maximum {
        if v == 0 {
            return Err(EncodeError::PropertyOutOfRange(ReceiveMaximum as u8));
        }
        add(ReceiveMaximum, 2)?;
    }
    if p.topic_alias_maximum.is_some() {
        add(TopicAliasMaximum, 2)?;
    }
    if let Some(v) = p.topic_alias {
        if v == 0 {
            return Err(EncodeError::PropertyOutOfRange(TopicAlias as u8));
        }
        add(TopicAlias, 2)?;
    }
    if let Some(v) = p.maximum_qos {
        if v == QoS::ExactlyOnce {
            return Err(EncodeError::PropertyOutOfRange(MaximumQoS as u8));
        }
        add(MaximumQoS, 1)?;
    }
    if p.retain_available.is_some() {
        add(RetainAvailable, 1)?;
    }
    let mut raw_user = 0;
    if let Some(block) = p.user_properties.wire() {
        // Decoded User Properties were validated then: their bytes are reused as they are.
        raw_user = raw_items(block)
            .filter(|(id, _)| *id == UserProperty)
            .map(|(_, item)| item.len())
            .sum::<usize>();
    } else {
        for (k, v) in p.user_properties.iter() {
            add(UserProperty, check_str(k)? + check_str(v)?)?;
        }
    }
    if let Some(v) = p.maximum_packet_size {
        if v == 0 {
            return Err(EncodeError::PropertyOutOfRange(MaximumPacketSize as u8));
        }
        add(MaximumPacketSize, 4)?;
    }
    if p.wildcard_subscription_available.is_some() {
        add(WildcardSubscriptionAvailable, 1)?;
    }
    if p.subscription_identifier_available.is_some() {
        add(SubscriptionIdentifierAvailable, 1)?;
    }
    if p.shared_subscription_available.is_some() {
        add(SharedSubscriptionAvailable, 1)?;
    }
    Ok(n + raw_user)
}

/// Writes the Property Length `len` (from [`properties_len`]) and the properties.
pub(crate) fn write_properties<O: Out>(p: &Props<'_>, ctx: PropCtx, len: usize, out: &mut O) {
    // `len` was bounded by the packet size check, which is below the varint maximum.
    out.put_varint(len as u32);
    if len == 0 {
        return;
    }
    if let Some(raw) = p.raw_for(ctx) {
        out.put(raw);
        return;
    }
    use PropertyId::*;
    let byte = |out: &mut O, id: PropertyId, v: u8| {
        out.put_u8(id as u8);
        out.put_u8(v);
    };
    let str_ = |out: &mut O, id: PropertyId, v: &[u8]| {
        out.put_u8(id as u8);
        out.put_binary(v);
    };
    if let Some(v) = p.payload_format_indicator {
        byte(out, PayloadFormatIndicator, v as u8);
    }
    if let Some(v) = p.message_expiry_interval {
        out.put_u8(MessageExpiryInterval as u8);
        out.put_u32(v);
    }
    if let Some(v) = &p.content_type {
        str_(out, ContentType, v.as_bytes());
    }
    if let Some(v) = &p.response_topic {
        str_(out, ResponseTopic, v.as_bytes());
    }
    if let Some(v) = &p.correlation_data {
        str_(out, CorrelationData, v);
    }
    for v in p.subscription_identifiers.iter() {
        out.put_u8(SubscriptionIdentifier as u8);
        out.put_varint(v);
    }
    if let Some(v) = p.session_expiry_interval {
        out.put_u8(SessionExpiryInterval as u8);
        out.put_u32(v);
    }
    if let Some(v) = &p.assigned_client_identifier {
        str_(out, AssignedClientIdentifier, v.as_bytes());
    }
    if let Some(v) = p.server_keep_alive {
        out.put_u8(ServerKeepAlive as u8);
        out.put_u16(v);
    }
    if let Some(v) = &p.authentication_method {
        str_(out, AuthenticationMethod, v.as_bytes());
    }
    if let Some(v) = &p.authentication_data {
        str_(out, AuthenticationData, v);
    }
    if let Some(v) = p.request_problem_information {
        byte(out, RequestProblemInformation, v as u8);
    }
    if let Some(v) = p.will_delay_interval {
        out.put_u8(WillDelayInterval as u8);
        out.put_u32(v);
    }
    if let Some(v) = p.request_response_information {
        byte(out, RequestResponseInformation, v as u8);
    }
    if let Some(v) = &p.response_information {
        str_(out, ResponseInformation, v.as_bytes());
    }
    if let Some(v) = &p.server_reference {
        str_(out, ServerReference, v.as_bytes());
    }
    if let Some(v) = &p.reason_string {
        str_(out, ReasonString, v.as_bytes());
    }
    if let Some(v) = p.receive_maximum {
        out.put_u8(ReceiveMaximum as u8);
        out.put_u16(v);
    }
    if let Some(v) = p.topic_alias_maximum {
        out.put_u8(TopicAliasMaximum as u8);
        out.put_u16(v);
    }
    if let Some(v) = p.topic_alias {
        out.put_u8(TopicAlias as u8);
        out.put_u16(v);
    }
    if let Some(v) = p.maximum_qos {
        byte(out, MaximumQoS, v.as_u8());
    }
    if let Some(v) = p.retain_available {
        byte(out, RetainAvailable, v as u8);
    }
    if let Some(block) = p.user_properties.wire() {
        for (id, item) in raw_items(block) {
            if id == UserProperty {
                out.put(item);
            }
        }
    } else {
        for (k, v) in p.user_properties.iter() {
            out.put_u8(UserProperty as u8);
            out.put_binary(k.as_bytes());
            out.put_binary(v.as_bytes());
        }
    }
    if let Some(v) = p.maximum_packet_size {
        out.put_u8(MaximumPacketSize as u8);
        out.put_u32(v);
    }
    if let Some(v) = p.wildcard_subscription_available {
        byte(out, WildcardSubscriptionAvailable, v as u8);
    }
    if let Some(v) = p.subscription_identifier_available {
        byte(out, SubscriptionIdentifierAvailable, v as u8);
    }
    if let Some(v) = p.shared_subscription_available {
        byte(out, SharedSubscriptionAvailable, v as u8);
    }
}

/// Each property of a validated property block: its identifier and the bytes of the whole
/// item (identifier included).
fn raw_items(block: &[u8]) -> impl Iterator<Item = (PropertyId, &[u8])> {
    let mut rest = block;
    core::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let mut r = Reader::new(rest);
        let id = PropertyId::from_u32(r.varint().ok()?)?;
        id.skip_value(&mut r).ok()?;
        let (item, tail) = rest.split_at(rest.len() - r.remaining());
        rest = tail;
        Some((id, item))
    })
}

/// The full encoded size of a property set: Property Length prefix plus content.
#[inline]
pub(crate) fn with_prefix(len: usize) -> usize {
    varint_len(u32::try_from(len).unwrap_or(u32::MAX)) + len
}

#[cfg(test)]
mod tests {
    use alloc::vec::Vec;

    use crate::{
        Connect, DecodeContext, EncodeContext, EncodeError, Packet, PacketType, ProtocolVersion,
        Publish, QoS, Will, decode, encode,
    };

    fn v5_publish_bytes() -> Vec<u8> {
        let mut p = Publish::new("t", &b"x"[..]);
        p.properties.content_type = Some("a".into());
        p.properties.topic_alias = Some(3);
        let mut out = Vec::new();
        encode(
            &Packet::Publish(p),
            &EncodeContext::new(ProtocolVersion::V5),
            &mut out,
        )
        .unwrap();
        out
    }

    #[test]
    fn a_decoded_block_is_reused_until_the_set_is_modified() {
        let bytes = v5_publish_bytes();
        let cx = DecodeContext::new(ProtocolVersion::V5);
        let (packet, _) = decode(&bytes, &cx).unwrap().unwrap();
        let Packet::Publish(mut p) = packet else {
            unreachable!()
        };
        let ecx = EncodeContext::new(ProtocolVersion::V5);

        let mut same = Vec::new();
        encode(&Packet::Publish(p.clone()), &ecx, &mut same).unwrap();
        assert_eq!(same, bytes);

        // A change through `DerefMut` must show in the encoding.
        p.properties.content_type = Some("changed".into());
        let mut changed = Vec::new();
        encode(&Packet::Publish(p), &ecx, &mut changed).unwrap();
        let (again, _) = decode(&changed, &cx).unwrap().unwrap();
        let Packet::Publish(again) = again else {
            unreachable!()
        };
        assert_eq!(again.properties.content_type.as_deref(), Some("changed"));
    }

    #[test]
    fn a_decoded_block_moved_to_another_packet_is_validated_again() {
        let bytes = v5_publish_bytes();
        let (packet, _) = decode(&bytes, &DecodeContext::new(ProtocolVersion::V5))
            .unwrap()
            .unwrap();
        let Packet::Publish(p) = packet else {
            unreachable!()
        };
        // Topic Alias is allowed in PUBLISH but not in Will Properties (Table 2-4).
        let mut connect = Connect::new(ProtocolVersion::V5, "c");
        connect.will = Some(alloc::boxed::Box::new(Will {
            qos: QoS::AtMostOnce,
            retain: false,
            properties: p.properties,
            topic: "w".into(),
            payload: (&b""[..]).into(),
        }));
        let err = encode(
            &Packet::Connect(connect),
            &EncodeContext::new(ProtocolVersion::V5),
            &mut Vec::new(),
        )
        .unwrap_err();
        assert_eq!(
            err,
            EncodeError::PropertyNotAllowed {
                id: 0x23,
                packet: PacketType::Connect
            }
        );
    }
}
