//! Integers as JSON Schema reads them: `5` and `5.0` are the same integer, `5.5` is not one.
//! serde alone refuses `5.0` for an integer field, while every JSON Schema validator (and so
//! the published schemas and the clients generated from them) accepts it; these deserializers
//! make the parser agree. Floats are exact only up to 2^53, so larger ones are refused rather
//! than rounded.

use serde::de::{self, Deserializer, Visitor};

/// Largest integer an f64 holds exactly.
const EXACT: f64 = 9_007_199_254_740_992.0;

struct Whole;

impl Visitor<'_> for Whole {
    type Value = i128;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an integer")
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<i128, E> {
        Ok(i128::from(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<i128, E> {
        Ok(i128::from(v))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<i128, E> {
        if v.fract() == 0.0 && v.abs() <= EXACT {
            // Integral and exact: the cast is lossless.
            Ok(v as i128)
        } else {
            Err(E::invalid_value(de::Unexpected::Float(v), &self))
        }
    }
}

fn whole<'de, D: Deserializer<'de>, T: TryFrom<i128>>(d: D) -> Result<T, D::Error> {
    let v = d.deserialize_any(Whole)?;
    T::try_from(v).map_err(|_| de::Error::custom(format!("integer {v} is out of range")))
}

/// An `i64` written as an integer or an integral float.
pub fn i64<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    whole(d)
}

/// A `u64` written as an integer or an integral float.
pub fn u64<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    whole(d)
}

/// A `u32` written as an integer or an integral float.
pub fn u32<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    whole(d)
}

struct Optional<T>(std::marker::PhantomData<T>);

impl<'de, T: TryFrom<i128>> Visitor<'de> for Optional<T> {
    type Value = Option<T>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an integer or null")
    }

    fn visit_none<E: de::Error>(self) -> Result<Option<T>, E> {
        Ok(None)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Option<T>, E> {
        Ok(None)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Option<T>, D::Error> {
        whole(d).map(Some)
    }
}

/// An optional `i64` (`null` or absent: `None`); use with `#[serde(default)]`.
pub fn opt_i64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    d.deserialize_option(Optional(std::marker::PhantomData))
}

/// An optional `u64`; use with `#[serde(default)]`.
pub fn opt_u64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    d.deserialize_option(Optional(std::marker::PhantomData))
}

/// An optional `u32`; use with `#[serde(default)]`.
pub fn opt_u32<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    d.deserialize_option(Optional(std::marker::PhantomData))
}

#[cfg(test)]
mod tests {
    #[derive(Debug, serde::Deserialize, PartialEq)]
    struct T {
        #[serde(deserialize_with = "super::i64")]
        a: i64,
        #[serde(default, deserialize_with = "super::opt_u32")]
        b: Option<u32>,
    }

    fn parse(s: &str) -> Result<T, serde_json::Error> {
        serde_json::from_str(s)
    }

    #[test]
    fn integral_floats_are_integers_and_nothing_else_is() {
        assert_eq!(parse(r#"{"a": 5.0, "b": 7.0}"#).expect("integral"), T { a: 5, b: Some(7) });
        assert_eq!(parse(r#"{"a": -3, "b": null}"#).expect("plain"), T { a: -3, b: None });
        assert_eq!(parse(r#"{"a": 1e3}"#).expect("exponent").a, 1000);
        assert!(parse(r#"{"a": 5.5}"#).is_err());
        assert!(parse(r#"{"a": "5"}"#).is_err());
        assert!(parse(r#"{"a": 1, "b": -1}"#).is_err(), "out of the target's range");
        assert!(parse(r#"{"a": 1e300}"#).is_err(), "not exact");
        assert!(parse(r#"{"a": 9223372036854775808}"#).is_err(), "past i64");
    }
}
