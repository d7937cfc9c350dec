//! Topic names and topic filters: validating newtypes for MQTT 5.0 §4.7 and §4.8.2 (3.1.1 §4.7).
//!
//! A [`TopicName`] is what a PUBLISH carries; it never contains a wildcard.
//! A [`TopicFilter`] is what a SUBSCRIBE carries; it may contain `+` and `#`, and may be a shared
//! subscription (`$share/{ShareName}/{filter}`), which is parsed, never silently taken as a normal filter.

use core::fmt;
use core::str::FromStr;

/// The longest topic name or filter, in bytes: a UTF-8 string's two-byte length prefix (§1.5.4).
pub const MAX_TOPIC_LEN: usize = 65_535;

/// The prefix that makes a topic filter a shared subscription (MQTT 5.0 §4.8.2).
const SHARE_PREFIX: &str = "$share/";

/// MQTT 5.0 reason code 0x8F, Topic Filter invalid.
const TOPIC_FILTER_INVALID: u8 = 0x8F;
/// MQTT 5.0 reason code 0x90, Topic Name invalid.
const TOPIC_NAME_INVALID: u8 = 0x90;

/// A valid MQTT topic name: non-empty, at most 65 535 bytes, no U+0000, no `+` or `#`.
///
/// Empty levels are allowed (`a//b`, `/`).
///
/// ```
/// use mqttx_router::TopicName;
///
/// let topic = TopicName::new("sensors/kitchen/temperature")?;
/// assert_eq!(topic.levels().count(), 3);
/// assert!(TopicName::new("sensors/+").is_err());
/// # Ok::<(), mqttx_router::TopicNameError>(())
/// ```
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TopicName(Box<str>);

impl TopicName {
    /// Validates `name` as a topic name.
    pub fn new(name: &str) -> Result<Self, TopicNameError> {
        validate_name(name)?;
        Ok(Self(name.into()))
    }

    /// The topic name as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The levels of the topic, split at `/`.
    pub fn levels(&self) -> core::str::Split<'_, char> {
        self.0.split('/')
    }

    /// Whether the first level starts with `$` (such topics are not matched by a filter starting
    /// with a wildcard, [MQTT-4.7.2-1]).
    pub fn is_dollar(&self) -> bool {
        self.0.starts_with('$')
    }
}

fn validate_name(name: &str) -> Result<(), TopicNameError> {
    // [MQTT-4.7.3-1] All Topic Names and Topic Filters MUST be at least one character long.
    if name.is_empty() {
        return Err(TopicNameError::Empty);
    }
    // [MQTT-4.7.3-3] Topic Names and Topic Filters ... MUST NOT encode to more than 65,535 bytes.
    if name.len() > MAX_TOPIC_LEN {
        return Err(TopicNameError::TooLong { len: name.len() });
    }
    for byte in name.bytes() {
        match byte {
            // [MQTT-4.7.3-2] Topic Names and Topic Filters MUST NOT include the null character.
            0x00 => return Err(TopicNameError::NullCharacter),
            // [MQTT-4.7.0-1] The wildcard characters ... MUST NOT be used within a Topic Name.
            b'+' | b'#' => return Err(TopicNameError::Wildcard),
            _ => {}
        }
    }
    Ok(())
}

impl fmt::Debug for TopicName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("TopicName").field(&&*self.0).finish()
    }
}

impl fmt::Display for TopicName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for TopicName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl FromStr for TopicName {
    type Err = TopicNameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl TryFrom<&str> for TopicName {
    type Error = TopicNameError;

    fn try_from(s: &str) -> Result<Self, Self::Error> {
        Self::new(s)
    }
}

impl TryFrom<String> for TopicName {
    type Error = TopicNameError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        validate_name(&s)?;
        Ok(Self(s.into_boxed_str()))
    }
}

