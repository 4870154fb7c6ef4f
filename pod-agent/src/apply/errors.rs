//! A failed operation as the batch result reports it: its index, its path
//! (echoed once, bounded) and a message of bounded length.

use crate::root::RootError;
use lks_proto::PathError;
use lks_proto::v1::{ErrorCode, OpError};

pub(super) fn op_error(index: u64, path: &str, code: ErrorCode, message: String) -> OpError {
    OpError {
        index,
        path: echoed(path),
        code: code as i32,
        message: bounded(message),
    }
}

/// A path as an error echoes it: whole when short, else its start and its
/// length (a hostile path of megabytes is not copied into every error).
pub fn echoed(path: &str) -> String {
    let max = lks_proto::limits::MAX_ECHOED_PATH_BYTES;
    if path.len() <= max {
        return path.to_string();
    }
    let mut end = max;
    while !path.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}... ({} bytes)", &path[..end], path.len())
}

/// A message, at most a few echoed paths long.
pub(super) fn bounded(message: String) -> String {
    let max = 2 * lks_proto::limits::MAX_ECHOED_PATH_BYTES;
    if message.len() <= max {
        return message;
    }
    let mut end = max;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}... ({} bytes)", &message[..end], message.len())
}

pub(super) fn root_error(index: u64, e: &RootError) -> OpError {
    let (path, code) = match e {
        RootError::ThroughSymlink { path, .. } => (path, ErrorCode::ThroughSymlink),
        RootError::NotADirectory { path, .. } => (path, ErrorCode::Io),
        RootError::LinkEscapes { path, .. } => (path, ErrorCode::SymlinkEscapes),
        RootError::Conflict { path, .. } => (path, ErrorCode::Io),
        RootError::Missing { path } => (path, ErrorCode::Io),
        RootError::NoSpace { path } => (path, ErrorCode::NoSpace),
        RootError::Io { path, .. } => (path, ErrorCode::Io),
    };
    op_error(index, path.as_str(), code, e.to_string())
}

pub(super) fn path_error(index: u64, raw: &str, e: &PathError) -> OpError {
    op_error(
        index,
        raw,
        ErrorCode::InvalidPath,
        format!("refused path: {e}"),
    )
}
