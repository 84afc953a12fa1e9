//! Key material: generation, hashing, constant-time comparison. Keys are never stored or
//! logged; only their keyed hashes are: HMAC-SHA256 under the store's own secret of the key's
//! SHA-256, so a copy of the store without the secret cannot be searched for weak
//! operator-chosen values offline, and a store of plain SHA-256 hashes (older versions)
//! migrates without knowing the keys.

use base64::Engine as _;
use hmac::{KeyInit, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// A key's keyed hash.
pub type KeyHash = [u8; 32];

/// A store's secret: 32 random bytes.
pub type Secret = [u8; 32];

/// Hashes keys under one store's secret: the HMAC keyed once, cloned for each key.
#[derive(Clone)]
pub struct Hasher {
    mac: hmac::Hmac<Sha256>,
}

impl Default for Hasher {
    fn default() -> Hasher {
        Hasher::new([0; 32])
    }
}

impl std::fmt::Debug for Hasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Hasher(..)")
    }
}

impl Hasher {
    pub fn new(secret: Secret) -> Hasher {
        Hasher {
            // HMAC takes a key of any length.
            mac: hmac::Hmac::<Sha256>::new_from_slice(&secret).expect("any key length"),
        }
    }

    /// The stored hash of a key.
    pub fn hash(&self, key: &str) -> KeyHash {
        self.rehash(&Sha256::digest(key.as_bytes()).into())
    }

    /// The stored hash for a key's plain SHA-256 (what older stores hold).
    pub fn rehash(&self, sha256: &KeyHash) -> KeyHash {
        let mut mac = self.mac.clone();
        mac.update(sha256);
        mac.finalize().into_bytes().into()
    }
}

/// A new store secret.
pub fn generate_secret() -> Secret {
    random_bytes::<32>()
}

/// Shortest and longest key values accepted (API Gateway: 20-128 characters).
pub const MIN_KEY_LEN: usize = 20;
pub const MAX_KEY_LEN: usize = 128;

/// A key's plain SHA-256, as stores before keyed hashes held it.
pub fn sha256(key: &str) -> KeyHash {
    Sha256::digest(key.as_bytes()).into()
}

/// Whether two hashes are equal, in time independent of their contents.
pub fn same(a: &KeyHash, b: &KeyHash) -> bool {
    a.ct_eq(b).into()
}

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut buf = [0u8; N];
    getrandom::fill(&mut buf).expect("the operating system's random source");
    buf
}

/// A new key: 40 random URL-safe characters (240 bits), never starting with `-`, so it can
/// follow a command-line option (`--value KEY`) as it is.
pub fn generate() -> String {
    loop {
        let key = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random_bytes::<30>());
        if !key.starts_with('-') {
            return key;
        }
    }
}

/// A new key id: 10 random lower-case letters and digits.
pub fn generate_id() -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    random_bytes::<10>()
        .iter()
        .map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char)
        .collect()
}

/// Checks an operator-supplied key value.
pub fn validate(value: &str) -> Result<(), String> {
    let n = value.chars().count();
    if !(MIN_KEY_LEN..=MAX_KEY_LEN).contains(&n) {
        return Err(format!(
            "a key must be {MIN_KEY_LEN} to {MAX_KEY_LEN} characters, not {n}"
        ));
    }
    if !value.chars().all(|c| c.is_ascii_graphic()) {
        return Err("a key may contain only visible ASCII characters".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_are_40_url_safe_characters() {
        let k = generate();
        assert_eq!(k.len(), 40);
        assert!(
            k.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        );
        assert_ne!(k, generate());
        assert!((0..200).all(|_| !generate().starts_with('-')));
        assert!(validate(&k).is_ok());
        assert_eq!(generate_id().len(), 10);
    }

    #[test]
    fn hashing_and_validation() {
        let h = Hasher::new([7; 32]);
        assert!(same(&h.hash("a"), &h.hash("a")));
        assert!(!same(&h.hash("a"), &h.hash("b")));
        assert_eq!(h.hash("a"), h.rehash(&sha256("a")));
        assert_ne!(h.hash("a"), sha256("a"));
        assert_ne!(
            h.hash("a"),
            Hasher::new([8; 32]).hash("a"),
            "the secret matters"
        );
        assert!(validate("short").is_err());
        assert!(validate(&"x".repeat(129)).is_err());
        assert!(validate("has a space in the middle of it").is_err());
    }
}