/// Why a string is not a valid [`TopicName`].
///
/// Message text is for people and may change; match on the variant instead.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TopicNameError {
    /// The name is empty [MQTT-4.7.3-1].
    Empty,
    /// The name contains U+0000 [MQTT-4.7.3-2].
    NullCharacter,
    /// The name is longer than 65 535 bytes [MQTT-4.7.3-3].
    TooLong {
        /// The length of the rejected name, in bytes.
        len: usize,
    },
    /// The name contains `+` or `#` [MQTT-4.7.0-1].
    Wildcard,
}

impl TopicNameError {
    /// The MQTT 5.0 reason code to answer with: 0x90, Topic Name invalid.
    pub fn reason_code(&self) -> u8 {
        TOPIC_NAME_INVALID
    }
}

impl fmt::Display for TopicNameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => {
                f.write_str("[MQTT-4.7.3-1] topic name must be at least one character long")
            }
            Self::NullCharacter => {
                f.write_str("[MQTT-4.7.3-2] topic name must not include the null character")
            }
            Self::TooLong { len } => write!(
                f,
                "[MQTT-4.7.3-3] topic name must not be longer than 65535 bytes, got {len}"
            ),
            Self::Wildcard => {
                f.write_str("[MQTT-4.7.0-1] topic name must not contain wildcard characters")
            }
        }
    }
}

impl core::error::Error for TopicNameError {}

/// A valid MQTT topic filter, possibly a shared subscription.
///
/// Rules: non-empty, at most 65 535 bytes, no U+0000, `+` alone in its level, `#` alone in the last
/// level. Empty levels are allowed. A filter starting with `$share/` must be
/// `$share/{ShareName}/{filter}` with a non-empty ShareName free of `/`, `+` and `#`, and a
/// non-empty, valid filter; anything else is an error.
///
/// ```
/// use mqttx_router::{TopicFilter, TopicFilterError, TopicName};
///
/// let filter = TopicFilter::new("$share/workers/jobs/+")?;
/// assert_eq!(filter.share_name(), Some("workers"));
/// assert_eq!(filter.filter(), "jobs/+");
/// assert!(filter.matches(&TopicName::new("jobs/42").unwrap()));
///
/// assert_eq!(TopicFilter::new("a/#/b"), Err(TopicFilterError::MultiLevelWildcardNotLast));
/// assert_eq!(TopicFilter::new("$share/g+/a"), Err(TopicFilterError::ShareNameInvalid));
/// # Ok::<(), TopicFilterError>(())
/// ```
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TopicFilter {
    text: Box<str>,
    /// Byte offset of the filter part: 0 for a normal filter, after `$share/{ShareName}/` otherwise.
    filter_start: u32,
}

impl TopicFilter {
    /// Validates `filter` as a topic filter, parsing a shared subscription.
    pub fn new(filter: &str) -> Result<Self, TopicFilterError> {
        let filter_start = validate_filter(filter)?;
        Ok(Self {
            text: filter.into(),
            filter_start,
        })
    }

    /// The filter as written, including any `$share/{ShareName}/` prefix.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The filter part: without the `$share/{ShareName}/` prefix of a shared subscription.
    pub fn filter(&self) -> &str {
        &self.text[self.filter_start as usize..]
    }

    /// The ShareName of a shared subscription, `None` for a normal filter.
    pub fn share_name(&self) -> Option<&str> {
        if self.filter_start == 0 {
            None
        } else {
            Some(&self.text[SHARE_PREFIX.len()..self.filter_start as usize - 1])
        }
    }

    /// Whether this is a shared subscription (`$share/{ShareName}/{filter}`).
    pub fn is_shared(&self) -> bool {
        self.filter_start != 0
    }

    /// Whether the filter part contains `+` or `#`.
    pub fn has_wildcards(&self) -> bool {
        self.levels().any(|l| l == "+" || l == "#")
    }

