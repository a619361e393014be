//! The signup body, as a form and as JSON: never a panic; an accepted body's address holds.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for content_type in ["application/x-www-form-urlencoded", "application/json"] {
        if let Ok((email, _lists)) = bulletin::http::parse_signup_body(content_type, data) {
            assert!(bulletin::domain::EmailAddress::parse(&email).is_ok(), "{email:?}");
        }
    }
});
