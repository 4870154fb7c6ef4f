//! Limits both sides enforce. The agent refuses anything beyond them with a clear
//! error; the host splits its work so it never reaches them.

/// Largest gRPC message either side decodes (tonic's default is 4 MiB).
pub const MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

/// Largest literal `Data` payload the host puts in one message.
pub const DATA_CHUNK_BYTES: usize = 1024 * 1024;

/// Longest relative path, in bytes (Linux's PATH_MAX).
pub const MAX_PATH_BYTES: usize = 4096;

/// Longest single path component, in bytes (Linux's NAME_MAX).
pub const MAX_COMPONENT_BYTES: usize = 255;

/// Most operations (Data and Copy included) in one Apply batch.
pub const MAX_OPS_PER_BATCH: u64 = 200_000;

/// Errors one batch reports at the most; the rest are counted in a last one.
pub const MAX_ERRORS_PER_BATCH: usize = 256;

/// How much of a refused path an error echoes (bytes): any path within the
/// limits whole, a hostile one of megabytes cut.
pub const MAX_ECHOED_PATH_BYTES: usize = 2 * MAX_PATH_BYTES;

/// Largest file the agent accepts.
pub const MAX_FILE_BYTES: u64 = 16 * 1024 * 1024 * 1024;

/// Most file operations the host puts in one batch before it starts another.
pub const HOST_FILES_PER_BATCH: usize = 20_000;

/// Most bytes the host puts in one batch before it starts another.
pub const HOST_BYTES_PER_BATCH: u64 = 256 * 1024 * 1024;
