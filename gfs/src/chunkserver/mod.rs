//! The chunkserver service (in progress).
