//! atrest-scoped's parsers (docs/format.md §17) on arbitrary input, with
//! fixed keys: text and binary field envelopes, wrapped keys (scope and
//! group), client shares, and a whole stream read (random access, and fed in
//! pieces as an HTTP body is). None may panic, and
//! none may return plaintext for input that was not sealed under these keys
//! (the fuzzer cannot forge a tag, so every `Ok` here is a bug).
#![no_main]

use std::io::Cursor;

use atrest_core::SecretKey;
use atrest_scoped::{
    ClientShare, FieldContext, KeyVersion, Keyring, RecordsKey, ScopeId, ScopeKey, ScopeSecret, StreamContext,
    StreamOpener, StreamReader, STREAM_HEADER_LEN, Wrapped, field_key_version,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let scope = ScopeId::new("user:fuzz").expect("valid");
    let key = ScopeKey::new(scope.clone(), KeyVersion::FIRST, &ScopeSecret::from_bytes([9; 32]), None);
    let ring = Keyring::new(key);
    let ctx = FieldContext::new("t", "c", "r").expect("valid");
    let text = String::from_utf8_lossy(rest);
    match selector % 5 {
        0 => {
            assert!(ring.decrypt_field(&ctx, &text).is_err());
            let _ = field_key_version(&text);
        }
        1 => assert!(ring.decrypt_field_bytes(&ctx, rest).is_err()),
        2 => {
            let records = RecordsKey::new(SecretKey::from_bytes([3; 32]));
            for parsed in [Wrapped::from_bytes(rest), Wrapped::from_text(&text)] {
                if let Ok(w) = parsed {
                    assert!(records.unwrap_scope(&scope, &w).is_err());
                    assert!(ring.current().unwrap_group(&scope, &w).is_err());
                }
            }
        }
        3 => {
            let _ = ClientShare::from_text(&text);
        }
        _ => {
            let sctx = StreamContext::new("u", "o").expect("valid");
            // Opening authenticates the last chunk, so nothing forged opens.
            assert!(StreamReader::new(&ring, &sctx, Cursor::new(rest)).is_err());
            // Fed in pieces (their size from the selector's high bits): no
            // plaintext, and never an end that opens.
            if let Some((header, body)) = rest.split_first_chunk::<STREAM_HEADER_LEN>() {
                if let Ok(mut opener) = StreamOpener::new(&ring, &sctx, header) {
                    let piece = usize::from(selector >> 3) * 97 + 1;
                    let mut plain = Vec::new();
                    let fed = body.chunks(piece).try_for_each(|b| opener.update(b, &mut plain));
                    assert!(plain.is_empty(), "a forged chunk opened");
                    if fed.is_ok() {
                        assert!(opener.finish(&mut plain).is_err());
                    }
                }
            }
        }
    }
});
