//! Bytes → `Saml::decode_form` (as an ACS POST body) and, when UTF-8, `Saml::check` as the
//! answer to `REQ_ID` and as an unsolicited response. Never panics; anything accepted is
//! one of the seeds, so it carries exactly the seeds' identity.

#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let sp = common::saml();
    let _ = sp.decode_form(data);
    let Ok(xml) = std::str::from_utf8(data) else {
        return;
    };
    for expected in [Some(common::REQ_ID), None] {
        if let Ok(v) = sp.check(xml, expected, common::now()) {
            common::assert_seed_identity(&v);
        }
    }
});
