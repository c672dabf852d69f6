//! sockmod: painless TCP messaging over one small protocol.
pub mod protocol;
