//! The reaper (being written).
