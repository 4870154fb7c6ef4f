//! What went wrong talking to the agent, and whether trying again may help.

use crate::tunnel;
use tonic::Code;

/// What went wrong talking to the agent.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The tunnel could not be opened.
    #[error(transparent)]
    Tunnel(#[from] tunnel::TunnelError),
    /// The agent refused the token.
    #[error(
        "the agent at {url} refused the token ({message}); use the same LKS_TOKEN or --token-file on both sides"
    )]
    Unauthenticated {
        /// The agent's URL.
        url: String,
        /// What it said.
        message: String,
    },
    /// The agent restarted since the session said hello (the tunnel reached
    /// the new process by itself): what the session knows of its root is
    /// stale; nothing of the batch was applied.
    #[error("the agent at {url} restarted since the last batch ({message})")]
    Restarted {
        /// The agent's URL.
        url: String,
        /// What it said.
        message: String,
    },
    /// The agent speaks another protocol version.
    #[error("the agent at {url} is incompatible: {message}")]
    Incompatible {
        /// The agent's URL.
        url: String,
        /// What it said.
        message: String,
    },
    /// The call failed (connection lost, agent restarted, ...).
    #[error("lost the agent at {url}: {message}")]
    Lost {
        /// The agent's URL.
        url: String,
        /// What happened.
        message: String,
    },
}

impl SessionError {
    /// Whether trying again later may help.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            SessionError::Tunnel(tunnel::TunnelError::Unreachable { .. })
                | SessionError::Lost { .. }
                | SessionError::Restarted { .. }
        )
    }

    pub(super) fn from_status(url: &str, s: tonic::Status) -> SessionError {
        let message = if s.message().is_empty() {
            tunnel::source_chain(&s)
        } else {
            s.message().to_string()
        };
        match s.code() {
            Code::Unauthenticated => SessionError::Unauthenticated {
                url: url.into(),
                message,
            },
            Code::Aborted => SessionError::Restarted {
                url: url.into(),
                message,
            },
            Code::FailedPrecondition => SessionError::Incompatible {
                url: url.into(),
                message,
            },
            _ => SessionError::Lost {
                url: url.into(),
                message,
            },
        }
    }
}
