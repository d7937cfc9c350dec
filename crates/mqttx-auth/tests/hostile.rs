//! Hostile input: every parser that reads bytes from the network (SCRAM messages) or from
//! files an attacker may influence (password files, ACL files, inline rules) returns an
//! error, never panics, on arbitrary input.

use mqttx_auth::acl::{Access, Acl, AclRule, Permission};
use mqttx_auth::scram::{ScramClient, ScramCredentials, ScramServer};
use mqttx_auth::{PasswordFile, PasswordHash};
use proptest::prelude::*;

/// Bytes that are often almost SCRAM: fragments of its grammar mixed with noise.
fn scramish() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        prop_oneof![
            Just(b"n,,".to_vec()),
            Just(b"n=".to_vec()),
            Just(b",r=".to_vec()),
            Just(b",p=".to_vec()),
            Just(b"c=biws".to_vec()),
            Just(b"=2C".to_vec()),
            Just(b"=".to_vec()),
            prop::collection::vec(any::<u8>(), 0..8),
        ],
        0..12,
    )
    .prop_map(|parts| parts.concat())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn scram_server_never_panics(first in scramish(), last in scramish()) {
        let stored = ScramCredentials::new(b"pw", 1).expect("credentials");
        if let Ok((server, _)) = ScramServer::start(&first, |_| Some(stored.clone())) {
            let _ = server.finish(&last);
        }
    }

    #[test]
    fn scram_client_never_panics(server_first in scramish(), server_final in scramish()) {
        let client = ScramClient::new("u", "pw").expect("client");
        let _ = client.client_final(&server_first);
        let _ = ScramClient::verify_server_final(&server_final, &[0; 32]);
    }

    #[test]
    fn password_parsers_never_panic(text in "[a-z:$0-9A-Za-z+/=#\\n ]{0,200}") {
        let _ = PasswordFile::parse(&text);
        let _ = PasswordHash::parse(&text);
    }

    #[test]
    fn acl_parsers_never_panic(text in "(user|topic|pattern|read|write|deny|[a-z/+#% \\n]){0,40}") {
        if let Ok(acl) = Acl::parse_mosquitto(&text) {
            let _ = acl.check_publish(Some("u"), "c", "a/b");
            let _ = acl.check_subscribe(None, "c", "#");
        }
        let rule = AclRule::new(Permission::Allow, Access::Both, text.replace('\n', "/"));
        if let Ok(acl) = Acl::new(vec![rule]) {
            let _ = acl.check_subscribe(Some("u"), "c", "$share/g/a/+");
        }
    }
}
