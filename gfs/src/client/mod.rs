//! The GFS client library (in progress).
