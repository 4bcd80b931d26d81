//! Challenge–response authentication with the shared cluster secret.
//!
//! Each side sends a fresh 32-byte nonce and proves knowledge of the secret with
//! HMAC-SHA256 over both nonces, the host name and its role. The secret never crosses
//! the wire, a recorded proof is useless for another connection (fresh nonces), and a
//! proof made in one role cannot be replayed in the other (the role is in the MAC).

use hmac::{Hmac, Mac};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::Sha256;

use crate::{secret::Secret, HostId};

type HmacSha256 = Hmac<Sha256>;

macro_rules! hex32 {
    ($name:ident) => {
        #[derive(Clone, Copy, PartialEq, Eq)]
        pub struct $name([u8; 32]);

        impl $name {
            pub fn from_bytes(b: [u8; 32]) -> Self {
                Self(b)
            }
            pub fn as_bytes(&self) -> &[u8; 32] {
                &self.0
            }
        }

        impl std::fmt::Debug for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "{}({}…)", stringify!($name), &hex::encode(self.0)[..8])
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&hex::encode(self.0))
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                let mut b = [0u8; 32];
                hex::decode_to_slice(&s, &mut b).map_err(|e| {
                    serde::de::Error::custom(format!(
                        "{}: expected 64 hex digits: {e}",
                        stringify!($name)
                    ))
                })?;
                Ok(Self(b))
            }
        }
    };
}

hex32!(Nonce);
hex32!(Proof);

impl Nonce {
    /// A fresh random nonce from the OS.
    pub fn random() -> Self {
        let mut b = [0u8; 32];
        // getrandom only fails when the OS has no entropy source at all; then no
        // authentication is possible and failing loudly is right.
        getrandom::fill(&mut b).expect("OS random source unavailable");
        Self(b)
    }
}

/// Which side is proving.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Genie,
    Router,
}

/// The proof `role` sends: HMAC(secret, "wisp-auth-v1" | role | host | their nonce | own nonce).
pub fn proof(secret: &Secret, role: Role, host: &HostId, theirs: &Nonce, own: &Nonce) -> Proof {
    let mac = mac(secret, role, host, theirs, own);
    let out = mac.finalize().into_bytes();
    let mut b = [0u8; 32];
    b.copy_from_slice(&out);
    Proof(b)
}

/// Checks in constant time that `got` is the proof `role` should have sent.
pub fn verify(
    secret: &Secret,
    role: Role,
    host: &HostId,
    theirs: &Nonce,
    own: &Nonce,
    got: &Proof,
) -> bool {
    mac(secret, role, host, theirs, own)
        .verify_slice(&got.0)
        .is_ok()
}

fn mac(secret: &Secret, role: Role, host: &HostId, theirs: &Nonce, own: &Nonce) -> HmacSha256 {
    // HMAC accepts keys of any length; new_from_slice cannot fail for it.
    let mut m = HmacSha256::new_from_slice(secret.expose()).expect("hmac takes any key length");
    m.update(b"wisp-auth-v1\0");
    m.update(match role {
        Role::Genie => b"genie\0",
        Role::Router => b"router",
    });
    m.update(host.as_str().as_bytes());
    m.update(b"\0");
    m.update(&theirs.0);
    m.update(&own.0);
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proofs_verify_only_with_same_secret_role_and_nonces() {
        let s = Secret::from_bytes(b"cluster".to_vec());
        let h = HostId::new("h1").unwrap();
        let (rn, gn) = (Nonce::random(), Nonce::random());
        assert_ne!(rn, gn);
        let p = proof(&s, Role::Genie, &h, &rn, &gn);
        assert!(verify(&s, Role::Genie, &h, &rn, &gn, &p));
        assert!(!verify(
            &Secret::from_bytes(b"other".to_vec()),
            Role::Genie,
            &h,
            &rn,
            &gn,
            &p
        ));
        assert!(!verify(&s, Role::Router, &h, &rn, &gn, &p));
        assert!(!verify(
            &s,
            Role::Genie,
            &HostId::new("h2").unwrap(),
            &rn,
            &gn,
            &p
        ));
        assert!(!verify(&s, Role::Genie, &h, &gn, &rn, &p));
    }

    #[test]
    fn nonce_hex_round_trip_and_bad_input() {
        let n = Nonce::random();
        let t = serde_json::to_string(&n).unwrap();
        assert_eq!(serde_json::from_str::<Nonce>(&t).unwrap(), n);
        let e = serde_json::from_str::<Nonce>("\"abc\"").unwrap_err();
        assert!(e.to_string().contains("64 hex digits"), "{e}");
    }
}
