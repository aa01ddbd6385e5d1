//! Per-worker pools of the two carriers of bytes: fixed-size user-space
//! buffers (copy path) and kernel pipes (splice path).

pub mod buffer;
pub mod pipe;
