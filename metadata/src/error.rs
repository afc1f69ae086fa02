//! The metadata service's own error: a request refused for a reason its caller can act on
//! (carrying its wire code), or the database failing. The server turns it into the wire
//! [`ApiError`] where the response is made; a database failure is an `InternalError` there.

use mobula_http::{ApiError, Code};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Refused, with the wire code the caller gets (not found, not empty, precondition…).
    #[error(transparent)]
    Refused(#[from] ApiError),
    /// The SQLite database failed.
    #[error("metadata database: {0}")]
    Database(#[from] rusqlite::Error),
    /// A stored value could not be read back (a bug or a damaged database).
    #[error("metadata: {0}")]
    Internal(String),
}

impl Error {
    /// A refusal with `code`.
    pub fn refused(code: Code, message: impl Into<String>) -> Error {
        Error::Refused(ApiError::new(code, message))
    }

    /// An internal failure.
    pub fn internal(message: impl std::fmt::Display) -> Error {
        Error::Internal(message.to_string())
    }

    /// The wire code a caller gets.
    pub fn code(&self) -> Code {
        match self {
            Error::Refused(e) => e.code,
            _ => Code::InternalError,
        }
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> ApiError {
        match e {
            Error::Refused(e) => e,
            e => ApiError::internal(e),
        }
    }
}
