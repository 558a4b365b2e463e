use std::fmt;
use std::str::FromStr;

/// A customer's identity as every service writes it: `CUST-` and six digits, e.g. `CUST-000042`.
/// Parsed once at the edge; inside, services pass the type, never a loose string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CustomerId(u32);

/// Why a text is not a [`CustomerId`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("customer id must look like CUST-000042 (CUST- and six digits), got {0:?}")]
pub struct InvalidCustomerId(pub String);

impl CustomerId {
    /// The largest number six digits can write.
    pub const MAX: u32 = 999_999;

    /// The id with this number; `None` beyond six digits.
    pub fn new(number: u32) -> Option<Self> {
        (number <= Self::MAX).then_some(Self(number))
    }

    pub fn number(self) -> u32 {
        self.0
    }
}

impl fmt::Display for CustomerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CUST-{:06}", self.0)
    }
}

impl FromStr for CustomerId {
    type Err = InvalidCustomerId;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let invalid = || InvalidCustomerId(text.to_string());
        let digits = text.strip_prefix("CUST-").ok_or_else(invalid)?;
        if digits.len() != 6 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(invalid());
        }
        digits.parse().map(Self).map_err(|_| invalid())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_text() {
        let id = CustomerId::new(42).unwrap();
        assert_eq!(id.to_string(), "CUST-000042");
        assert_eq!("CUST-000042".parse::<CustomerId>(), Ok(id));
    }

    #[test]
    fn rejects_what_is_not_six_digits() {
        for bad in [
            "",
            "CUST-42",
            "CUST-0000042",
            "cust-000042",
            "CUST-00004x",
            "CUST-+00042",
        ] {
            assert_eq!(
                bad.parse::<CustomerId>(),
                Err(InvalidCustomerId(bad.to_string())),
                "{bad}"
            );
        }
        assert!(CustomerId::new(1_000_000).is_none());
    }
}