    /// The levels of the filter part, split at `/`.
    pub fn levels(&self) -> core::str::Split<'_, char> {
        self.filter().split('/')
    }

    /// Whether this filter matches `topic`, checked level by level without any index.
    ///
    /// This is the obviously-correct reference the trie is tested against. It applies the `$`
    /// rule: a filter whose first level is `+` or `#` does not match a topic starting with `$`
    /// [MQTT-4.7.2-1]. A `#` also matches its parent level (`a/#` matches `a`). For a shared
    /// subscription, the filter part is matched.
    pub fn matches(&self, topic: &TopicName) -> bool {
        let filter = self.filter();
        // [MQTT-4.7.2-1] The Server MUST NOT match Topic Filters starting with a wildcard character
        // (# or +) with Topic Names beginning with a $ character.
        if topic.is_dollar() && (filter.starts_with('+') || filter.starts_with('#')) {
            return false;
        }
        let mut f = filter.split('/');
        let mut t = topic.levels();
        loop {
            match (f.next(), t.next()) {
                (Some("#"), _) => return true,
                (Some("+"), Some(_)) => {}
                (Some(a), Some(b)) if a == b => {}
                (None, None) => return true,
                _ => return false,
            }
        }
    }
}

/// Checks `filter` and returns where its filter part starts (0 unless shared).
fn validate_filter(filter: &str) -> Result<u32, TopicFilterError> {
    // [MQTT-4.7.3-1] All Topic Names and Topic Filters MUST be at least one character long.
    if filter.is_empty() {
        return Err(TopicFilterError::Empty);
    }
    // [MQTT-4.7.3-3] Topic Names and Topic Filters ... MUST NOT encode to more than 65,535 bytes.
    if filter.len() > MAX_TOPIC_LEN {
        return Err(TopicFilterError::TooLong { len: filter.len() });
    }
    // [MQTT-4.7.3-2] Topic Names and Topic Filters MUST NOT include the null character.
    if filter.bytes().any(|b| b == 0x00) {
        return Err(TopicFilterError::NullCharacter);
    }
    let (start, rest) = match filter.strip_prefix(SHARE_PREFIX) {
        None => (0, filter),
        Some(shared) => {
            // [MQTT-4.8.2-2] The ShareName MUST NOT contain the characters "/", "+" or "#", but
            // MUST be followed by a "/" character. This "/" character MUST be followed by a Topic Filter.
            let Some((share, rest)) = shared.split_once('/') else {
                return Err(if shared.is_empty() {
                    TopicFilterError::ShareNameEmpty
                } else {
                    TopicFilterError::SharedFilterMissing
                });
            };
            // [MQTT-4.8.2-1] A Shared Subscription's Topic Filter MUST start with $share/ and MUST
            // contain a ShareName that is at least one character long.
            if share.is_empty() {
                return Err(TopicFilterError::ShareNameEmpty);
            }
            if share.contains(['+', '#']) {
                return Err(TopicFilterError::ShareNameInvalid);
            }
            if rest.is_empty() {
                return Err(TopicFilterError::SharedFilterMissing);
            }
            // The prefix is at most 65 535 bytes long, so the offset fits in a u32.
            ((SHARE_PREFIX.len() + share.len() + 1) as u32, rest)
        }
    };
    let mut levels = rest.split('/').peekable();
    while let Some(level) = levels.next() {
        if level.contains('#') {
            // [MQTT-4.7.1-1] The multi-level wildcard character MUST be specified either on its own
            // or following a topic level separator. In either case it MUST be the last character
            // specified in the Topic Filter.
            if level != "#" || levels.peek().is_some() {
                return Err(TopicFilterError::MultiLevelWildcardNotLast);
            }
        } else if level.contains('+') && level != "+" {
            // [MQTT-4.7.1-2] The single-level wildcard can be used at any level in the Topic Filter,
            // including first and last levels. Where it is used, it MUST occupy an entire level.
            return Err(TopicFilterError::SingleLevelWildcardNotAlone);
        }
    }
    Ok(start)
}

