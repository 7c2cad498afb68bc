//! Transformation (stub).
