//! The topic ↔ subject mapping: vectors for each rule, and properties against the router's
//! own matching (`TopicFilter::matches`) through a small NATS subject matcher written here.

use mqttx_cluster_nats::{
    MapError, Namespace, NamespaceError, SubjectError, decode_token, encode_token,
};
use mqttx_router::{TopicFilter, TopicName, TopicNameError};
use proptest::prelude::*;

/// NATS subject matching: `*` matches one token, `>` (last) one or more; other tokens match
/// themselves.
fn nats_matches(pattern: &str, subject: &str) -> bool {
    let mut p = pattern.split('.');
    let mut s = subject.split('.');
    loop {
        match (p.next(), s.next()) {
            (Some(">"), Some(_)) => return true,
            (Some("*"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[track_caller]
fn check_topic(ns: &Namespace, topic: &str, subject: &str) {
    let name = TopicName::new(topic).unwrap();
    assert_eq!(ns.subject(&name).as_deref(), Ok(subject), "topic {topic:?}");
    assert_eq!(ns.topic(subject), Ok(name), "subject {subject:?}");
}

#[test]
fn topic_vectors() {
    let ns = Namespace::root();
    // Levels are tokens; plain bytes stand for themselves.
    check_topic(&ns, "a", "a");
    check_topic(&ns, "a/b/c", "a.b.c");
    check_topic(&ns, "Az09_-/x", "Az09_-.x");
    // Every other byte is `=HH`, upper-case hexadecimal, `=` itself included.
    check_topic(&ns, "a.b", "a=2Eb");
    check_topic(&ns, "a b", "a=20b");
    check_topic(&ns, "*/>", "=2A.=3E");
    check_topic(&ns, "x=y", "x=3Dy");
    check_topic(&ns, "=", "=3D");
    check_topic(&ns, "é", "=C3=A9");
    check_topic(&ns, "\u{1F600}", "=F0=9F=98=80");
    check_topic(&ns, "\t\u{7F}", "=09=7F");
    // Empty levels are the token `=`.
    check_topic(&ns, "/", "=.=");
    check_topic(&ns, "a//b", "a.=.b");
    check_topic(&ns, "/a", "=.a");
    check_topic(&ns, "a/", "a.=");
    check_topic(&ns, "//", "=.=.=");
    // `$` topics map like any other.
    check_topic(&ns, "$SYS/broker/uptime", "=24SYS.broker.uptime");
    check_topic(&ns, "$share", "=24share");
}

#[test]
fn topic_vectors_in_a_namespace() {
    let ns = Namespace::new("mqttx.t").unwrap();
    check_topic(&ns, "a/b", "mqttx.t.a.b");
    check_topic(&ns, "/", "mqttx.t.=.=");
    assert_eq!(ns.topic("mqttx.u.a"), Err(SubjectError::OutsideNamespace));
    assert_eq!(ns.topic("mqttx.ta"), Err(SubjectError::OutsideNamespace));
    assert_eq!(ns.topic("mqttx.t"), Err(SubjectError::OutsideNamespace));
    assert_eq!(
        ns.topic("mqttx.t."),
        Err(SubjectError::EmptyToken { at: 8 })
    );
    assert_eq!(
        ns.topic("mqttx.t.a..b"),
        Err(SubjectError::EmptyToken { at: 10 })
    );
    assert_eq!(ns.prefix(), "mqttx.t");
}

#[test]
fn namespace_prefixes() {
    assert_eq!(Namespace::new(""), Ok(Namespace::root()));
    assert!(Namespace::new("a-b_C.9").is_ok());
    assert_eq!(
        Namespace::new(".a"),
        Err(NamespaceError::EmptyToken { at: 0 })
    );
    assert_eq!(
        Namespace::new("a."),
        Err(NamespaceError::EmptyToken { at: 1 })
    );
    assert_eq!(
        Namespace::new("a..b"),
        Err(NamespaceError::EmptyToken { at: 2 })
    );
    assert_eq!(
        Namespace::new("a.*"),
        Err(NamespaceError::InvalidByte { at: 2, byte: b'*' })
    );
    assert_eq!(
        Namespace::new("$JS"),
        Err(NamespaceError::InvalidByte { at: 0, byte: b'$' })
    );
}

#[test]
fn subjects_that_no_topic_maps_to() {
    let ns = Namespace::root();
    let check = |subject: &str, error: SubjectError| {
        assert_eq!(ns.topic(subject), Err(error), "subject {subject:?}");
    };
    check("", SubjectError::EmptyToken { at: 0 });
    check("a.", SubjectError::EmptyToken { at: 2 });
    check(".a", SubjectError::EmptyToken { at: 0 });
    // Wildcards and bytes outside the alphabet.
    check("a.*", SubjectError::InvalidByte { at: 2, byte: b'*' });
    check("a.>", SubjectError::InvalidByte { at: 2, byte: b'>' });
    check("a b", SubjectError::InvalidByte { at: 1, byte: b' ' });
    check("a/b", SubjectError::InvalidByte { at: 1, byte: b'/' });
    check("é", SubjectError::InvalidByte { at: 0, byte: 0xC3 });
    // Escapes: two upper-case hexadecimal digits, and only for bytes that need one.
    check("a=", SubjectError::BadEscape { at: 1 });
    check("a=2", SubjectError::BadEscape { at: 1 });
    check("a=2e", SubjectError::BadEscape { at: 1 });
    check("a=G0", SubjectError::BadEscape { at: 1 });
    check("b.==", SubjectError::BadEscape { at: 2 });
    check("a.=41", SubjectError::NeedlessEscape { at: 2 });
    check("=5F", SubjectError::NeedlessEscape { at: 0 });
    check("=2D", SubjectError::NeedlessEscape { at: 0 });
    // Unescaped, not a topic name.
    check("=C3", SubjectError::NotUtf8);
    check("=2B", SubjectError::Topic(TopicNameError::Wildcard));
    check("a.=23", SubjectError::Topic(TopicNameError::Wildcard));
    check("=00", SubjectError::Topic(TopicNameError::NullCharacter));
}

#[test]
fn tokens() {
    assert_eq!(encode_token(""), "=");
    assert_eq!(encode_token("client/1.2"), "client=2F1=2E2");
    assert_eq!(decode_token("client=2F1=2E2").as_deref(), Ok("client/1.2"));
    assert_eq!(decode_token("=").as_deref(), Ok(""));
    assert_eq!(decode_token(""), Err(SubjectError::EmptyToken { at: 0 }));
    assert_eq!(
        decode_token("a.b"),
        Err(SubjectError::InvalidByte { at: 1, byte: b'.' })
    );
    // A client identifier may hold `+` and `#`; only topics refuse them.
    assert_eq!(decode_token("=2B=23").as_deref(), Ok("+#"));
}

#[track_caller]
fn check_filter(ns: &Namespace, filter: &str, subjects: &[&str], queue_group: Option<&str>) {
    let mapped = ns.filter(&TopicFilter::new(filter).unwrap()).unwrap();
    assert_eq!(
        mapped.subjects().collect::<Vec<_>>(),
        subjects,
        "filter {filter:?}"
    );
    assert_eq!(mapped.subject(), subjects[0]);
    assert_eq!(mapped.parent(), subjects.get(1).copied());
    assert_eq!(mapped.queue_group(), queue_group, "filter {filter:?}");
}

#[test]
fn filter_vectors() {
    let ns = Namespace::root();
    check_filter(&ns, "a/b", &["a.b"], None);
    check_filter(&ns, "+", &["*"], None);
    check_filter(&ns, "a/+/c", &["a.*.c"], None);
    check_filter(&ns, "+/+", &["*.*"], None);
    // `#` alone is `>`; `x/#` is `x.>` and `x`, since `#` matches its parent level.
    check_filter(&ns, "#", &[">"], None);
    check_filter(&ns, "a/#", &["a.>", "a"], None);
    check_filter(&ns, "+/#", &["*.>", "*"], None);
    check_filter(&ns, "/#", &["=.>", "="], None);
    check_filter(&ns, "a/b/#", &["a.b.>", "a.b"], None);
    // Literal levels are escaped like topic levels, empty ones included.
    check_filter(&ns, "a.b/ /", &["a=2Eb.=20.="], None);
    check_filter(&ns, "$SYS/#", &["=24SYS.>", "=24SYS"], None);
    // Shared subscriptions: the filter part, and a queue group per ShareName and filter.
    check_filter(&ns, "$share/g/a/#", &["a.>", "a"], Some("g=2Fa=2F=23"));
    check_filter(&ns, "$share/g/a", &["a"], Some("g=2Fa"));
    check_filter(&ns, "$share/g.1/+", &["*"], Some("g=2E1=2F=2B"));
    check_filter(&ns, "$share/$g/#", &[">"], Some("=24g=2F=23"));

    let ns = Namespace::new("m").unwrap();
    check_filter(&ns, "#", &["m.>"], None);
    check_filter(&ns, "a/#", &["m.a.>", "m.a"], None);
    check_filter(
        &ns,
        "$share/g/+/#",
        &["m.*.>", "m.*"],
        Some("g=2F=2B=2F=23"),
    );
}

#[test]
fn the_dollar_rule_stays_with_the_local_router() {
    let ns = Namespace::root();
    let topic = TopicName::new("$SYS/uptime").unwrap();
    let subject = ns.subject(&topic).unwrap();
    for filter in ["#", "+/uptime"] {
        let filter = TopicFilter::new(filter).unwrap();
        let mapped = ns.filter(&filter).unwrap();
        // NATS delivers it; the router does not match it [MQTT-4.7.2-1].
        assert!(mapped.subjects().any(|s| nats_matches(s, &subject)));
        assert!(!filter.matches(&topic));
    }
}

#[test]
fn limits() {
    let ns = Namespace::root().with_max_len(7);
    assert_eq!(ns.max_len(), 7);
    check_topic(&ns, "abc/def", "abc.def");
    let too_long = TopicName::new("abc/defg").unwrap();
    assert_eq!(
        ns.subject(&too_long),
        Err(MapError::TooLong { len: 8, max: 7 })
    );
    assert_eq!(
        ns.subject(&TopicName::new("é/a").unwrap()),
        Err(MapError::TooLong { len: 8, max: 7 })
    );
    assert!(ns.filter(&TopicFilter::new("abc/+/#").unwrap()).is_ok());
    assert_eq!(
        ns.filter(&TopicFilter::new("abc/+/+/#").unwrap()),
        Err(MapError::TooLong { len: 9, max: 7 })
    );
    // The queue group counts too: `g=2Fa` is 5 bytes, `gg=2Fa=2F` 9.
    let ns = Namespace::root().with_max_len(5);
    assert!(ns.filter(&TopicFilter::new("$share/g/a").unwrap()).is_ok());
    assert_eq!(
        ns.filter(&TopicFilter::new("$share/gg/a/").unwrap()),
        Err(MapError::TooLong { len: 9, max: 5 })
    );
    // The longest topic of all fits a namespace that allows it, and is refused otherwise.
    let longest = TopicName::new(&"/".repeat(65_535)).unwrap();
    let subject = Namespace::root()
        .with_max_len(usize::MAX)
        .subject(&longest)
        .unwrap();
    assert_eq!(subject.len(), 65_536 + 65_535);
    assert_eq!(
        Namespace::root().subject(&longest),
        Err(MapError::TooLong {
            len: 131_071,
            max: 2_000
        })
    );
}

/// Levels that exercise escaping and matching: plain, empty, escaped, `$`-led, and look-alikes
/// of escapes and wildcards.
fn level() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(vec![
            "a", "b", "", "$", "$SYS", ".", "=", "=2E", "a.b", "*", ">", " ", "é", "_", "-", "A",
        ])
        .prop_map(str::to_owned),
        1 => "[^/+#\u{0}]{0,6}",
    ]
}

fn topic() -> impl Strategy<Value = TopicName> {
    prop::collection::vec(level(), 1..5).prop_filter_map("not a topic name", |levels| {
        TopicName::new(&levels.join("/")).ok()
    })
}

/// A filter derived from `topic` (some levels replaced by `+`, perhaps cut short by `#`) or
/// built from random levels, so that matches and near-misses are both common.
fn filter_for(topic: TopicName) -> impl Strategy<Value = TopicFilter> {
    let levels: Vec<String> = topic.levels().map(str::to_owned).collect();
    let n = levels.len();
    let derived = (
        prop::collection::vec(prop::bool::weighted(0.3), n),
        0..=n + 1,
        prop::bool::ANY,
    )
        .prop_map(move |(plus, cut, hash)| {
            let mut out: Vec<String> = levels
                .iter()
                .zip(&plus)
                .map(|(l, &p)| if p { "+".to_owned() } else { l.clone() })
                .collect();
            out.truncate(cut.min(n));
            if hash || out.is_empty() {
                out.push("#".to_owned());
            }
            out.join("/")
        });
    let random = (
        prop::collection::vec(prop_oneof![level(), Just("+".to_owned())], 1..5),
        prop::bool::ANY,
    )
        .prop_map(|(mut levels, hash)| {
            if hash {
                levels.push("#".to_owned());
            }
            levels.join("/")
        });
    prop_oneof![derived, random]
        .prop_filter_map("not a topic filter", |f| TopicFilter::new(&f).ok())
}

proptest! {
    #[test]
    fn topic_to_subject_to_topic_is_the_identity(topic in "[^+#\u{0}]{1,40}") {
        let topic = TopicName::new(&topic).unwrap();
        for ns in [Namespace::root(), Namespace::new("mqttx.t").unwrap()] {
            let subject = ns.subject(&topic).unwrap();
            prop_assert!(subject.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-=.".contains(&b)));
            prop_assert!(!subject.split('.').any(str::is_empty));
            prop_assert_eq!(ns.topic(&subject), Ok(topic.clone()));
        }
    }

    #[test]
    fn token_round_trips(s in "\\PC{0,20}") {
        let token = encode_token(&s);
        prop_assert!(token.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-=".contains(&b)));
        prop_assert_eq!(decode_token(&token), Ok(s));
    }

    #[test]
    fn subject_to_topic_never_panics_and_inverts(subject in "[a-zA-Z0-9_=.*> \u{e9}-]{0,24}") {
        let ns = Namespace::root();
        if let Ok(topic) = ns.topic(&subject) {
            prop_assert_eq!(ns.subject(&topic), Ok(subject));
        }
    }

    #[test]
    fn a_filter_matches_iff_its_subjects_match(
        (topic, filter) in topic().prop_flat_map(|t| (Just(t.clone()), filter_for(t))),
        other in topic(),
    ) {
        for ns in [Namespace::root(), Namespace::new("m.q").unwrap()] {
            let mapped = ns.filter(&filter).unwrap();
            let subjects: Vec<&str> = mapped.subjects().collect();
            for topic in [&topic, &other] {
                let subject = ns.subject(topic).unwrap();
                let nats = subjects.iter().filter(|s| nats_matches(s, &subject)).count();
                prop_assert!(nats <= 1, "{:?} matched twice", subject);
                let starts_with_wildcard = filter.filter().starts_with(['+', '#']);
                if topic.is_dollar() && starts_with_wildcard {
                    // The `$` rule is the local router's; NATS matches as if there were none.
                    prop_assert!(!filter.matches(topic));
                } else {
                    prop_assert_eq!(
                        nats == 1,
                        filter.matches(topic),
                        "filter {} → {:?}, topic {} → {}", filter, subjects, topic, subject
                    );
                }
            }
        }
    }
}
