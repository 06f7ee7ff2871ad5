//! Byte encodings, shared with atrest-remote through atrest-core: unpadded
//! base64url in JSON, and the length-prefixed canonical form that hashes and
//! signatures cover.

pub use atrest_core::{Canonical, base64url_array, to_base64url};
