//! Minimal topic checks the codec needs for encoding (MQTT 5.0 §4.7).
//!
//! The full topic model (levels, matching, shared subscriptions) lives in `mqttx-router`.
//! The decoder checks only what makes a packet malformed; whether a Topic Filter is
//! acceptable is the receiver's decision, answered per filter in SUBACK (0x8F).

/// Checks that a Topic Name has no wildcard characters (`[MQTT-3.3.2-2]`).
pub fn validate_topic_name_chars(topic: &str) -> Result<(), &'static str> {
    if topic.contains(['+', '#']) {
        return Err("[MQTT-3.3.2-2] wildcard in topic name");
    }
    Ok(())
}

/// Checks a Topic Filter's structure (MQTT 5.0 §4.7.1).
///
/// ```
/// use mqttx_codec::topic::validate_topic_filter;
/// assert!(validate_topic_filter("sport/+/player1/#").is_ok());
/// assert!(validate_topic_filter("sport/tennis#").is_err());
/// assert!(validate_topic_filter("").is_err());
/// ```
pub fn validate_topic_filter(filter: &str) -> Result<(), &'static str> {
    validate_filter_bytes(filter.as_bytes())
}

/// [`validate_topic_filter`] on the filter's bytes.
pub(crate) fn validate_filter_bytes(b: &[u8]) -> Result<(), &'static str> {
    // [MQTT-4.7.3-1] All Topic Names and Topic Filters MUST be at least one character long.
    if b.is_empty() {
        return Err("[MQTT-4.7.3-1] empty topic filter");
    }
    // Most filters have no wildcard at all: one word-at-a-time pass says so.
    if crate::wire::scan(b, true) == crate::wire::Scan::Clean {
        return Ok(());
    }
    filter_structure(b)
}

/// The wildcard placement rules of a non-empty filter, byte by byte.
pub(crate) fn filter_structure(b: &[u8]) -> Result<(), &'static str> {
    for (i, &c) in b.iter().enumerate() {
        if c != b'+' && c != b'#' {
            continue;
        }
        let starts_level = i == 0 || b.get(i - 1) == Some(&b'/');
        let ends_level = b.get(i + 1).is_none_or(|&n| n == b'/');
        match c {
            // [MQTT-4.7.1-1] The multi-level wildcard character MUST be specified either on its
            // own or following a topic level separator. In either case it MUST be the last
            // character specified in the Topic Filter.
            b'#' if !starts_level || i + 1 != b.len() => {
                return Err("[MQTT-4.7.1-1] '#' must be a whole level and the last one");
            }
            // [MQTT-4.7.1-2] The single-level wildcard can be used at any level in the Topic
            // Filter, including first and last levels. Where it is used, it MUST occupy an
            // entire level of the filter.
            b'+' if !starts_level || !ends_level => {
                return Err("[MQTT-4.7.1-2] '+' must occupy a whole level");
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(filter: &str, ok: bool) {
        assert_eq!(validate_topic_filter(filter).is_ok(), ok, "{filter:?}");
    }

    #[test]
    fn filters_per_section_4_7_1() {
        check("#", true); // [MQTT-4.7.1-1] alone
        check("sport/#", true);
        check("sport/tennis/#/ranking", false); // not last
        check("sport/tennis#", false); // not a whole level
        check("+", true); // [MQTT-4.7.1-2]
        check("+/tennis/#", true);
        check("sport+", false);
        check("sport/+/player1", true);
        check("/", true); // empty levels are allowed
        check("a//b", true);
        check("", false); // [MQTT-4.7.3-1]
        check("$share/g/a/+", true);
        check("a/#/", false);
        check("#/", false);
        check("+#", false);
        check("++", false);
        check("+/+", true);
        assert!(validate_topic_name_chars("a/b").is_ok());
        assert!(validate_topic_name_chars("a/+").is_err());
        assert!(validate_topic_name_chars("a\0#").is_err());
    }
}