impl fmt::Debug for TopicFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("TopicFilter").field(&&*self.text).finish()
    }
}

impl fmt::Display for TopicFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl AsRef<str> for TopicFilter {
    fn as_ref(&self) -> &str {
        &self.text
    }
}

impl FromStr for TopicFilter {
    type Err = TopicFilterError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl TryFrom<&str> for TopicFilter {
    type Error = TopicFilterError;

    fn try_from(s: &str) -> Result<Self, Self::Error> {
        Self::new(s)
    }
}

impl TryFrom<String> for TopicFilter {
    type Error = TopicFilterError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        let filter_start = validate_filter(&s)?;
        Ok(Self {
            text: s.into_boxed_str(),
            filter_start,
        })
    }
}

/// Why a string is not a valid [`TopicFilter`].
///
/// Message text is for people and may change; match on the variant instead.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TopicFilterError {
    /// The filter is empty [MQTT-4.7.3-1].
    Empty,
    /// `#` is not alone in the last level [MQTT-4.7.1-1].
    MultiLevelWildcardNotLast,
    /// The filter contains U+0000 [MQTT-4.7.3-2].
    NullCharacter,
    /// `$share/` is not followed by a ShareName of at least one character [MQTT-4.8.2-1].
    ShareNameEmpty,
    /// The ShareName contains `+` or `#` [MQTT-4.8.2-2].
    ShareNameInvalid,
    /// The ShareName is not followed by `/` and a non-empty topic filter [MQTT-4.8.2-2].
    SharedFilterMissing,
    /// `+` does not occupy a whole level [MQTT-4.7.1-2].
    SingleLevelWildcardNotAlone,
    /// The filter is longer than 65 535 bytes [MQTT-4.7.3-3].
    TooLong {
        /// The length of the rejected filter, in bytes.
        len: usize,
    },
}

impl TopicFilterError {
    /// The MQTT 5.0 reason code to answer with in a SUBACK or UNSUBACK: 0x8F, Topic Filter invalid.
    ///
    /// Whether shared subscriptions are supported at all (0x9E) is the broker's decision.
    pub fn reason_code(&self) -> u8 {
        TOPIC_FILTER_INVALID
    }
}

impl fmt::Display for TopicFilterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => {
                f.write_str("[MQTT-4.7.3-1] topic filter must be at least one character long")
            }
            Self::MultiLevelWildcardNotLast => f.write_str(
                "[MQTT-4.7.1-1] multi-level wildcard must be alone in the last level of the filter",
            ),
            Self::NullCharacter => {
                f.write_str("[MQTT-4.7.3-2] topic filter must not include the null character")
            }
            Self::ShareNameEmpty => {
                f.write_str("[MQTT-4.8.2-1] share name must be at least one character long")
            }
            Self::ShareNameInvalid => {
                f.write_str("[MQTT-4.8.2-2] share name must not contain '/', '+' or '#'")
            }
            Self::SharedFilterMissing => {
                f.write_str("[MQTT-4.8.2-2] share name must be followed by '/' and a topic filter")
            }
            Self::SingleLevelWildcardNotAlone => {
                f.write_str("[MQTT-4.7.1-2] single-level wildcard must occupy an entire level")
            }
            Self::TooLong { len } => write!(
                f,
                "[MQTT-4.7.3-3] topic filter must not be longer than 65535 bytes, got {len}"
            ),
        }
    }
}

impl core::error::Error for TopicFilterError {}

#[cfg(test)]
mod tests {
    use super::*;

    /// One table row: a filter and what parsing it gives (`Ok((share_name, filter_part))`).
    type FilterCase = (
        &'static str,
        Result<(Option<&'static str>, &'static str), TopicFilterError>,
        &'static str,
    );

