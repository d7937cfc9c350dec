//! The mapping between MQTT topics and NATS subjects: pure functions, no I/O.
//!
//! # Rules
//!
//! - Each topic level becomes one subject token, in order; `/` becomes `.`.
//! - In a level, the bytes `A`–`Z`, `a`–`z`, `0`–`9`, `_` and `-` stand for themselves; every
//!   other byte (of the level's UTF-8 form) is written `=HH`, `HH` its value in two upper-case
//!   hexadecimal digits. So `.`, `*`, `>`, spaces, `$` and `=` itself never reach NATS as they
//!   are (`a.b` → `a=2Eb`, `$SYS` → `=24SYS`, `é` → `=C3=A9`).
//! - An empty level becomes the token `=` alone ([`EMPTY_LEVEL`]): NATS has no empty tokens,
//!   and a lone `=` is no escape, so it cannot be confused with one (`a//b` → `a.=.b`,
//!   `/` → `=.=`).
//! - In a filter, a `+` level becomes `*` and a `#` level becomes `>`. `>` needs at least one
//!   token where MQTT's `#` also matches the parent level (`a/#` matches `a`), so a filter
//!   ending in `/#` maps to two subjects: `a.>` and `a`. A filter that is only `#` maps to `>`.
//! - A shared subscription `$share/{ShareName}/{filter}` maps its filter part as above and
//!   gets a queue group named by [`encode_token`] of `{ShareName}/{filter}` (so `$share/g/a/#`
//!   → `g=2Fa=2F=23`). The filter is part of the name because NATS keeps one queue group per
//!   subject and name, while MQTT keeps one per ShareName and filter: `$share/g/a/#` and
//!   `$share/g/a` both subscribe subject `a`, and must not share one member between them.
//! - `$` topics map like any other (`$SYS/x` → `=24SYS.x`), and `*` or `>` match them. The
//!   `$` rule ([MQTT-4.7.2-1]: a filter starting with a wildcard does not match a topic
//!   starting with `$`) stays with the local router, which filters what NATS delivers.
//! - A [`Namespace`] puts all of this under a prefix of plain tokens (`mqttx.t` →
//!   `mqttx.t.a.b`), so MQTT traffic stays apart from the node's own subjects.
//!
//! The output uses only `A`–`Z`, `a`–`z`, `0`–`9`, `_`, `-`, `=` and `.`, with no empty token,
//! so a mapped subject is also a valid JetStream key-value key (retained messages can be keyed
//! by it), and an [`encode_token`] result a valid consumer or queue group name.
//! The mapping is one-to-one: [`Namespace::topic`] accepts exactly the subjects that
//! [`Namespace::subject`] produces (upper-case hexadecimal only, no escape of a byte that
//! stands for itself), so a topic and its subject always go both ways.
//!
//! # Limits
//!
//! A subject travels in a NATS protocol line (`PUB`, `HPUB`, `SUB`), and nats-server refuses a
//! line longer than its `max_control_line` (4 KiB by default). The escaping can triple a
//! level's length, so a [`Namespace`] refuses subjects and queue group names longer than
//! [`DEFAULT_MAX_LEN`] bytes unless told otherwise ([`Namespace::with_max_len`]), with
//! [`MapError::TooLong`].

use core::fmt;

use mqttx_router::{TopicFilter, TopicName, TopicNameError};

/// The token an empty topic level maps to.
pub const EMPTY_LEVEL: &str = "=";

/// The longest subject or queue group name a [`Namespace`] produces unless told otherwise, in
/// bytes: two of them (a `SUB` line's subject and queue group) fit nats-server's default
/// `max_control_line` of 4 KiB with room for the rest of the line.
pub const DEFAULT_MAX_LEN: usize = 2_000;

/// The escape character.
const ESCAPE: u8 = b'=';

/// Upper-case hexadecimal digits, by value.
const HEX: &[u8; 16] = b"0123456789ABCDEF";

/// Whether `byte` stands for itself in a subject token.
fn is_plain(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'-'
}

/// The length of `level` once encoded as a token.
fn encoded_len(level: &str) -> usize {
    if level.is_empty() {
        return EMPTY_LEVEL.len();
    }
    level.bytes().map(|b| if is_plain(b) { 1 } else { 3 }).sum()
}

/// Appends `level` encoded as one token to `out`.
fn push_token(out: &mut String, level: &str) {
    if level.is_empty() {
        out.push_str(EMPTY_LEVEL);
        return;
    }
    for byte in level.bytes() {
        if is_plain(byte) {
            out.push(char::from(byte));
        } else {
            out.push(char::from(ESCAPE));
            out.push(char::from(HEX[usize::from(byte >> 4)]));
            out.push(char::from(HEX[usize::from(byte & 0x0F)]));
        }
    }
}

