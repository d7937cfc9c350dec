//! Subscriber handles and per-subscription options (MQTT 5.0 §3.8.3.1, §3.8.2.1.2).

use core::fmt;
use core::num::NonZeroU32;

/// An opaque handle for a subscriber, chosen by the caller (for example a session number).
///
/// The router never interprets it beyond equality and hashing; it knows nothing of the session or
/// connection behind it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SubscriberId(u64);

impl SubscriberId {
    /// Wraps a caller-chosen number.
    pub const fn new(id: u64) -> Self {
        Self(id)
    }

    /// The number given to [`SubscriberId::new`].
    pub const fn get(self) -> u64 {
        self.0
    }
}

impl From<u64> for SubscriberId {
    fn from(id: u64) -> Self {
        Self(id)
    }
}

/// Quality of service of a subscription or a delivery (§4.3).
#[allow(clippy::exhaustive_enums)] // Complete by definition: the protocol has exactly three levels.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum QoS {
    /// QoS 0.
    #[default]
    AtMostOnce = 0x00,
    /// QoS 1.
    AtLeastOnce = 0x01,
    /// QoS 2.
    ExactlyOnce = 0x02,
}

impl QoS {
    fn from_bits(bits: u8) -> Self {
        match bits & 0b11 {
            0x00 => Self::AtMostOnce,
            0x01 => Self::AtLeastOnce,
            _ => Self::ExactlyOnce,
        }
    }
}

impl TryFrom<u8> for QoS {
    type Error = OptionsError;

    fn try_from(value: u8) -> Result<Self, Self::Error> {
        match value {
            0x00 => Ok(Self::AtMostOnce),
            0x01 => Ok(Self::AtLeastOnce),
            0x02 => Ok(Self::ExactlyOnce),
            _ => Err(OptionsError::QoS),
        }
    }
}

/// When retained messages are sent for a new subscription (§3.8.3.1, Retain Handling).
///
/// The router only stores this option; acting on it is the broker's job.
#[allow(clippy::exhaustive_enums)] // Complete by definition: value 3 is reserved by the protocol.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum RetainHandling {
    /// 0: send retained messages at the time of the subscribe.
    #[default]
    SendAtSubscribe = 0x00,
    /// 1: send retained messages only if the subscription did not already exist.
    SendAtNewSubscribe = 0x01,
    /// 2: do not send retained messages at the time of the subscribe.
    DoNotSend = 0x02,
}

impl RetainHandling {
    fn from_bits(bits: u8) -> Self {
        match bits & 0b11 {
            0x00 => Self::SendAtSubscribe,
            0x01 => Self::SendAtNewSubscribe,
            _ => Self::DoNotSend,
        }
    }
}

impl TryFrom<u8> for RetainHandling {
    type Error = OptionsError;

    fn try_from(value: u8) -> Result<Self, Self::Error> {
        match value {
            0x00 => Ok(Self::SendAtSubscribe),
            0x01 => Ok(Self::SendAtNewSubscribe),
            0x02 => Ok(Self::DoNotSend),
            _ => Err(OptionsError::RetainHandling),
        }
    }
}

/// A Subscription Identifier: 1 to 268 435 455 (§3.8.2.1.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SubscriptionId(NonZeroU32);

impl SubscriptionId {
    /// The largest value a Variable Byte Integer can hold.
    pub const MAX: u32 = 268_435_455;

    /// Validates `id`: 0 is a Protocol Error, and it must fit in a Variable Byte Integer.
    pub const fn new(id: u32) -> Result<Self, OptionsError> {
        if id > Self::MAX {
            return Err(OptionsError::SubscriptionId);
        }
        match NonZeroU32::new(id) {
            Some(id) => Ok(Self(id)),
            None => Err(OptionsError::SubscriptionId),
        }
    }

    /// The identifier's value.
    pub const fn get(self) -> u32 {
        self.0.get()
    }
}

/// Why an option value is out of range.
///
/// Message text is for people and may change; match on the variant instead.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum OptionsError {
    /// QoS 3 is reserved (§3.8.3.1, a Protocol Error).
    QoS,
    /// Retain Handling 3 is reserved (§3.8.3.1, a Protocol Error).
    RetainHandling,
    /// A Subscription Identifier of 0 or above 268 435 455 (§3.8.2.1.2).
    SubscriptionId,
}

impl OptionsError {
    /// The MQTT 5.0 reason code: 0x82, Protocol Error.
    pub fn reason_code(&self) -> u8 {
        0x82
    }
}

impl fmt::Display for OptionsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::QoS => f.write_str("qos must be 0, 1 or 2"),
            Self::RetainHandling => f.write_str("retain handling must be 0, 1 or 2"),
            Self::SubscriptionId => {
                f.write_str("subscription identifier must be between 1 and 268435455")
            }
        }
    }
}

impl core::error::Error for OptionsError {}

