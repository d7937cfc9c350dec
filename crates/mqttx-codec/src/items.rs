//! [`Items`]: the repeated fields of a packet, kept as validated wire bytes after a decode.
//!
//! A decoded SUBSCRIBE's filters, a SUBACK's reason codes, or a PUBLISH's User Properties are
//! not copied into a vector: the decoder validates them once and keeps the slice they occupy.
//! Iteration parses the slice again, borrowing every string from it. This is what keeps a
//! decode free of allocation and bounded in memory by the packet's own size. Packets built by
//! an application hold the same fields as a vector.

use alloc::borrow::Cow;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use crate::properties::PropertyId;
use crate::reason::ReasonCode;
use crate::types::{QoS, RetainHandling, SubscriptionOptions};
use crate::wire::Reader;

mod sealed {
    pub trait Sealed {}
}

/// An element type of [`Items`]. Sealed: the codec defines all of them.
pub trait Item: Clone + fmt::Debug + PartialEq + 'static + sealed::Sealed {
    /// The borrowed view that iteration yields.
    type Ref<'b>: Copy + PartialEq + fmt::Debug;

    /// The view of an owned element.
    fn view(&self) -> Self::Ref<'_>;

    /// An owned element from a view.
    fn from_view(view: Self::Ref<'_>) -> Self;

    /// The next element from validated wire bytes, skipping what belongs to other fields.
    #[doc(hidden)]
    fn next_from_wire<'b>(bytes: &mut &'b [u8]) -> Option<Self::Ref<'b>>;
}

/// A User Property (MQTT 5.0 §3.1.2.11.8): a UTF-8 string pair; the same name may repeat.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[allow(clippy::exhaustive_structs)] // A name and a value, as the spec defines it.
pub struct UserProperty {
    /// The name.
    pub key: String,
    /// The value.
    pub value: String,
}

impl UserProperty {
    /// A user property from a name and a value.
    pub fn new(key: impl Into<String>, value: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            value: value.into(),
        }
    }
}

/// One entry of a SUBSCRIBE payload: a Topic Filter and its Subscription Options.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[allow(clippy::exhaustive_structs)] // A filter and its options byte, as the spec defines it.
pub struct SubscribeFilter {
    /// The Topic Filter, possibly `$share/{ShareName}/{filter}`.
    pub filter: String,
    /// The options.
    pub options: SubscriptionOptions,
}

impl SubscribeFilter {
    /// An entry with the given filter and maximum QoS, other options at their defaults.
    pub fn new(filter: impl Into<String>, qos: QoS) -> Self {
        Self {
            filter: filter.into(),
            options: SubscriptionOptions::new(qos),
        }
    }
}

/// Walks a validated property block to the next property with identifier `want` and returns
/// the reader positioned at its value.
fn next_property<'b>(bytes: &mut &'b [u8], want: PropertyId) -> Option<Reader<'b>> {
    loop {
        let mut r = Reader::new(bytes);
        let id = r.varint().ok()?;
        let id = PropertyId::from_u32(id)?;
        if id == want {
            let value = Reader::new(r.rest());
            // Advance past this property for the next call.
            id.skip_value(&mut r).ok()?;
            *bytes = r.rest();
            return Some(value);
        }
        id.skip_value(&mut r).ok()?;
        *bytes = r.rest();
    }
}

impl sealed::Sealed for UserProperty {}
impl Item for UserProperty {
    type Ref<'b> = (&'b str, &'b str);

    fn view(&self) -> Self::Ref<'_> {
        (&self.key, &self.value)
    }

    fn from_view((key, value): Self::Ref<'_>) -> Self {
        Self::new(key, value)
    }

    fn next_from_wire<'b>(bytes: &mut &'b [u8]) -> Option<Self::Ref<'b>> {
        let mut r = next_property(bytes, PropertyId::UserProperty)?;
        Some((r.validated_string().ok()?, r.validated_string().ok()?))
    }
}

impl sealed::Sealed for u32 {}
/// Subscription Identifiers (MQTT 5.0 §3.3.2.3.8).
impl Item for u32 {
    type Ref<'b> = u32;

    fn view(&self) -> u32 {
        *self
    }

    fn from_view(view: u32) -> Self {
        view
    }

    fn next_from_wire(bytes: &mut &[u8]) -> Option<u32> {
        next_property(bytes, PropertyId::SubscriptionIdentifier)?
            .varint()
            .ok()
    }
}

impl sealed::Sealed for SubscribeFilter {}
impl Item for SubscribeFilter {
    type Ref<'b> = (&'b str, SubscriptionOptions);

    fn view(&self) -> Self::Ref<'_> {
        (&self.filter, self.options)
    }

    fn from_view((filter, options): Self::Ref<'_>) -> Self {
        Self {
            filter: filter.into(),
            options,
        }
    }

    fn next_from_wire<'b>(bytes: &mut &'b [u8]) -> Option<Self::Ref<'b>> {
        let mut r = Reader::new(bytes);
        let filter = r.validated_string().ok()?;
        let byte = r.u8().ok()?;
        *bytes = r.rest();
        Some((filter, options_from_byte(byte)))
    }
}

/// Subscription options from a byte the decoder has already validated.
pub(crate) fn options_from_byte(byte: u8) -> SubscriptionOptions {
    SubscriptionOptions {
        qos: QoS::from_u8(byte & 0b11).unwrap_or(QoS::AtMostOnce),
        no_local: byte & 0b0100 != 0,
        retain_as_published: byte & 0b1000 != 0,
        retain_handling: RetainHandling::from_u8((byte >> 4) & 0b11)
            .unwrap_or(RetainHandling::SendAtSubscribe),
    }
}

