//! The open-files limit. Each service of `lks up` holds a few descriptors
//! (its tunnel, its agent's pipes, its watch), and the usual soft default of
//! 1024 runs out near 200 services ("Too many open files"). lks raises its
//! own soft limit to the hard one at start. The processes it starts inherit
//! the raised limit: giving them back the old one would take a `pre_exec`
//! hook, which is unsafe code, and lks has none (an app that uses
//! `select(2)` on descriptors past 1024 is the rare case this affects).

use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};

/// Raises the soft limit to the hard one (once, at start).
pub fn raise() {
    let limit = getrlimit(Resource::Nofile);
    if limit.current.is_none() || limit.current == limit.maximum {
        return;
    }
    let raised = Rlimit {
        current: limit.maximum,
        maximum: limit.maximum,
    };
    if let Err(e) = setrlimit(Resource::Nofile, raised) {
        tracing::debug!("could not raise the open-files limit: {e}");
    }
}

/// The current soft limit (None: unlimited).
pub fn soft() -> Option<u64> {
    getrlimit(Resource::Nofile).current
}
