use serde::{Deserialize, Deserializer, Serialize, Serializer, de};
use std::fmt;
use std::str::FromStr;

/// A number of bytes, written either as an integer (`67108864`) or with a unit (`"64MiB"`, `"512 KiB"`, `"1GB"`).
///
/// Units: `B`; binary `KiB`, `MiB`, `GiB`, `TiB` (and the short forms `K`, `M`, `G`, `T`, which are binary too, as
/// in most container tools); decimal `KB`, `MB`, `GB`, `TB`. Case-insensitive. Serialized as a plain integer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ByteSize(pub u64);

/// Why a byte size did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid byte size {input:?}: {reason} (write e.g. 1048576, \"64MiB\" or \"1GB\")")]
pub struct ByteSizeError {
    input: String,
    reason: &'static str,
}

impl FromStr for ByteSize {
    type Err = ByteSizeError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let error = |reason| ByteSizeError { input: input.to_owned(), reason };
        let text = input.trim();
        let digits_end = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
        if digits_end == 0 {
            return Err(error("it must start with a number"));
        }
        let number: u64 = text[..digits_end].parse().map_err(|_| error("the number is too large"))?;
        let multiplier: u64 = match text[digits_end..].trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "k" | "kib" => 1 << 10,
            "m" | "mib" => 1 << 20,
            "g" | "gib" => 1 << 30,
            "t" | "tib" => 1 << 40,
            "kb" => 1_000,
            "mb" => 1_000_000,
            "gb" => 1_000_000_000,
            "tb" => 1_000_000_000_000,
            _ => return Err(error("unknown unit")),
        };
        number.checked_mul(multiplier).map(ByteSize).ok_or_else(|| error("the size is too large"))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u64(self.0)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl de::Visitor<'_> for Visitor {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a byte count: a non-negative integer or a string such as \"64MiB\"")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ByteSize, E> {
                u64::try_from(v)
                    .map(ByteSize)
                    .map_err(|_| E::custom(format!("byte count must not be negative, got {v}")))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<ByteSize, E> {
                Err(E::custom(format!("byte count must be a whole number, got {v}")))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ByteSize, E> {
                v.parse().map_err(E::custom)
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_and_unit_sizes() {
        assert_eq!("1024".parse(), Ok(ByteSize(1024)));
        assert_eq!("64MiB".parse(), Ok(ByteSize(64 << 20)));
        assert_eq!("64 mib".parse(), Ok(ByteSize(64 << 20)));
        assert_eq!("64M".parse(), Ok(ByteSize(64 << 20)));
        assert_eq!("2KB".parse(), Ok(ByteSize(2000)));
        assert_eq!("1GB".parse(), Ok(ByteSize(1_000_000_000)));
    }

    #[test]
    fn refuses_garbage_units_and_overflow() {
        assert!("".parse::<ByteSize>().is_err());
        assert!("MiB".parse::<ByteSize>().is_err());
        assert!("12 parsecs".parse::<ByteSize>().is_err());
        assert!("-5".parse::<ByteSize>().is_err());
        assert!("99999999999999999999GiB".parse::<ByteSize>().is_err());
        assert!("18446744073709551615GiB".parse::<ByteSize>().is_err());
    }

    #[test]
    fn deserializes_from_integer_or_string_but_not_negative() {
        let from_int: ByteSize = serde_json::from_str("65536").unwrap();
        let from_str: ByteSize = serde_json::from_str("\"64KiB\"").unwrap();
        assert_eq!(from_int, from_str);
        assert!(serde_json::from_str::<ByteSize>("-1").is_err());
        assert!(serde_json::from_str::<ByteSize>("1.5").is_err());
    }
}
