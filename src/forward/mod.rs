//! Forward proxy mode: absolute-form requests and CONNECT tunnels to the
//! origin a request names, with Basic proxy authentication (`auth`), the
//! port and network rules of what may be reached (`acl`), the request
//! target's authority (`target`) and name resolution off the event loop
//! (`resolver`).

pub mod acl;
pub mod auth;
pub mod request;
pub mod resolver;
pub mod target;