/// The options of one subscription (§3.8.3.1), as the SUBSCRIBE packet carries them.
///
/// ```
/// use mqttx_router::{QoS, SubscribeOptions, SubscriptionId};
///
/// let opts = SubscribeOptions::new(QoS::AtLeastOnce)
///     .with_no_local(true)
///     .with_subscription_id(Some(SubscriptionId::new(7)?));
/// assert_eq!(opts.qos, QoS::AtLeastOnce);
/// # Ok::<(), mqttx_router::OptionsError>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct SubscribeOptions {
    /// The maximum QoS granted for this subscription.
    pub qos: QoS,
    /// Do not deliver messages published by this subscriber to this subscription.
    pub no_local: bool,
    /// Keep the RETAIN flag of forwarded messages instead of clearing it.
    pub retain_as_published: bool,
    /// When to send retained messages at subscribe time (the broker acts on it).
    pub retain_handling: RetainHandling,
    /// The Subscription Identifier sent with matching messages.
    pub subscription_id: Option<SubscriptionId>,
}

impl SubscribeOptions {
    /// Options with the given QoS and every other option at its default (off, retain handling 0).
    pub const fn new(qos: QoS) -> Self {
        Self {
            qos,
            no_local: false,
            retain_as_published: false,
            retain_handling: RetainHandling::SendAtSubscribe,
            subscription_id: None,
        }
    }

    /// Sets `no_local`.
    pub const fn with_no_local(mut self, no_local: bool) -> Self {
        self.no_local = no_local;
        self
    }

    /// Sets `retain_as_published`.
    pub const fn with_retain_as_published(mut self, retain_as_published: bool) -> Self {
        self.retain_as_published = retain_as_published;
        self
    }

    /// Sets `retain_handling`.
    pub const fn with_retain_handling(mut self, retain_handling: RetainHandling) -> Self {
        self.retain_handling = retain_handling;
        self
    }

    /// Sets the Subscription Identifier.
    pub const fn with_subscription_id(mut self, subscription_id: Option<SubscriptionId>) -> Self {
        self.subscription_id = subscription_id;
        self
    }
}

/// [`SubscribeOptions`] packed into 8 bytes, as the trie stores them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PackedOptions {
    /// The Subscription Identifier, 0 for none.
    subscription_id: u32,
    /// Bits 0–1 QoS, bit 2 no_local, bit 3 retain_as_published, bits 4–5 retain handling.
    flags: u8,
}

const NO_LOCAL: u8 = 0b0000_0100;
const RETAIN_AS_PUBLISHED: u8 = 0b0000_1000;

impl PackedOptions {
    pub(crate) fn pack(opts: &SubscribeOptions) -> Self {
        let mut flags = opts.qos as u8 | ((opts.retain_handling as u8) << 4);
        if opts.no_local {
            flags |= NO_LOCAL;
        }
        if opts.retain_as_published {
            flags |= RETAIN_AS_PUBLISHED;
        }
        Self {
            subscription_id: opts.subscription_id.map_or(0, SubscriptionId::get),
            flags,
        }
    }

    pub(crate) fn unpack(self) -> SubscribeOptions {
        SubscribeOptions {
            qos: self.qos(),
            no_local: self.no_local(),
            retain_as_published: self.retain_as_published(),
            retain_handling: RetainHandling::from_bits(self.flags >> 4),
            subscription_id: self.subscription_id(),
        }
    }

    pub(crate) fn qos(self) -> QoS {
        QoS::from_bits(self.flags)
    }

    pub(crate) fn no_local(self) -> bool {
        self.flags & NO_LOCAL != 0
    }

    pub(crate) fn retain_as_published(self) -> bool {
        self.flags & RETAIN_AS_PUBLISHED != 0
    }

    pub(crate) fn subscription_id(self) -> Option<SubscriptionId> {
        // Only values that came from a valid `SubscriptionId` are stored.
        NonZeroU32::new(self.subscription_id).map(SubscriptionId)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: SubscribeOptions, expected: SubscribeOptions) {
        assert_eq!(PackedOptions::pack(&input).unpack(), expected);
    }

    #[test]
    fn packing_round_trips() {
        let id = SubscriptionId::new(SubscriptionId::MAX).unwrap();
        for qos in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
            for rh in [
                RetainHandling::SendAtSubscribe,
                RetainHandling::SendAtNewSubscribe,
                RetainHandling::DoNotSend,
            ] {
                for flags in 0..4 {
                    let opts = SubscribeOptions::new(qos)
                        .with_no_local(flags & 1 != 0)
                        .with_retain_as_published(flags & 2 != 0)
                        .with_retain_handling(rh)
                        .with_subscription_id(Some(id).filter(|_| flags != 1));
                    check(opts, opts);
                }
            }
        }
    }

    #[test]
    fn ranges() {
        assert_eq!(SubscriptionId::new(0), Err(OptionsError::SubscriptionId));
        assert_eq!(SubscriptionId::new(1).map(SubscriptionId::get), Ok(1));
        assert_eq!(
            SubscriptionId::new(SubscriptionId::MAX + 1),
            Err(OptionsError::SubscriptionId)
        );
        assert_eq!(QoS::try_from(3), Err(OptionsError::QoS));
        assert_eq!(QoS::try_from(2), Ok(QoS::ExactlyOnce));
        assert_eq!(
            RetainHandling::try_from(3),
            Err(OptionsError::RetainHandling)
        );
        assert_eq!(
            RetainHandling::try_from(1),
            Ok(RetainHandling::SendAtNewSubscribe)
        );
        assert_eq!(OptionsError::QoS.reason_code(), 0x82);
    }
}