/// The value of an upper-case hexadecimal digit.
fn hex_value(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

/// Decodes one token (not empty) into `out`; `base` is the token's offset in the subject, for
/// errors.
fn decode_token_into(token: &str, base: usize, out: &mut Vec<u8>) -> Result<(), SubjectError> {
    if token == EMPTY_LEVEL {
        return Ok(());
    }
    let bytes = token.as_bytes();
    let mut i = 0;
    while let Some(&byte) = bytes.get(i) {
        if is_plain(byte) {
            out.push(byte);
            i += 1;
        } else if byte == ESCAPE {
            let value = match (bytes.get(i + 1), bytes.get(i + 2)) {
                (Some(&hi), Some(&lo)) => {
                    hex_value(hi).zip(hex_value(lo)).map(|(h, l)| (h << 4) | l)
                }
                _ => None,
            };
            let Some(value) = value else {
                return Err(SubjectError::BadEscape { at: base + i });
            };
            if is_plain(value) {
                return Err(SubjectError::NeedlessEscape { at: base + i });
            }
            out.push(value);
            i += 3;
        } else {
            return Err(SubjectError::InvalidByte { at: base + i, byte });
        }
    }
    Ok(())
}

/// Encodes any string as one subject token by the rules of topic levels (`""` → `=`).
///
/// For names that must be one token or a key-value key: client identifiers, share names.
///
/// ```
/// assert_eq!(mqttx_cluster_nats::encode_token("a.b c"), "a=2Eb=20c");
/// assert_eq!(mqttx_cluster_nats::encode_token(""), "=");
/// ```
pub fn encode_token(s: &str) -> String {
    let mut out = String::with_capacity(encoded_len(s));
    push_token(&mut out, s);
    out
}

/// Decodes a token made by [`encode_token`]; anything [`encode_token`] cannot produce is an
/// error (offsets in it count from the token's start).
///
/// ```
/// assert_eq!(mqttx_cluster_nats::decode_token("a=2Eb=20c").as_deref(), Ok("a.b c"));
/// assert!(mqttx_cluster_nats::decode_token("a.b").is_err());
/// ```
pub fn decode_token(token: &str) -> Result<String, SubjectError> {
    if token.is_empty() {
        return Err(SubjectError::EmptyToken { at: 0 });
    }
    let mut out = Vec::with_capacity(token.len());
    decode_token_into(token, 0, &mut out)?;
    String::from_utf8(out).map_err(|_| SubjectError::NotUtf8)
}

/// Where MQTT topics live in the NATS subject space: a prefix of plain tokens (or none) and a
/// length limit.
///
/// ```
/// use mqttx_cluster_nats::{MapError, Namespace};
/// use mqttx_router::{TopicFilter, TopicName};
///
/// let ns = Namespace::root();
/// assert_eq!(ns.subject(&TopicName::new("$SYS/broker/uptime")?)?, "=24SYS.broker.uptime");
/// let shared = ns.filter(&TopicFilter::new("$share/workers/jobs/+")?)?;
/// assert_eq!(shared.subject(), "jobs.*");
/// assert_eq!(shared.queue_group(), Some("workers=2Fjobs=2F=2B"));
///
/// let long = TopicName::new(&"é".repeat(400))?; // 800 bytes, 2 400 once escaped
/// assert_eq!(ns.subject(&long), Err(MapError::TooLong { len: 2_400, max: 2_000 }));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Namespace {
    /// The prefix, without its trailing `.`; empty for none.
    prefix: Box<str>,
    max_len: usize,
}

impl Default for Namespace {
    fn default() -> Self {
        Self::root()
    }
}

impl Namespace {
    /// No prefix: topic `a/b` is subject `a.b`.
    pub fn root() -> Self {
        Self {
            prefix: "".into(),
            max_len: DEFAULT_MAX_LEN,
        }
    }

    /// Topics under `prefix`: with `mqttx.t`, topic `a/b` is subject `mqttx.t.a.b`.
    ///
    /// The prefix is one or more non-empty tokens of `A`–`Z`, `a`–`z`, `0`–`9`, `_` and `-`,
    /// separated by `.`; the empty string means no prefix.
    pub fn new(prefix: &str) -> Result<Self, NamespaceError> {
        if !prefix.is_empty() {
            for (at, byte) in prefix.bytes().enumerate() {
                if byte == b'.' {
                    if at == 0 || at + 1 == prefix.len() || prefix.as_bytes()[at - 1] == b'.' {
                        return Err(NamespaceError::EmptyToken { at });
                    }
                } else if !is_plain(byte) {
                    return Err(NamespaceError::InvalidByte { at, byte });
                }
            }
        }
        Ok(Self {
            prefix: prefix.into(),
            max_len: DEFAULT_MAX_LEN,
        })
    }

