//! Access control lists: who may publish to, and subscribe to, which topics.
//!
//! An [`Acl`] is an ordered list of [`AclRule`]s. **The first rule that applies decides**;
//! when none applies, access is denied. A rule applies to a client when its principal
//! matches (everyone, a user name, a client identifier, or anonymous clients) and its topic
//! pattern (a topic filter in which `%u` stands for the user name and `%c` for the client
//! identifier) relates to the topic or filter asked for:
//!
//! - publishing to a topic name: the pattern matches the topic;
//! - subscribing to a filter: an *allow* rule applies when its pattern covers the whole
//!   filter (every topic the filter matches, the pattern matches too), a *deny* rule as soon
//!   as the two overlap (some topic matches both). So `deny secret/#` placed before
//!   `allow #` refuses a subscription to `#`, which could otherwise receive `secret/` topics.
//!   Shared subscriptions (`$share/GROUP/filter`) are checked on their filter.
//!
//! A pattern with `%u` does not apply to clients without a user name; a substitution whose
//! value contains `+`, `#` or `/` does not apply at all (a user named `#` must not widen
//! a rule).
//!
//! Mosquitto's `acl_file` format is read by [`Acl::parse_mosquitto`]: `user NAME`, then
//! `topic [read|write|readwrite|deny] TOPIC` lines for that user (before any `user` line:
//! for anonymous clients), and `pattern [read|write|readwrite|deny] TOPIC` lines for every
//! client. Mosquitto grants access when any line grants it unless a `deny` line matches, so
//! the `deny` lines are placed first; `read` means subscribe, `write` publish.

use std::fmt;

use mqttx_codec::ReasonCode;

/// Allow or deny.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "lowercase"))]
pub enum Permission {
    /// The rule grants access.
    Allow,
    /// The rule refuses access.
    Deny,
}

/// What a rule is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "lowercase"))]
pub enum Access {
    /// Publishing (Mosquitto's `write`).
    Publish,
    /// Subscribing (Mosquitto's `read`).
    Subscribe,
    /// Both (Mosquitto's `readwrite`).
    Both,
}

impl Access {
    fn includes(self, other: Self) -> bool {
        self == Self::Both || self == other
    }
}

/// One rule. In TOML (the `mqttx broker` configuration):
///
/// ```toml
/// [[security.acl]]
/// permission = "allow"        # or "deny"
/// access = "publish"          # "subscribe", "both"
/// topic = "devices/%c/#"      # %u user name, %c client identifier
/// user = "alice"              # optional: only this user
/// client_id = "sensor-1"      # optional: only this client identifier
/// anonymous = false           # optional: only clients without a user name
/// reason_code = 0x87          # optional: the SUBACK/PUBACK code of a deny (default 0x87)
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(deny_unknown_fields))]
pub struct AclRule {
    /// Allow or deny.
    pub permission: Permission,
    /// Publish, subscribe or both.
    pub access: Access,
    /// The topic pattern: a topic filter, with `%u` and `%c`.
    pub topic: String,
    /// Only for this user name.
    #[cfg_attr(feature = "serde", serde(default))]
    pub user: Option<String>,
    /// Only for this client identifier.
    #[cfg_attr(feature = "serde", serde(default))]
    pub client_id: Option<String>,
    /// Only for clients without a user name.
    #[cfg_attr(feature = "serde", serde(default))]
    pub anonymous: bool,
    /// The reason code a deny gives (MQTT 5.0 SUBACK / PUBACK / PUBREC); default 0x87.
    #[cfg_attr(feature = "serde", serde(default))]
    pub reason_code: Option<u8>,
}

impl AclRule {
    /// A rule for everyone.
    pub fn new(permission: Permission, access: Access, topic: impl Into<String>) -> Self {
        Self {
            permission,
            access,
            topic: topic.into(),
            user: None,
            client_id: None,
            anonymous: false,
            reason_code: None,
        }
    }

    /// Only for `user`.
    #[must_use]
    pub fn user(mut self, user: impl Into<String>) -> Self {
        self.user = Some(user.into());
        self
    }