    fn check_filter(
        input: &str,
        expected: Result<(Option<&str>, &str), TopicFilterError>,
        rule: &str,
    ) {
        let got = TopicFilter::new(input);
        let got = got
            .as_ref()
            .map(|f| (f.share_name(), f.filter()))
            .map_err(|e| *e);
        assert_eq!(got, expected, "filter {input:?} ({rule})");
        if let Err(e) = got {
            assert_eq!(e.reason_code(), 0x8F, "{input:?}");
            assert!(e.to_string().starts_with("[MQTT-"), "{e}");
        }
    }

    #[test]
    fn filter_validation() {
        use TopicFilterError::*;
        let long = "a".repeat(MAX_TOPIC_LEN + 1);
        let max = "a".repeat(MAX_TOPIC_LEN);
        let cases: &[FilterCase] = &[
            ("a/b/c", Ok((None, "a/b/c")), "plain filter"),
            ("/", Ok((None, "/")), "§4.7.1.1 empty levels are allowed"),
            (
                "a//b",
                Ok((None, "a//b")),
                "§4.7.1.1 empty levels are allowed",
            ),
            ("#", Ok((None, "#")), "[MQTT-4.7.1-1] # on its own"),
            (
                "a/#",
                Ok((None, "a/#")),
                "[MQTT-4.7.1-1] # after a separator",
            ),
            ("/#", Ok((None, "/#")), "[MQTT-4.7.1-1] # after a separator"),
            (
                "a/#/b",
                Err(MultiLevelWildcardNotLast),
                "[MQTT-4.7.1-1] # must be last",
            ),
            (
                "a#",
                Err(MultiLevelWildcardNotLast),
                "[MQTT-4.7.1-1] # must follow a separator",
            ),
            (
                "a/b#",
                Err(MultiLevelWildcardNotLast),
                "[MQTT-4.7.1-1] # alone in its level",
            ),
            (
                "#/",
                Err(MultiLevelWildcardNotLast),
                "[MQTT-4.7.1-1] # must be the last character",
            ),
            ("##", Err(MultiLevelWildcardNotLast), "[MQTT-4.7.1-1]"),
            ("+", Ok((None, "+")), "[MQTT-4.7.1-2] + alone"),
            (
                "+/+/+",
                Ok((None, "+/+/+")),
                "[MQTT-4.7.1-2] + at any level",
            ),
            ("a/+/#", Ok((None, "a/+/#")), "[MQTT-4.7.1-2] + then #"),
            (
                "a+",
                Err(SingleLevelWildcardNotAlone),
                "[MQTT-4.7.1-2] + occupies a whole level",
            ),
            ("a/+b", Err(SingleLevelWildcardNotAlone), "[MQTT-4.7.1-2]"),
            ("++", Err(SingleLevelWildcardNotAlone), "[MQTT-4.7.1-2]"),
            ("+#", Err(MultiLevelWildcardNotLast), "[MQTT-4.7.1-1]"),
            ("", Err(Empty), "[MQTT-4.7.3-1] at least one character"),
            (
                "a\0b",
                Err(NullCharacter),
                "[MQTT-4.7.3-2] no null character",
            ),
            (
                "$SYS/#",
                Ok((None, "$SYS/#")),
                "§4.7.2 $ topics can be subscribed explicitly",
            ),
            (
                "$share",
                Ok((None, "$share")),
                "§4.8.2 only the $share/ prefix makes a shared subscription",
            ),
            (
                "$shared/a",
                Ok((None, "$shared/a")),
                "§4.8.2 only the $share/ prefix",
            ),
            (
                "$share/g/a/+",
                Ok((Some("g"), "a/+")),
                "[MQTT-4.8.2-1] shared subscription",
            ),
            ("$share/g/#", Ok((Some("g"), "#")), "[MQTT-4.8.2-2]"),
            (
                "$share/g//",
                Ok((Some("g"), "/")),
                "[MQTT-4.8.2-2] the filter may have empty levels",
            ),
            (
                "$share/",
                Err(ShareNameEmpty),
                "[MQTT-4.8.2-1] ShareName at least one character",
            ),
            ("$share//a", Err(ShareNameEmpty), "[MQTT-4.8.2-1]"),
            (
                "$share/g",
                Err(SharedFilterMissing),
                "[MQTT-4.8.2-2] followed by /",
            ),
            (
                "$share/g/",
                Err(SharedFilterMissing),
                "[MQTT-4.8.2-2] followed by a topic filter",
            ),
            (
                "$share/+/a",
                Err(ShareNameInvalid),
                "[MQTT-4.8.2-2] no + in ShareName",
            ),
            (
                "$share/g#/a",
                Err(ShareNameInvalid),
                "[MQTT-4.8.2-2] no # in ShareName",
            ),
            (
                "$share/g/a#",
                Err(MultiLevelWildcardNotLast),
                "[MQTT-4.7.1-1] in the filter part",
            ),
            (
                "$share/g/a+",
                Err(SingleLevelWildcardNotAlone),
                "[MQTT-4.7.1-2] in the filter part",
            ),
        ];
        for (input, expected, rule) in cases {
            check_filter(input, *expected, rule);
        }
        check_filter(&max, Ok((None, &max)), "[MQTT-4.7.3-3] 65535 bytes is fine");
        check_filter(
            &long,
            Err(TooLong {
                len: MAX_TOPIC_LEN + 1,
            }),
            "[MQTT-4.7.3-3]",
        );
    }

