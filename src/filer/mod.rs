//! The filer network's data: the roster body and file transfers.

pub mod roster;
pub mod transfer;