    /// Only for `client_id`.
    #[must_use]
    pub fn client_id(mut self, client_id: impl Into<String>) -> Self {
        self.client_id = Some(client_id.into());
        self
    }

    fn principal_matches(&self, user: Option<&str>, client_id: &str) -> bool {
        (!self.anonymous || user.is_none())
            && self.user.as_deref().is_none_or(|u| Some(u) == user)
            && self.client_id.as_deref().is_none_or(|c| c == client_id)
    }

    /// The pattern with `%u` and `%c` replaced, or `None` when the rule cannot apply.
    fn pattern(&self, user: Option<&str>, client_id: &str) -> Option<String> {
        let unsafe_value = |v: &str| v.contains(['+', '#', '/']);
        let mut pattern = self.topic.clone();
        if pattern.contains("%u") {
            let user = user.filter(|u| !unsafe_value(u))?;
            pattern = pattern.replace("%u", user);
        }
        if pattern.contains("%c") {
            if unsafe_value(client_id) {
                return None;
            }
            pattern = pattern.replace("%c", client_id);
        }
        Some(pattern)
    }
}

/// The outcome of a check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AclDecision {
    /// Access granted.
    Allow,
    /// Access refused, with the reason code to report (0x87 unless the rule names one).
    Deny(ReasonCode),
}

/// An error in an ACL, with its 1-based line (or rule) number.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AclError {
    /// The line of the file, or the position of the rule in the list.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for AclError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

impl std::error::Error for AclError {}

/// An ordered list of rules; the first that applies decides, none means deny.
///
/// ```
/// use mqttx_auth::acl::{Acl, AclDecision, AclRule, Access, Permission};
/// use mqttx_codec::ReasonCode;
///
/// let acl = Acl::new(vec![
///     AclRule::new(Permission::Deny, Access::Both, "secret/#"),
///     AclRule::new(Permission::Allow, Access::Both, "devices/%c/#"),
///     AclRule::new(Permission::Allow, Access::Subscribe, "public/#"),
/// ])?;
/// assert_eq!(acl.check_publish(None, "s1", "devices/s1/temp"), AclDecision::Allow);
/// assert_eq!(acl.check_publish(None, "s1", "devices/s2/temp"), AclDecision::Deny(ReasonCode::NOT_AUTHORIZED));
/// assert_eq!(acl.check_subscribe(None, "s1", "public/+/news"), AclDecision::Allow);
/// assert_eq!(acl.check_subscribe(None, "s1", "#"), AclDecision::Deny(ReasonCode::NOT_AUTHORIZED));
/// # Ok::<(), mqttx_auth::acl::AclError>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Acl {
    rules: Vec<AclRule>,
}

impl Acl {
    /// An ACL from rules, checked: every pattern must be a valid topic filter and every
    /// reason code a failure code. Errors name the rule by its 1-based position.
    pub fn new(rules: Vec<AclRule>) -> Result<Self, AclError> {
        for (i, rule) in rules.iter().enumerate() {
            let error = |message: String| AclError {
                line: i + 1,
                message,
            };
            check_filter(&rule.topic).map_err(&error)?;
            if let Some(code) = rule.reason_code {
                if code < 0x80 {
                    return Err(error(format!(
                        "reason_code {code:#04x} is not a failure code (0x80 or more)"
                    )));
                }
            }
        }
        Ok(Self { rules })
    }

    /// The rules, in order.
    pub fn rules(&self) -> &[AclRule] {
        &self.rules
    }

