//! The public edge: what a request meets before routing, and what every response carries
//! back to a browser. In request order:
//!
//! ```text
//! tls -> client_ip (trusted proxies) -> ip policy -> ip throttle -> cors preflight
//!     -> (pipeline: route -> route ip policy -> authorize -> body decode -> ...)
//!     -> cors headers on the response
//! ```
//!
//! [`tls`] is the shell's (certificates from files, reloaded); the rest are pure functions
//! of the request and the configuration, so each is tested on its own.

pub mod client_ip;
pub mod cors;
pub mod decode;
pub mod ip_throttle;
pub mod tls;

/// The tracker served at `GET /sdk/tracker.js`.
pub const TRACKER_JS: &str = include_str!("tracker.js");

/// Where the tracker is served.
pub const TRACKER_PATH: &str = "/sdk/tracker.js";

/// A 1x1 transparent GIF, the answer of pixel routes (43 bytes).
pub const PIXEL_GIF: [u8; 43] = [
    0x47, 0x49, 0x46, 0x38, 0x39, 0x61, 0x01, 0x00, 0x01, 0x00, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00,
    0xff, 0xff, 0xff, 0x21, 0xf9, 0x04, 0x01, 0x00, 0x00, 0x00, 0x00, 0x2c, 0x00, 0x00, 0x00, 0x00,
    0x01, 0x00, 0x01, 0x00, 0x00, 0x02, 0x02, 0x44, 0x01, 0x00, 0x3b,
];
