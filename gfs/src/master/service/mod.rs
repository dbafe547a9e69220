//! The master service (in progress).
