//! Trace and span ids: fixed-size newtypes, validated once at the edge.
//!
//! OTLP carries ids as raw bytes; humans and the OTLP/JSON encoding see lowercase hex.
//! An all-zero id is invalid per the W3C trace-context spec, so it never gets a value here.

use std::fmt;
use std::str::FromStr;

/// What was wrong with an id, and by how much.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("{kind} must be {expected} bytes long, got {got}")]
    Length {
        kind: &'static str,
        expected: usize,
        got: usize,
    },
    #[error("{kind} must not be all zeros")]
    Zero { kind: &'static str },
    #[error("{kind} is not {expected} hex digits: {text:?}")]
    Hex {
        kind: &'static str,
        expected: usize,
        text: String,
    },
}

macro_rules! id_type {
    ($name:ident, $len:literal, $kind:literal) => {
        #[doc = concat!("A non-zero ", $kind, " of ", stringify!($len), " bytes.")]
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name([u8; $len]);

        impl $name {
            pub const fn to_bytes(self) -> [u8; $len] {
                self.0
            }
        }

        impl TryFrom<&[u8]> for $name {
            type Error = IdError;
            fn try_from(bytes: &[u8]) -> Result<Self, IdError> {
                let array: [u8; $len] = bytes.try_into().map_err(|_| IdError::Length {
                    kind: $kind,
                    expected: $len,
                    got: bytes.len(),
                })?;
                if array == [0; $len] {
                    return Err(IdError::Zero { kind: $kind });
                }
                Ok(Self(array))
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(text: &str) -> Result<Self, IdError> {
                let mut bytes = [0u8; $len];
                hex::decode_to_slice(text, &mut bytes).map_err(|_| IdError::Hex {
                    kind: $kind,
                    expected: 2 * $len,
                    text: text.chars().take(64).collect(),
                })?;
                Self::try_from(&bytes[..])
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&hex::encode(self.0))
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({self})", stringify!($name))
            }
        }
    };
}

id_type!(TraceId, 16, "trace id");
id_type!(SpanId, 8, "span id");

impl SpanId {
    /// The id as the big-endian integer stored in `UBIGINT` columns, so hex order is numeric order.
    pub const fn to_u64(self) -> u64 {
        u64::from_be_bytes(self.0)
    }

    pub const fn from_u64(value: u64) -> Option<Self> {
        if value == 0 {
            None
        } else {
            Some(Self(value.to_be_bytes()))
        }
    }
}

/// Parses an optional parent span id: OTLP marks a root span with an empty id.
pub fn parent_span_id(bytes: &[u8]) -> Result<Option<SpanId>, IdError> {
    if bytes.is_empty() {
        Ok(None)
    } else {
        SpanId::try_from(bytes).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_id_round_trips_through_hex() {
        let id: TraceId = "0af7651916cd43dd8448eb211c80319c".parse().unwrap();
        assert_eq!(id.to_string(), "0af7651916cd43dd8448eb211c80319c");
        assert_eq!(TraceId::try_from(&id.to_bytes()[..]), Ok(id));
    }

    #[test]
    fn bad_ids_say_what_is_wrong() {
        assert_eq!(
            TraceId::try_from(&[1u8; 17][..]).unwrap_err().to_string(),
            "trace id must be 16 bytes long, got 17"
        );
        assert_eq!(
            SpanId::try_from(&[0u8; 8][..]).unwrap_err().to_string(),
            "span id must not be all zeros"
        );
        assert!("xyz"
            .parse::<SpanId>()
            .unwrap_err()
            .to_string()
            .contains("16 hex digits"));
        assert_eq!(parent_span_id(&[]), Ok(None));
    }

    #[test]
    fn span_id_integer_form_is_big_endian() {
        let id: SpanId = "00f067aa0ba902b7".parse().unwrap();
        assert_eq!(id.to_u64(), 0x00f0_67aa_0ba9_02b7);
        assert_eq!(SpanId::from_u64(id.to_u64()), Some(id));
        assert_eq!(SpanId::from_u64(0), None);
    }
}
