//! Typed ids for hosts and VMs.
//!
//! Both are short names chosen by an operator (`h1`, `web-3`). They end up in file
//! names, QEMU `-name` arguments and table cells, so they are validated once here and
//! every other module can trust them.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Longest id accepted: long enough for any sensible name, short enough for a socket path.
pub const MAX_ID_LEN: usize = 63;

/// Why a string is not a valid id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("{kind} id is empty")]
    Empty { kind: &'static str },
    #[error("{kind} id {value:?} is longer than {MAX_ID_LEN} characters")]
    TooLong { kind: &'static str, value: String },
    #[error("{kind} id {value:?} has {bad:?}: use letters, digits, '-', '_' or '.', starting with a letter or digit")]
    BadChar {
        kind: &'static str,
        value: String,
        bad: char,
    },
}

fn validate(kind: &'static str, value: &str) -> Result<(), IdError> {
    if value.is_empty() {
        return Err(IdError::Empty { kind });
    }
    if value.len() > MAX_ID_LEN {
        return Err(IdError::TooLong {
            kind,
            value: value.to_owned(),
        });
    }
    for (i, c) in value.chars().enumerate() {
        let ok = c.is_ascii_alphanumeric() || (i > 0 && matches!(c, '-' | '_' | '.'));
        if !ok {
            return Err(IdError::BadChar {
                kind,
                value: value.to_owned(),
                bad: c,
            });
        }
    }
    Ok(())
}

macro_rules! typed_id {
    ($name:ident, $kind:literal) => {
        #[doc = concat!("A validated ", $kind, " name.")]
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Validates and wraps a name.
            pub fn new(value: impl Into<String>) -> Result<Self, IdError> {
                let value = value.into();
                validate($kind, &value)?;
                Ok(Self(value))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl std::str::FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::new(s)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::new(s).map_err(serde::de::Error::custom)
            }
        }
    };
}

typed_id!(HostId, "host");
typed_id!(VmId, "vm");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_names() {
        assert_eq!(HostId::new("h1").unwrap().as_str(), "h1");
        assert!(VmId::new("web-3.prod_a").is_ok());
    }

    #[test]
    fn rejects_bad_names_with_reason() {
        assert_eq!(HostId::new(""), Err(IdError::Empty { kind: "host" }));
        let e = VmId::new("a/b").unwrap_err();
        assert!(e.to_string().contains("'/'"), "{e}");
        assert!(VmId::new("-x").is_err());
        assert!(VmId::new("x".repeat(64)).is_err());
    }

    #[test]
    fn deserialize_validates() {
        let e = serde_json::from_str::<HostId>("\"bad name\"").unwrap_err();
        assert!(e.to_string().contains("host id"), "{e}");
    }
}
