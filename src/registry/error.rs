//! The registry's errors, each carrying its discovery code.

use serde::{Deserialize, Serialize};

/// Why a registry command or query was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum RegistryError {
    /// `-400`: a parameter is missing or invalid; nothing was changed.
    #[error("{param}: {reason}")]
    BadRequest { param: String, reason: String },
    /// `-404`: no such app or instance.
    #[error("-404")]
    NotFound,
    /// `-403`: a rule of this cluster refuses the write to its sender.
    #[error("{0}")]
    Forbidden(String),
}

impl RegistryError {
    pub fn bad(param: &str, reason: &str) -> Self {
        RegistryError::BadRequest {
            param: param.to_string(),
            reason: reason.to_string(),
        }
    }

    /// The discovery code clients see.
    pub fn code(&self) -> i32 {
        match self {
            RegistryError::BadRequest { .. } => -400,
            RegistryError::NotFound => -404,
            RegistryError::Forbidden(_) => -403,
        }
    }
}
