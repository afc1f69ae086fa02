//! The error vocabulary of the Mobula API: every wire code of SPEC §3/§4/§6 with its HTTP status.
//!
//! Every service returns [`ApiError`]s as `{"code","message"}`; service clients parse them back, so
//! an error raised deep in the metadata service reaches the public client with its code intact.

use http::StatusCode;

macro_rules! codes {
    ($($name:ident => $status:expr),* $(,)?) => {
        /// A wire error code (the `code` field of an error body).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Code { $($name),* }

        impl Code {
            /// The code as written on the wire.
            pub fn as_str(self) -> &'static str {
                match self { $(Code::$name => stringify!($name)),* }
            }
            /// The HTTP status this code is returned with.
            pub fn status(self) -> StatusCode {
                match self { $(Code::$name => $status),* }
            }
            /// Parse a wire code; unknown codes are `None`.
            pub fn parse(s: &str) -> Option<Code> {
                match s { $(stringify!($name) => Some(Code::$name),)* _ => None }
            }
        }
    };
}

codes! {
    ContentMD5Mismatch => StatusCode::BAD_REQUEST,
    DirectoryNotEmpty => StatusCode::BAD_REQUEST,
    InvalidDurabilityLevel => StatusCode::BAD_REQUEST,
    InvalidArgument => StatusCode::BAD_REQUEST,
    InvalidResource => StatusCode::BAD_REQUEST,
    InvalidLink => StatusCode::BAD_REQUEST,
    InvalidUpdate => StatusCode::BAD_REQUEST,
    InvalidJob => StatusCode::BAD_REQUEST,
    InvalidBucketName => StatusCode::BAD_REQUEST,
    KeyTooLong => StatusCode::BAD_REQUEST,
    BucketNotEmpty => StatusCode::CONFLICT,
    BucketAlreadyExists => StatusCode::CONFLICT,
    BucketNotFound => StatusCode::NOT_FOUND,
    ObjectNotFound => StatusCode::NOT_FOUND,
    LinkNotObject => StatusCode::BAD_REQUEST,
    LocationRequired => StatusCode::BAD_REQUEST,
    ParentNotDirectory => StatusCode::BAD_REQUEST,
    OperationNotAllowedOnRootDirectory => StatusCode::BAD_REQUEST,
    OperationNotAllowedOnDirectory => StatusCode::BAD_REQUEST,
    AuthorizationRequired => StatusCode::UNAUTHORIZED,
    AuthorizationFailed => StatusCode::FORBIDDEN,
    InvalidSignature => StatusCode::FORBIDDEN,
    InvalidKeyId => StatusCode::FORBIDDEN,
    KeyDoesNotExist => StatusCode::FORBIDDEN,
    AccountDoesNotExist => StatusCode::FORBIDDEN,
    RequestExpired => StatusCode::FORBIDDEN,
    ResourceNotFound => StatusCode::NOT_FOUND,
    DirectoryDoesNotExist => StatusCode::NOT_FOUND,
    SourceObjectNotFound => StatusCode::NOT_FOUND,
    JobNotFound => StatusCode::NOT_FOUND,
    MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
    UploadTimeout => StatusCode::REQUEST_TIMEOUT,
    ConcurrentRequest => StatusCode::CONFLICT,
    DirectoryLimitExceeded => StatusCode::CONFLICT,
    InvalidJobState => StatusCode::CONFLICT,
    ContentLengthRequired => StatusCode::LENGTH_REQUIRED,
    PreconditionFailed => StatusCode::PRECONDITION_FAILED,
    MaxContentLengthExceeded => StatusCode::PAYLOAD_TOO_LARGE,
    UriTooLong => StatusCode::URI_TOO_LONG,
    HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
    RequestedRangeNotSatisfiable => StatusCode::RANGE_NOT_SATISFIABLE,
    InternalError => StatusCode::INTERNAL_SERVER_ERROR,
    NotImplemented => StatusCode::NOT_IMPLEMENTED,
    ServiceUnavailable => StatusCode::SERVICE_UNAVAILABLE,
    NotEnoughSpace => StatusCode::INSUFFICIENT_STORAGE,
}

/// An error with its wire code and a human message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub code: Code,
    pub message: String,
}

impl ApiError {
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        ApiError {
            code,
            message: message.into(),
        }
    }

    /// An internal error; the message is logged by whoever renders it.
    pub fn internal(message: impl std::fmt::Display) -> Self {
        ApiError::new(Code::InternalError, message.to_string())
    }

    /// The status this error is returned with.
    pub fn status(&self) -> StatusCode {
        self.code.status()
    }

    /// Render as a JSON error response.
    pub fn into_response(self) -> http::Response<crate::Body> {
        crate::error(self.status(), self.code.as_str(), self.message)
    }

    /// Rebuild an error from a service's response status and body.
    pub fn from_wire(status: StatusCode, body: &[u8]) -> Self {
        match serde_json::from_slice::<crate::ErrorBody>(body) {
            Ok(b) => match Code::parse(&b.code) {
                Some(code) => ApiError::new(code, b.message),
                None => ApiError::internal(format!("{}: {}", b.code, b.message)),
            },
            Err(_) => ApiError::internal(format!(
                "unexpected {status}: {}",
                String::from_utf8_lossy(&body[..body.len().min(200)])
            )),
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code.as_str(), self.message)
    }
}

impl std::error::Error for ApiError {}
