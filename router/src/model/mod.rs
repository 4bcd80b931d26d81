//! The router's model as plain data with pure transitions. The cluster task owns the
//! one instance; nothing here does I/O or reads a clock.

pub mod host;
