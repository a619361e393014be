//! The parsing of SMTP replies the sender reads (lettre's parser, whose codes the sender sorts
//! into sent, deferred, failed and session errors): never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(response) = text.parse::<lettre::transport::smtp::response::Response>() {
        let _ = response.is_positive();
        let _ = response.first_line();
        let _ = response.code().to_string();
    }
});