    /// Sets the longest subject or queue group name this namespace produces, in bytes.
    pub fn with_max_len(mut self, max_len: usize) -> Self {
        self.max_len = max_len;
        self
    }

    /// The prefix, without a trailing `.` (empty for none).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The longest subject or queue group name this namespace produces, in bytes.
    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// The length of the prefix with its `.`, or 0.
    fn prefix_len(&self) -> usize {
        if self.prefix.is_empty() {
            0
        } else {
            self.prefix.len() + 1
        }
    }

    /// A new string holding the prefix and its `.`, with room for `len` bytes in all.
    fn start(&self, len: usize) -> String {
        let mut out = String::with_capacity(len);
        if !self.prefix.is_empty() {
            out.push_str(&self.prefix);
            out.push('.');
        }
        out
    }

    fn check_len(&self, len: usize) -> Result<(), MapError> {
        if len > self.max_len {
            Err(MapError::TooLong {
                len,
                max: self.max_len,
            })
        } else {
            Ok(())
        }
    }

    /// The subject a message published on `topic` travels on.
    pub fn subject(&self, topic: &TopicName) -> Result<String, MapError> {
        let levels = topic.levels();
        // One `.` between tokens: as many as there are `/`.
        let len = self.prefix_len()
            + levels.clone().map(encoded_len).sum::<usize>()
            + topic.as_str().bytes().filter(|&b| b == b'/').count();
        self.check_len(len)?;
        let mut out = self.start(len);
        for (i, level) in levels.enumerate() {
            if i > 0 {
                out.push('.');
            }
            push_token(&mut out, level);
        }
        Ok(out)
    }

    /// The topic a message received on `subject` was published on: the inverse of
    /// [`Namespace::subject`].
    ///
    /// It accepts exactly the subjects [`Namespace::subject`] produces; error offsets are
    /// byte offsets in `subject`.
    pub fn topic(&self, subject: &str) -> Result<TopicName, SubjectError> {
        let start = self.prefix_len();
        let rest = if self.prefix.is_empty() {
            Some(subject)
        } else {
            subject
                .strip_prefix(&*self.prefix)
                .and_then(|rest| rest.strip_prefix('.'))
        };
        let Some(rest) = rest else {
            return Err(SubjectError::OutsideNamespace);
        };
        let mut out = Vec::with_capacity(rest.len());
        let mut at = start;
        for (i, token) in rest.split('.').enumerate() {
            if token.is_empty() {
                return Err(SubjectError::EmptyToken { at });
            }
            if i > 0 {
                out.push(b'/');
            }
            decode_token_into(token, at, &mut out)?;
            at += token.len() + 1;
        }
        let topic = String::from_utf8(out).map_err(|_| SubjectError::NotUtf8)?;
        TopicName::try_from(topic).map_err(SubjectError::Topic)
    }

    /// The subjects to subscribe to for `filter`, and for a shared subscription the queue
    /// group to subscribe in.
    pub fn filter(&self, filter: &TopicFilter) -> Result<FilterSubjects, MapError> {
        let levels = filter.levels();
        let len = self.prefix_len()
            + levels
                .clone()
                .map(|level| match level {
                    "+" | "#" => 1,
                    level => encoded_len(level),
                })
                .sum::<usize>()
            + filter.filter().bytes().filter(|&b| b == b'/').count();
        self.check_len(len)?;
        let mut subject = self.start(len);
        for (i, level) in levels.enumerate() {
            if i > 0 {
                subject.push('.');
            }
            match level {
                "+" => subject.push('*'),
                "#" => subject.push('>'),
                level => push_token(&mut subject, level),
            }
        }
        // `a/#` also matches `a`: the subject without its `.>`, unless `#` is the only level.
        let parent = subject
            .strip_suffix(".>")
            .filter(|parent| parent.len() > self.prefix.len())
            .map(str::to_owned);
        let queue_group = match filter.share_name() {
            None => None,
            Some(share) => {
                // `{ShareName}/{filter}` as one token: the `/` is escaped too.
                let len = encoded_len(share) + 3 + encoded_len(filter.filter());
                self.check_len(len)?;
                let mut group = String::with_capacity(len);
                push_token(&mut group, share);
                push_token(&mut group, "/");
                push_token(&mut group, filter.filter());
                Some(group)
            }
        };
        Ok(FilterSubjects {
            subject,
            parent,
            queue_group,
        })
    }
}

