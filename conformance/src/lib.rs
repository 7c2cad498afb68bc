//! Conformance (stub).
