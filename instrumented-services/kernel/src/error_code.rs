use std::fmt;
use std::str::FromStr;

/// Business error codes shared by all services. A service puts the code in the
/// `x-error-code` gRPC metadata of a failed call; the gateway turns it into the HTTP status and
/// the `error` field of its JSON answer, so clients see the same code whichever service failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    InvalidRequest,
    InvalidCredentials,
    InvalidToken,
    UnknownCustomer,
    UnknownSku,
    OutOfStock,
    NotFound,
    RateLimited,
    /// A dependency failed or timed out (after retries) or its circuit breaker is open.
    Unavailable,
    Internal,
}

impl ErrorCode {
    /// Every code, for tables and tests.
    pub const ALL: [ErrorCode; 10] = [
        Self::InvalidRequest,
        Self::InvalidCredentials,
        Self::InvalidToken,
        Self::UnknownCustomer,
        Self::UnknownSku,
        Self::OutOfStock,
        Self::NotFound,
        Self::RateLimited,
        Self::Unavailable,
        Self::Internal,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidRequest => "INVALID_REQUEST",
            Self::InvalidCredentials => "INVALID_CREDENTIALS",
            Self::InvalidToken => "INVALID_TOKEN",
            Self::UnknownCustomer => "UNKNOWN_CUSTOMER",
            Self::UnknownSku => "UNKNOWN_SKU",
            Self::OutOfStock => "OUT_OF_STOCK",
            Self::NotFound => "NOT_FOUND",
            Self::RateLimited => "RATE_LIMITED",
            Self::Unavailable => "UNAVAILABLE",
            Self::Internal => "INTERNAL",
        }
    }

    /// The HTTP status the gateway answers with.
    pub fn http_status(self) -> u16 {
        match self {
            Self::InvalidRequest => 400,
            Self::InvalidCredentials | Self::InvalidToken => 401,
            Self::UnknownCustomer | Self::UnknownSku | Self::NotFound => 404,
            Self::OutOfStock => 409,
            Self::RateLimited => 429,
            Self::Unavailable => 503,
            Self::Internal => 500,
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ErrorCode {
    type Err = ();

    fn from_str(text: &str) -> Result<Self, ()> {
        Self::ALL.into_iter().find(|code| code.as_str() == text).ok_or(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_round_trips_and_maps_to_an_error_status() {
        for code in ErrorCode::ALL {
            assert_eq!(code.as_str().parse(), Ok(code));
            assert!((400..600).contains(&code.http_status()), "{code}");
        }
    }
}