    fn check_name(input: &str, expected: Result<(), TopicNameError>, rule: &str) {
        let got = TopicName::new(input).map(|_| ());
        assert_eq!(got, expected, "name {input:?} ({rule})");
        if let Err(e) = got {
            assert_eq!(e.reason_code(), 0x90, "{input:?}");
            assert!(e.to_string().starts_with("[MQTT-"), "{e}");
        }
        assert_eq!(TopicName::try_from(input.to_owned()).map(|_| ()), expected);
    }

    #[test]
    fn name_validation() {
        use TopicNameError::*;
        let long = "a".repeat(MAX_TOPIC_LEN + 1);
        let cases: &[(&str, Result<(), TopicNameError>, &str)] = &[
            ("a/b", Ok(()), "plain topic"),
            ("/", Ok(()), "§4.7.1.1 empty levels"),
            ("a//", Ok(()), "§4.7.1.1 empty levels"),
            ("$SYS/uptime", Ok(()), "§4.7.2 $ topics are valid names"),
            ("a b/ü", Ok(()), "§4.7.3 any UTF-8 but U+0000"),
            ("", Err(Empty), "[MQTT-4.7.3-1]"),
            ("a/+", Err(Wildcard), "[MQTT-4.7.0-1] no + in a topic name"),
            ("a/#", Err(Wildcard), "[MQTT-4.7.0-1] no # in a topic name"),
            ("a+b", Err(Wildcard), "[MQTT-4.7.0-1]"),
            ("a\0", Err(NullCharacter), "[MQTT-4.7.3-2]"),
            (
                &long,
                Err(TooLong {
                    len: MAX_TOPIC_LEN + 1,
                }),
                "[MQTT-4.7.3-3]",
            ),
        ];
        for (input, expected, rule) in cases {
            check_name(input, *expected, rule);
        }
    }

    fn check_match(filter: &str, topic: &str, expected: bool, rule: &str) {
        let f = TopicFilter::new(filter).expect(filter);
        let t = TopicName::new(topic).expect(topic);
        assert_eq!(f.matches(&t), expected, "{filter:?} vs {topic:?} ({rule})");
    }

    #[test]
    fn naive_matching() {
        for (filter, topic, expected, rule) in crate::tests::MATCH_CASES {
            check_match(filter, topic, *expected, rule);
        }
    }
}