/// What a [`TopicFilter`] maps to: one or two subjects, and a queue group when it is shared.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FilterSubjects {
    subject: String,
    parent: Option<String>,
    queue_group: Option<String>,
}

impl FilterSubjects {
    /// The subject pattern of the filter itself (`a/+/#` → `a.*.>`).
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// For a filter ending in `/#`, the parent level it also matches (`a/+/#` → `a.*`).
    pub fn parent(&self) -> Option<&str> {
        self.parent.as_deref()
    }

    /// Every subject to subscribe to: [`FilterSubjects::subject`], then the parent if any.
    ///
    /// A subject never matches both: the parent has one token fewer than anything `>` matches.
    pub fn subjects(&self) -> impl Iterator<Item = &str> {
        core::iter::once(self.subject.as_str()).chain(self.parent.as_deref())
    }

    /// For a shared subscription, the NATS queue group (also a valid consumer name).
    pub fn queue_group(&self) -> Option<&str> {
        self.queue_group.as_deref()
    }
}

/// Why a topic or filter has no subject.
///
/// Message text is for people and may change; match on the variant instead.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum MapError {
    /// The subject or queue group name would be longer than the namespace's limit.
    TooLong {
        /// Its length once mapped, in bytes.
        len: usize,
        /// The namespace's limit ([`Namespace::max_len`]).
        max: usize,
    },
}

impl fmt::Display for MapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooLong { len, max } => write!(
                f,
                "NATS subject would be {len} bytes long, longer than the limit of {max}"
            ),
        }
    }
}

impl std::error::Error for MapError {}

/// Why a string is not a namespace prefix.
///
/// Message text is for people and may change; match on the variant instead.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum NamespaceError {
    /// A token of the prefix is empty (a `.` at `at` starts, ends or doubles).
    EmptyToken {
        /// The offset of the `.`.
        at: usize,
    },
    /// The byte at `at` is not one of `A`–`Z`, `a`–`z`, `0`–`9`, `_`, `-` and `.`.
    InvalidByte {
        /// Its offset.
        at: usize,
        /// The byte.
        byte: u8,
    },
}

impl fmt::Display for NamespaceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::EmptyToken { at } => write!(f, "empty token in subject prefix at byte {at}"),
            Self::InvalidByte { at, byte } => write!(
                f,
                "byte 0x{byte:02X} at {at} is not allowed in a subject prefix \
                 (only A-Z, a-z, 0-9, '_', '-' and '.')"
            ),
        }
    }
}

impl std::error::Error for NamespaceError {}

/// Why a subject is not one that [`Namespace::subject`] produces.
///
/// Offsets are bytes from the start of the subject (of the token for [`decode_token`]).
/// Message text is for people and may change; match on the variant instead.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SubjectError {
    /// An escape `=` at `at` is not followed by two upper-case hexadecimal digits.
    BadEscape {
        /// The offset of the `=`.
        at: usize,
    },
    /// A token is empty (also: the subject is empty or ends at the prefix).
    EmptyToken {
        /// Where the empty token starts.
        at: usize,
    },
    /// A byte other than `A`–`Z`, `a`–`z`, `0`–`9`, `_`, `-`, `=` and `.` (a wildcard, a space).
    InvalidByte {
        /// Its offset.
        at: usize,
        /// The byte.
        byte: u8,
    },
    /// The escape at `at` stands for a byte that is written as itself.
    NeedlessEscape {
        /// The offset of the `=`.
        at: usize,
    },
    /// The unescaped bytes are not UTF-8.
    NotUtf8,
    /// The subject does not start with the namespace's prefix and a `.`.
    OutsideNamespace,
    /// The unescaped string is not a topic name (it has a wildcard or U+0000, or is too long).
    Topic(TopicNameError),
}

impl fmt::Display for SubjectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadEscape { at } => write!(
                f,
                "'=' at byte {at} is not followed by two upper-case hexadecimal digits"
            ),
            Self::EmptyToken { at } => write!(f, "empty subject token at byte {at}"),
            Self::InvalidByte { at, byte } => {
                write!(
                    f,
                    "byte 0x{byte:02X} at {at} is not allowed in a mapped subject"
                )
            }
            Self::NeedlessEscape { at } => {
                write!(
                    f,
                    "escape at byte {at} stands for a byte that is written as itself"
                )
            }
            Self::NotUtf8 => f.write_str("unescaped subject is not UTF-8"),
            Self::OutsideNamespace => f.write_str("subject is outside the namespace"),
            Self::Topic(_) => f.write_str("unescaped subject is not a valid topic name"),
        }
    }
}

impl std::error::Error for SubjectError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Topic(e) => Some(e),
            _ => None,
        }
    }
}
