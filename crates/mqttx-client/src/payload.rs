//! Typed payloads (features `json` and `protobuf`): publish a value, decode a message.
//!
//! With `json`, `Client::publish_json` serializes any `serde::Serialize` value with
//! serde_json and `PayloadExt::decode_json` deserializes a received payload. With
//! `protobuf`, `Client::publish_protobuf` encodes any `prost::Message` and
//! `PayloadExt::decode_protobuf` decodes one. Over MQTT 5.0 the PUBLISH also says what it
//! carries: Content Type `application/json` with Payload Format Indicator 1 (UTF-8) for
//! JSON, Content Type `application/x-protobuf` for protobuf (MQTT 5.0 §3.3.2.3.2, §3.3.2.3.9).
//! MQTT 3.1.1 has no properties: the payload alone goes out.

use std::fmt;

#[cfg(any(feature = "json", feature = "protobuf"))]
use mqttx_codec::{Publish, QoS};

#[cfg(any(feature = "json", feature = "protobuf"))]
use crate::{Client, Error, PublishHandle};

/// The Content Type of `Client::publish_json` (MQTT 5.0).
pub const JSON_CONTENT_TYPE: &str = "application/json";
/// The Content Type of `Client::publish_protobuf` (MQTT 5.0).
pub const PROTOBUF_CONTENT_TYPE: &str = "application/x-protobuf";

/// A payload that did not encode or decode. The cause is in [`source`](std::error::Error::source);
/// message text is unstable.
#[derive(Debug)]
pub struct PayloadError {
    what: &'static str,
    source: Box<dyn std::error::Error + Send + Sync>,
}

impl PayloadError {
    #[cfg(any(feature = "json", feature = "protobuf"))]
    fn new(what: &'static str, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self {
            what,
            source: Box::new(source),
        }
    }
}

impl fmt::Display for PayloadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.what)
    }
}

impl std::error::Error for PayloadError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.source)
    }
}

/// Decoding helpers on a received [`Publish`].
///
/// ```
/// # #[cfg(feature = "json")] {
/// use mqttx_client::codec::Publish;
/// use mqttx_client::payload::PayloadExt;
///
/// let msg = Publish::new("sensors/room1", &br#"{"celsius":21.5}"#[..]);
/// let value: serde_json::Value = msg.decode_json().unwrap();
/// assert_eq!(value["celsius"], 21.5);
/// # }
/// ```
#[cfg(any(feature = "json", feature = "protobuf"))]
pub trait PayloadExt {
    /// The payload as JSON, deserialized into `T`.
    #[cfg(feature = "json")]
    fn decode_json<T: serde::de::DeserializeOwned>(&self) -> Result<T, PayloadError>;

    /// The payload as a protobuf message `M`.
    #[cfg(feature = "protobuf")]
    fn decode_protobuf<M: prost::Message + Default>(&self) -> Result<M, PayloadError>;
}

#[cfg(any(feature = "json", feature = "protobuf"))]
impl PayloadExt for Publish<'_> {
    #[cfg(feature = "json")]
    fn decode_json<T: serde::de::DeserializeOwned>(&self) -> Result<T, PayloadError> {
        serde_json::from_slice(&self.payload)
            .map_err(|e| PayloadError::new("payload is not the expected JSON", e))
    }

    #[cfg(feature = "protobuf")]
    fn decode_protobuf<M: prost::Message + Default>(&self) -> Result<M, PayloadError> {
        M::decode(self.payload.as_ref())
            .map_err(|e| PayloadError::new("payload is not the expected protobuf message", e))
    }
}

#[cfg(any(feature = "json", feature = "protobuf"))]
impl Client {
    /// Publishes `value` serialized as JSON, like [`publish`](Self::publish); over MQTT 5.0
    /// with Content Type `application/json` and Payload Format Indicator 1.
    /// [`Error::Payload`] if `value` does not serialize (e.g. a map with non-string keys).
    #[cfg(feature = "json")]
    pub async fn publish_json<T: serde::Serialize + ?Sized>(
        &self,
        topic: impl Into<String>,
        value: &T,
        qos: QoS,
        retain: bool,
    ) -> Result<PublishHandle, Error> {
        let payload = serde_json::to_vec(value).map_err(|e| {
            Error::Payload(PayloadError::new("value does not serialize to JSON", e))
        })?;
        let mut msg = Publish::new(topic.into(), payload);
        msg.qos = qos;
        msg.retain = retain;
        if self.protocol().is_v5() {
            msg.properties.content_type = Some(JSON_CONTENT_TYPE.into());
            // JSON text is UTF-8 (RFC 8259 §8.1).
            msg.properties.payload_format_indicator = Some(true);
        }
        self.publish_message(msg).await
    }

    /// Publishes the protobuf encoding of `message`, like [`publish`](Self::publish); over
    /// MQTT 5.0 with Content Type `application/x-protobuf`.
    #[cfg(feature = "protobuf")]
    pub async fn publish_protobuf<M: prost::Message>(
        &self,
        topic: impl Into<String>,
        message: &M,
        qos: QoS,
        retain: bool,
    ) -> Result<PublishHandle, Error> {
        let mut msg = Publish::new(topic.into(), message.encode_to_vec());
        msg.qos = qos;
        msg.retain = retain;
        if self.protocol().is_v5() {
            msg.properties.content_type = Some(PROTOBUF_CONTENT_TYPE.into());
        }
        self.publish_message(msg).await
    }
}

#[cfg(test)]
mod tests {
    #[cfg(feature = "json")]
    #[test]
    fn json_round_trip_and_errors() {
        use super::PayloadExt;
        use mqttx_codec::Publish;

        #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
        struct Reading {
            room: String,
            celsius: f64,
        }

        let r = Reading {
            room: "kitchen".into(),
            celsius: 21.5,
        };
        let msg = Publish::new("t", serde_json::to_vec(&r).unwrap());
        assert_eq!(msg.decode_json::<Reading>().unwrap(), r);

        // Not JSON, and JSON of another shape: errors with the cause as source.
        for bad in [&b"\xff"[..], br#"{"room":1}"#] {
            let e = Publish::new("t", bad).decode_json::<Reading>().unwrap_err();
            assert_eq!(e.to_string(), "payload is not the expected JSON");
            assert!(std::error::Error::source(&e).is_some());
        }
    }

    #[cfg(feature = "protobuf")]
    #[test]
    fn protobuf_round_trip_and_errors() {
        use super::PayloadExt;
        use mqttx_codec::Publish;

        #[derive(Clone, PartialEq, prost::Message)]
        struct Reading {
            #[prost(string, tag = "1")]
            room: String,
            #[prost(double, tag = "2")]
            celsius: f64,
        }

        let r = Reading {
            room: "kitchen".into(),
            celsius: 21.5,
        };
        let msg = Publish::new("t", prost::Message::encode_to_vec(&r));
        assert_eq!(msg.decode_protobuf::<Reading>().unwrap(), r);

        // A truncated message (field 1 says 7 bytes, 2 follow).
        let e = Publish::new("t", &[0x0A, 0x07, b'k', b'i'][..])
            .decode_protobuf::<Reading>()
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "payload is not the expected protobuf message"
        );
    }
}
