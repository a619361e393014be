//! Property tests of the domain types: every accepted value round-trips, every rule holds, and
//! no input makes a parser panic.

use proptest::prelude::*;

use super::*;

/// Addresses the rules accept: atext local parts without leading, trailing or doubled dots, and
/// domains of lowercase or uppercase labels.
fn valid_address() -> impl Strategy<Value = String> {
    let local = "[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]{1,20}(\\.[A-Za-z0-9_+-]{1,10}){0,2}";
    let label = "[A-Za-z0-9]([A-Za-z0-9-]{0,10}[A-Za-z0-9])?";
    (local, proptest::collection::vec(label, 1..4), "[A-Za-z]{2,6}")
        .prop_map(|(local, labels, top)| format!("{local}@{}.{top}", labels.join(".")))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn address_parsing_never_panics(input in any::<String>()) {
        let _ = EmailAddress::parse(&input);
    }

    #[test]
    fn accepted_addresses_round_trip_and_hold_the_rules(input in any::<String>()) {
        if let Ok(address) = EmailAddress::parse(&input) {
            let s = address.as_str();
            prop_assert_eq!(EmailAddress::parse(s), Ok(address.clone()));
            prop_assert_eq!(s.matches('@').count(), 1);
            prop_assert!(s.len() <= 254);
            prop_assert!(!s.chars().any(|c| c.is_whitespace() || c.is_control()));
            prop_assert!(!s.contains(['<', '>', '"', ',', ';', '\\']));
            prop_assert_eq!(address.domain(), address.domain().to_lowercase());
        }
    }

    #[test]
    fn well_formed_addresses_are_accepted_and_keyed_lowercase(input in valid_address()) {
        let address = EmailAddress::parse(&input).map_err(|e| TestCaseError::fail(format!("{input}: {e}")))?;
        prop_assert_eq!(address.key(), input.to_lowercase());
        prop_assert_eq!(address.local_part(), input.split('@').next().unwrap_or_default());
        // Surrounding whitespace is trimmed to the same address.
        prop_assert_eq!(EmailAddress::parse(&format!("  {input}\t")), Ok(address));
    }

    #[test]
    fn confirmation_tokens_round_trip_and_garbage_never_panics(input in any::<String>()) {
        let token = ConfirmationToken::generate();
        let parsed = ConfirmationToken::parse(token.as_str()).map_err(|_| TestCaseError::fail("own token"))?;
        prop_assert_eq!(parsed.hash(), token.hash());
        prop_assert_eq!(token.hash().len(), 64);
        let _ = ConfirmationToken::parse(&input);
    }

    #[test]
    fn signed_links_verify_for_their_row_only(
        id in 1i64..i64::MAX,
        key in any::<Option<i64>>(),
        other in any::<i64>(),
        secret in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        for purpose in [LinkPurpose::Unsubscribe, LinkPurpose::Preferences, LinkPurpose::Erasure] {
            let token = sign_link(&secret, purpose, id, key);
            let parsed = LinkToken::parse(&token).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(parsed.verify(&secret, purpose, key), Ok(id));
            if Some(other) != key {
                prop_assert!(parsed.verify(&secret, purpose, Some(other)).is_err());
            }
            let elsewhere = if purpose == LinkPurpose::Unsubscribe { LinkPurpose::Preferences } else { LinkPurpose::Unsubscribe };
            prop_assert!(parsed.verify(&secret, elsewhere, key).is_err());
        }
    }

    #[test]
    fn expiring_links_hold_exactly_until_their_time(
        id in 1i64..i64::MAX,
        key in any::<Option<i64>>(),
        expires in any::<i64>(),
        now in any::<i64>(),
    ) {
        let token = sign_expiring(b"secret", LinkPurpose::Erasure, id, key, expires);
        let parsed = ExpiringToken::parse(&token).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let verdict = parsed.verify(b"secret", LinkPurpose::Erasure, key, now);
        if now < expires {
            prop_assert_eq!(verdict, Ok(id));
        } else {
            prop_assert_eq!(verdict, Err(LinkTokenError::Expired));
        }
    }

    #[test]
    fn link_token_parsing_never_panics(input in any::<String>(), ascii in "[0-9.A-Za-z_-]{0,80}") {
        let _ = LinkToken::parse(&input);
        let _ = ExpiringToken::parse(&input);
        let _ = LinkToken::parse(&ascii);
        let _ = ExpiringToken::parse(&ascii);
    }
}