    /// Reads Mosquitto's `acl_file` format. Errors name the line.
    pub fn parse_mosquitto(text: &str) -> Result<Self, AclError> {
        let mut deny = Vec::new();
        let mut allow = Vec::new();
        let mut user: Option<String> = None;
        for (i, raw) in text.lines().enumerate() {
            let error = |message: &str| AclError {
                line: i + 1,
                message: message.to_owned(),
            };
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (keyword, rest) = line.split_once([' ', '\t']).unwrap_or((line, ""));
            let rest = rest.trim_start();
            match keyword {
                "user" => {
                    if rest.is_empty() {
                        return Err(error("`user` needs a user name"));
                    }
                    user = Some(rest.to_owned());
                }
                "topic" | "pattern" => {
                    let (access, topic) = match rest.split_once([' ', '\t']) {
                        Some((word @ ("read" | "write" | "readwrite" | "deny"), topic)) => {
                            (word, topic.trim_start())
                        }
                        _ => ("readwrite", rest),
                    };
                    if topic.is_empty() {
                        return Err(error(&format!("`{keyword}` needs a topic")));
                    }
                    check_filter(topic).map_err(|m| error(&m))?;
                    let (permission, access) = match access {
                        "read" => (Permission::Allow, Access::Subscribe),
                        "write" => (Permission::Allow, Access::Publish),
                        "deny" => (Permission::Deny, Access::Both),
                        _ => (Permission::Allow, Access::Both),
                    };
                    let mut rule = AclRule::new(permission, access, topic);
                    if keyword == "topic" {
                        match &user {
                            Some(u) => rule.user = Some(u.clone()),
                            None => rule.anonymous = true,
                        }
                    }
                    match permission {
                        Permission::Deny => deny.push(rule),
                        Permission::Allow => allow.push(rule),
                    }
                }
                other => {
                    return Err(error(&format!(
                        "unknown keyword `{other}` (expected user, topic or pattern)"
                    )));
                }
            }
        }
        deny.append(&mut allow);
        Ok(Self { rules: deny })
    }

    /// May this client publish to `topic`?
    pub fn check_publish(&self, user: Option<&str>, client_id: &str, topic: &str) -> AclDecision {
        self.decide(user, client_id, Access::Publish, |_, pattern| {
            overlaps(pattern, topic)
        })
    }

    /// May this client subscribe to `filter`?
    pub fn check_subscribe(
        &self,
        user: Option<&str>,
        client_id: &str,
        filter: &str,
    ) -> AclDecision {
        let filter = shared_filter(filter);
        self.decide(
            user,
            client_id,
            Access::Subscribe,
            |permission, pattern| match permission {
                Permission::Allow => covers(pattern, filter),
                Permission::Deny => overlaps(pattern, filter),
            },
        )
    }

    fn decide(
        &self,
        user: Option<&str>,
        client_id: &str,
        access: Access,
        applies: impl Fn(Permission, &str) -> bool,
    ) -> AclDecision {
        for rule in &self.rules {
            if !rule.access.includes(access) || !rule.principal_matches(user, client_id) {
                continue;
            }
            let Some(pattern) = rule.pattern(user, client_id) else {
                continue;
            };
            if applies(rule.permission, &pattern) {
                return match rule.permission {
                    Permission::Allow => AclDecision::Allow,
                    Permission::Deny => AclDecision::Deny(deny_code(rule.reason_code)),
                };
            }
        }
        AclDecision::Deny(ReasonCode::NOT_AUTHORIZED)
    }
}

fn deny_code(code: Option<u8>) -> ReasonCode {
    code.and_then(ReasonCode::from_u8)
        .filter(|c| c.is_error())
        .unwrap_or(ReasonCode::NOT_AUTHORIZED)
}

/// `$share/GROUP/filter` → `filter`.
fn shared_filter(filter: &str) -> &str {
    filter
        .strip_prefix("$share/")
        .and_then(|rest| rest.split_once('/'))
        .map_or(filter, |(_, f)| f)
}

/// Topic filter syntax (MQTT 5.0 §4.7.1): `#` alone and last, `+` alone in its level.
fn check_filter(filter: &str) -> Result<(), String> {
    if filter.is_empty() {
        return Err("empty topic".into());
    }
    let levels: Vec<&str> = filter.split('/').collect();
    for (i, level) in levels.iter().enumerate() {
        let bad = (level.contains('#') && (*level != "#" || i + 1 != levels.len()))
            || (level.contains('+') && *level != "+");
        if bad {
            return Err(format!("`{filter}` is not a valid topic filter"));
        }
    }
    Ok(())
}

fn first_level(filter: &str) -> &str {
    filter.split('/').next().unwrap_or("")
}

