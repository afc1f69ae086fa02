//! The metadata service's own error: a request refused for a reason its caller can act on
//! (carrying its wire code), or the database failing. The server turns it into the wire
//! [`ApiError`] where the response is made; a database failure is an `InternalError` there.

use mobula_http::{ApiError, Code};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Refused, with the wire code the caller gets (not found, not empty, precondition…).
    #[error(transparent)]
    Refused(#[from] ApiError),
    /// The database failed (either backend; the message is the engine's).
    #[error("metadata database: {0}")]
    Database(String),
    /// The database holds a schema newer than this build knows: a newer Mobula wrote it.
    #[error(
        "the metadata database has schema version {found}, newer than this build of Mobula \
         knows ({known}): run the newer Mobula, or restore a backup of the older database"
    )]
    NewerSchema { found: usize, known: usize },
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
