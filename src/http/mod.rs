//! HTTP/1.1: head parsing and validation, body framing, header rewriting,
//! the answers ferry generates, and the session state machine that drives a
//! pair in HTTP mode.

pub mod access_log;
pub mod answer;
pub mod chunked;
pub mod head;
pub mod log_file;
pub mod rewrite;
pub mod session;