impl sealed::Sealed for String {}
/// UNSUBSCRIBE Topic Filters.
impl Item for String {
    type Ref<'b> = &'b str;

    fn view(&self) -> &str {
        self
    }

    fn from_view(view: &str) -> Self {
        view.into()
    }

    fn next_from_wire<'b>(bytes: &mut &'b [u8]) -> Option<&'b str> {
        let mut r = Reader::new(bytes);
        let s = r.validated_string().ok()?;
        *bytes = r.rest();
        Some(s)
    }
}

impl sealed::Sealed for ReasonCode {}
/// SUBACK and UNSUBACK reason codes.
impl Item for ReasonCode {
    type Ref<'b> = ReasonCode;

    fn view(&self) -> ReasonCode {
        *self
    }

    fn from_view(view: ReasonCode) -> Self {
        view
    }

    fn next_from_wire(bytes: &mut &[u8]) -> Option<ReasonCode> {
        let (&b, rest) = bytes.split_first()?;
        *bytes = rest;
        ReasonCode::from_u8(b)
    }
}

/// A repeated field: either validated wire bytes (after a decode) or a vector (when built).
///
/// ```
/// use mqttx_codec::{Items, UserProperty};
/// let props: Items<'_, UserProperty> = vec![UserProperty::new("k", "v")].into();
/// assert_eq!(props.iter().collect::<Vec<_>>(), [("k", "v")]);
/// ```
#[derive(Clone)]
pub struct Items<'a, T: Item> {
    /// Validated wire bytes and the number of elements in them; when `Some`, `vec` is empty.
    wire: Option<(Cow<'a, [u8]>, usize)>,
    vec: Vec<T>,
}

impl<'a, T: Item> Items<'a, T> {
    /// An empty list (no allocation).
    pub const fn new() -> Self {
        Self {
            wire: None,
            vec: Vec::new(),
        }
    }

    /// Wraps validated wire bytes holding `len` elements.
    pub(crate) fn from_wire(bytes: &'a [u8], len: usize) -> Self {
        Self {
            wire: Some((Cow::Borrowed(bytes), len)),
            vec: Vec::new(),
        }
    }

    /// The number of elements.
    pub fn len(&self) -> usize {
        match &self.wire {
            Some((_, len)) => *len,
            None => self.vec.len(),
        }
    }

    /// Whether there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Iterates over borrowed views of the elements.
    pub fn iter(&self) -> Iter<'_, T> {
        match &self.wire {
            Some((bytes, len)) => Iter(IterRepr::Wire { bytes, left: *len }),
            None => Iter(IterRepr::Vec(self.vec.iter())),
        }
    }

    /// Appends an element, turning a decoded list into a vector first.
    pub fn push(&mut self, item: T) {
        self.make_vec().push(item);
    }

    /// The elements as a mutable vector (converting decoded wire bytes once).
    pub fn make_vec(&mut self) -> &mut Vec<T> {
        if let Some((bytes, len)) = self.wire.take() {
            let it: Iter<'_, T> = Iter(IterRepr::Wire {
                bytes: &bytes,
                left: len,
            });
            self.vec = it.map(T::from_view).collect();
        }
        &mut self.vec
    }

    /// The validated wire bytes, when the list came from a decode and was not modified since.
    #[inline]
    pub(crate) fn wire(&self) -> Option<&[u8]> {
        self.wire.as_ref().map(|(bytes, _)| &**bytes)
    }

    /// Copies borrowed wire bytes so the list no longer borrows the input.
    pub fn into_owned(self) -> Items<'static, T> {
        Items {
            wire: self
                .wire
                .map(|(bytes, len)| (Cow::Owned(bytes.into_owned()), len)),
            vec: self.vec,
        }
    }
}

impl<T: Item> Default for Items<'_, T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Item> From<Vec<T>> for Items<'_, T> {
    fn from(vec: Vec<T>) -> Self {
        Self { wire: None, vec }
    }
}

impl<T: Item> FromIterator<T> for Items<'_, T> {
    fn from_iter<I: IntoIterator<Item = T>>(iter: I) -> Self {
        Self {
            wire: None,
            vec: iter.into_iter().collect(),
        }
    }
}

impl<T: Item> PartialEq for Items<'_, T> {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl<T: Item> Eq for Items<'_, T> {}

impl<T: Item> fmt::Debug for Items<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl<'s, T: Item> IntoIterator for &'s Items<'_, T> {
    type Item = T::Ref<'s>;
    type IntoIter = Iter<'s, T>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

/// Iterator over the views of an [`Items`].
#[derive(Debug)]
pub struct Iter<'s, T: Item>(IterRepr<'s, T>);

#[derive(Debug)]
enum IterRepr<'s, T: Item> {
    Wire { bytes: &'s [u8], left: usize },
    Vec(core::slice::Iter<'s, T>),
}

impl<'s, T: Item> Iterator for Iter<'s, T> {
    type Item = T::Ref<'s>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        match &mut self.0 {
            IterRepr::Wire { bytes, left } => {
                if *left == 0 {
                    return None;
                }
                *left -= 1;
                T::next_from_wire(bytes)
            }
            IterRepr::Vec(it) => it.next().map(T::view),
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        match &self.0 {
            IterRepr::Wire { left, .. } => (0, Some(*left)),
            IterRepr::Vec(it) => it.size_hint(),
        }
    }
}