fn is_wild(level: &str) -> bool {
    level == "+" || level == "#"
}

/// The `$` rule (MQTT 5.0 §4.7.2): a filter starting with a wildcard matches no topic
/// starting with `$`.
fn dollar_mismatch(a: &str, b: &str) -> bool {
    let (fa, fb) = (first_level(a), first_level(b));
    (fa.starts_with('$') && is_wild(fb)) || (fb.starts_with('$') && is_wild(fa))
}

/// Whether some topic matches both filters (a topic name is a filter without wildcards).
fn overlaps(a: &str, b: &str) -> bool {
    if dollar_mismatch(a, b) {
        return false;
    }
    let (mut x, mut y) = (a.split('/'), b.split('/'));
    loop {
        match (x.next(), y.next()) {
            (Some("#"), _) | (_, Some("#")) => return true,
            (None, None) => return true,
            // One ended first ("a/#" against "a" was handled by the "#" arm).
            (Some(_), None) | (None, Some(_)) => return false,
            (Some(p), Some(q)) => {
                if p != "+" && q != "+" && p != q {
                    return false;
                }
            }
        }
    }
}

/// Whether every topic matching `filter` matches `pattern`.
fn covers(pattern: &str, filter: &str) -> bool {
    // The `$` rule: a pattern beginning with a wildcard matches no `$` topic.
    if first_level(filter).starts_with('$') && is_wild(first_level(pattern)) {
        return false;
    }
    let (mut p, mut f) = (pattern.split('/'), filter.split('/'));
    loop {
        match (p.next(), f.next()) {
            (Some("#"), _) => return true,
            (None, None) => return true,
            (Some(_), Some("#")) => return false,
            (Some("+"), Some(_)) => {}
            (Some(pl), Some(fl)) => {
                if fl == "+" || pl != fl {
                    return false;
                }
            }
            (None, Some(_)) => return false,
            // The filter ended before the pattern (a remaining "#" was handled above).
            (Some(_), None) => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlaps_and_covers_tables() {
        let check = |f: fn(&str, &str) -> bool, a: &str, b: &str, expected: bool| {
            assert_eq!(f(a, b), expected, "{a} vs {b}");
        };
        for (a, b, expected) in [
            ("a/b", "a/b", true),
            ("a/b", "a/c", false),
            ("a/+", "a/b", true),
            ("a/#", "a", true),
            ("a/#", "a/b/c", true),
            ("+/b", "a/+", true),
            ("a/+", "a/b/c", false),
            ("#", "$SYS/x", false),
            ("+/x", "$SYS/x", false),
            ("$SYS/#", "$SYS/x", true),
            ("secret/#", "#", true),
            ("secret/#", "+/x", true),
        ] {
            check(overlaps, a, b, expected);
        }
        for (pattern, filter, expected) in [
            ("#", "a/b", true),
            ("#", "#", true),
            ("a/#", "a/+/c", true),
            ("a/#", "a", true),
            ("a/#", "#", false),
            ("a/+", "a/b", true),
            ("a/+", "a/+", true),
            ("a/+", "a/#", false),
            ("a/b", "a/+", false),
            ("a/b", "a/b", true),
            ("a/b", "a/b/c", false),
            ("#", "$SYS/#", false),
            ("$SYS/#", "$SYS/broker/+", true),
        ] {
            check(covers, pattern, filter, expected);
        }
    }

    #[test]
    fn first_match_with_substitutions() {
        let acl = Acl::new(vec![
            AclRule::new(Permission::Deny, Access::Subscribe, "secret/#").reason_code_of(0x80),
            AclRule::new(Permission::Allow, Access::Both, "users/%u/#"),
            AclRule::new(Permission::Allow, Access::Publish, "clients/%c/up"),
            AclRule::new(Permission::Allow, Access::Subscribe, "#").user("admin"),
        ])
        .expect("valid");
        let deny = AclDecision::Deny(ReasonCode::NOT_AUTHORIZED);
        assert_eq!(
            acl.check_publish(Some("al"), "c1", "users/al/x"),
            AclDecision::Allow
        );
        assert_eq!(acl.check_publish(Some("al"), "c1", "users/bo/x"), deny);
        assert_eq!(acl.check_publish(None, "c1", "users//x"), deny);
        assert_eq!(
            acl.check_publish(None, "c1", "clients/c1/up"),
            AclDecision::Allow
        );
        assert_eq!(acl.check_publish(None, "c1", "clients/c1/down"), deny);
        // A client id with a wildcard never substitutes.
        assert_eq!(acl.check_publish(None, "+", "clients/+/up"), deny);
        assert_eq!(
            acl.check_subscribe(Some("al"), "c", "users/al/+"),
            AclDecision::Allow
        );
        assert_eq!(acl.check_subscribe(Some("al"), "c", "users/+/x"), deny);
        // The deny comes first and overlaps `#`: even the admin is refused it, with the
        // rule's code.
        assert_eq!(
            acl.check_subscribe(Some("admin"), "c", "#"),
            AclDecision::Deny(ReasonCode::UNSPECIFIED_ERROR)
        );
        assert_eq!(
            acl.check_subscribe(Some("admin"), "c", "public/#"),
            AclDecision::Allow
        );
        assert_eq!(
            acl.check_subscribe(Some("admin"), "c", "$share/g/public/#"),
            AclDecision::Allow
        );
        assert_eq!(acl.check_subscribe(Some("al"), "c", "public/#"), deny);
    }

    #[test]
    fn mosquitto_acl_file() {
        let acl = Acl::parse_mosquitto(
            "# anonymous clients\n\
             topic read public/#\n\
             \n\
             user alice\n\
             topic readwrite alice/#\n\
             topic deny alice/private\n\
             topic write sensors/alice\n\
             user bob\n\
             topic bob/#\n\
             pattern write clients/%c/status\n",
        )
        .expect("parse");
        let deny = AclDecision::Deny(ReasonCode::NOT_AUTHORIZED);
        assert_eq!(
            acl.check_subscribe(None, "a", "public/x"),
            AclDecision::Allow
        );
        assert_eq!(acl.check_subscribe(Some("alice"), "a", "public/x"), deny);
        assert_eq!(
            acl.check_publish(Some("alice"), "a", "alice/x"),
            AclDecision::Allow
        );
        assert_eq!(acl.check_publish(Some("alice"), "a", "alice/private"), deny);
        assert_eq!(acl.check_subscribe(Some("alice"), "a", "alice/#"), deny);
        assert_eq!(
            acl.check_publish(Some("alice"), "a", "sensors/alice"),
            AclDecision::Allow
        );
        assert_eq!(
            acl.check_subscribe(Some("alice"), "a", "sensors/alice"),
            deny
        );
        assert_eq!(
            acl.check_subscribe(Some("bob"), "b", "bob/+"),
            AclDecision::Allow
        );
        assert_eq!(
            acl.check_publish(Some("bob"), "b7", "clients/b7/status"),
            AclDecision::Allow
        );
        assert_eq!(acl.check_publish(None, "b7", "clients/b8/status"), deny);
    }

    #[test]
    fn bad_lines_are_named() {
        let check = |text: &str, line: usize, needle: &str| {
            let e = Acl::parse_mosquitto(text).expect_err(text);
            assert_eq!(e.line, line, "{text:?}: {e}");
            assert!(e.to_string().contains(needle), "{e}");
        };
        check("user", 1, "needs a user name");
        check("user a\ntopic", 2, "needs a topic");
        check("# x\n\ntopic read a/#/b", 3, "not a valid topic filter");
        check("topic read a+", 1, "not a valid topic filter");
        check("allow all", 1, "unknown keyword `allow`");
        let e = Acl::new(vec![
            AclRule::new(Permission::Allow, Access::Both, "a"),
            AclRule::new(Permission::Deny, Access::Both, "b").reason_code_of(0x10),
        ])
        .expect_err("0x10 is no failure");
        assert_eq!(e.line, 2);
    }

    impl AclRule {
        fn reason_code_of(mut self, code: u8) -> Self {
            self.reason_code = Some(code);
            self
        }
    }
}
