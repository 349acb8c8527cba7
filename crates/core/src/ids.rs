//! Identifiers parsed at the boundary: past it, an empty or malformed id cannot exist.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};

/// Why a raw string is not a valid identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// The identifier was empty.
    #[error("{kind} must not be empty")]
    Empty {
        /// Which identifier kind was being parsed.
        kind: &'static str,
    },
    /// The identifier is longer than allowed.
    #[error("{kind} is {len} bytes long; the limit is {max}")]
    TooLong {
        /// Which identifier kind was being parsed.
        kind: &'static str,
        /// Its length in bytes.
        len: usize,
        /// The limit in bytes.
        max: usize,
    },
    /// The identifier holds a character outside the allowed set.
    #[error("{kind} {value:?} contains {ch:?}; allowed are ASCII letters, digits and - _ . : / @")]
    BadChar {
        /// Which identifier kind was being parsed.
        kind: &'static str,
        /// The rejected value.
        value: String,
        /// The first offending character.
        ch: char,
    },
}

/// Longest identifier, in bytes.
pub const MAX_ID_LEN: usize = 128;

/// The spelling of every identifier as a JSON Schema / OpenAPI pattern (ECMA-262).
pub const ID_PATTERN: &str = "^[A-Za-z0-9._:/@-]+$";

/// Whether `c` may appear in an identifier: ASCII letters and digits, and `- _ . : / @`
/// (`@` joins sku@location in topic keys; `:` appears in channel ids such as partner:ozon).
/// ASCII only, so that ids compare, hash and sort the same in every store, cache and client.
pub fn is_id_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':' | '/' | '@')
}

fn validate(kind: &'static str, raw: &str) -> Result<(), IdError> {
    if raw.is_empty() {
        return Err(IdError::Empty { kind });
    }
    if raw.len() > MAX_ID_LEN {
        return Err(IdError::TooLong { kind, len: raw.len(), max: MAX_ID_LEN });
    }
    if let Some(ch) = raw.chars().find(|c| !is_id_char(*c)) {
        return Err(IdError::BadChar { kind, value: raw.to_owned(), ch });
    }
    Ok(())
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Parses a raw identifier, rejecting empty, overlong or oddly spelled values.
            pub fn parse(raw: impl Into<String>) -> Result<Self, IdError> {
                let raw = raw.into();
                validate($kind, &raw)?;
                Ok(Self(raw))
            }

            /// The identifier as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let raw = String::deserialize(d)?;
                Self::parse(raw).map_err(serde::de::Error::custom)
            }
        }

        impl std::str::FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::parse(s)
            }
        }

        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                utoipa::openapi::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::schema::Type::String)
                    .min_length(Some(1))
                    .max_length(Some(MAX_ID_LEN))
                    .pattern(Some(ID_PATTERN))
                    .description(Some(concat!("A ", $kind, ": ASCII letters, digits and - _ . : / @")))
                    .into()
            }
        }
        impl utoipa::ToSchema for $name {}
    };
}

id_type!(
    /// A stock-keeping unit: the partition key of inventory events.
    Sku,
    "sku"
);
id_type!(
    /// A stock location (warehouse, store) that holds on-hand quantities.
    LocationId,
    "location"
);
id_type!(
    /// A sales channel such as `wms`, `storefront` or `partner:ozon`.
    ChannelId,
    "channel"
);
id_type!(
    /// A customer account: the partition key of payments, profiles, labels and decisions.
    AccountId,
    "account"
);
id_type!(
    /// A payment transaction.
    TransactionId,
    "transaction"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_reject_empty_long_and_odd_values_with_a_specific_reason() {
        assert_eq!(Sku::parse(""), Err(IdError::Empty { kind: "sku" }));
        assert!(matches!(Sku::parse("a".repeat(129)), Err(IdError::TooLong { len: 129, .. })));
        assert!(matches!(LocationId::parse("wh 1"), Err(IdError::BadChar { ch: ' ', .. })));
        assert!(matches!(Sku::parse("sk\u{fc}"), Err(IdError::BadChar { ch: '\u{fc}', .. })), "ASCII only");
        assert_eq!(ChannelId::parse("partner:ozon").map(|c| c.to_string()).ok(), Some("partner:ozon".into()));
    }

    #[test]
    fn ids_are_validated_when_deserialized() {
        let err = serde_json::from_str::<Sku>("\"\"").expect_err("empty sku must fail");
        assert!(err.to_string().contains("sku must not be empty"));
    }
}
