//! The simulator as its users see it: generated traffic against the example mappings, and
//! the sender against a recording HTTP server on loopback. One test binary (STYLE b5).

mod common;
mod generator;
mod http;
mod mappings;
