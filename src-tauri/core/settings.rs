//! Settings files (being written).
