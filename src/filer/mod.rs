//! The filer network's data: the roster body and (later) file transfers.

pub mod roster;
