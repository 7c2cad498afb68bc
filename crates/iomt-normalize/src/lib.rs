//! Normalization (stub).
