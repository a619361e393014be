//! Address parsing: never a panic; an accepted address parses again to itself and holds the rules.
#![no_main]

use bulletin::domain::EmailAddress;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(address) = EmailAddress::parse(text) {
        let s = address.as_str();
        assert_eq!(EmailAddress::parse(s).as_ref(), Ok(&address));
        assert_eq!(s.matches('@').count(), 1);
        assert!(s.len() <= 254);
        assert!(!s.chars().any(|c| c.is_whitespace() || c.is_control()));
    }
});
