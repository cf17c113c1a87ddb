//! Encryption at rest: AES-256-XTS per 512-byte sector.
//!
//! The tweak of a sector is its logical sector number as a little-endian
//! 128-bit integer (dm-crypt's `aes-xts-plain64`). Encryption sits above the
//! RAID mapping, as dm-crypt over md does, so mirrors and parity hold
//! ciphertext and rebuild or scrub never need the key.
//!
//! The two AES-256 keys come from HKDF-SHA256 (RFC 5869) over the caller's
//! secret with a random per-volume salt kept in the superblock. A second
//! HKDF output, also kept in the superblock, tells a wrong secret from a
//! right one at assembly. Key material is zeroed on drop and never printed:
//! [`Secret`]'s `Debug` shows only its length.

use aes::Aes256;
use aes::cipher::{Array, KeyInit};
use hkdf::Hkdf;
use sha2::Sha256;
use xts_mode::{Xts128, get_tweak_default};
use zeroize::{Zeroize, Zeroizing};

use crate::error::{EngineError, Result};

/// Bytes per encryption unit (one sector).
pub const SECTOR: usize = 512;

/// A secret supplied by the caller (for example a key held by the composer).
/// At least 16 bytes; it should carry at least 128 bits of entropy, since
/// HKDF is a key-derivation function for keys, not a password hash.
///
/// # Invariants
/// 16 to 1024 bytes. The bytes are zeroed on drop and `Debug` hides them.
#[derive(Clone)]
pub struct Secret(Zeroizing<Vec<u8>>);

impl Secret {
    /// Wrap a secret; see the type's invariants.
    pub fn new(bytes: impl Into<Vec<u8>>) -> Result<Self> {
        let v = Zeroizing::new(bytes.into());
        if !(16..=1024).contains(&v.len()) {
            return Err(crate::error::invalid(
                "secret",
                format!("must be 16 to 1024 bytes long, got {} bytes", v.len()),
            ));
        }
        Ok(Secret(v))
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secret({} bytes, redacted)", self.0.len())
    }
}

/// The per-volume cipher.
pub(crate) struct Cipher {
    xts: Xts128<Aes256>,
}

impl std::fmt::Debug for Cipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Cipher(aes-256-xts-plain64, key redacted)")
    }
}

/// Derive the key check value stored in the superblock.
pub(crate) fn key_check(secret: &Secret, salt: &[u8; 32]) -> [u8; 32] {
    let hk = Hkdf::<Sha256>::new(Some(salt), &secret.0);
    let mut out = [0u8; 32];
    // 32 bytes is far below HKDF-SHA256's limit of 8160 bytes.
    hk.expand(b"raid-engine v1 key check", &mut out)
        .unwrap_or_else(|_| unreachable!("32-byte HKDF output is valid"));
    out
}

impl Cipher {
    /// Derive the cipher for a volume; fails if `check` (from the
    /// superblock) does not match the secret.
    pub(crate) fn new(secret: &Secret, salt: &[u8; 32], check: &[u8; 32]) -> Result<Self> {
        let mut mine = key_check(secret, salt);
        let equal = mine.iter().zip(check).fold(0u8, |a, (x, y)| a | (x ^ y)) == 0;
        mine.zeroize();
        if !equal {
            return Err(EngineError::Crypto(
                "the secret does not match the one the volume was created with".into(),
            ));
        }
        let hk = Hkdf::<Sha256>::new(Some(salt), &secret.0);
        let mut keys = Zeroizing::new([0u8; 64]);
        hk.expand(b"raid-engine v1 aes-256-xts", &mut keys[..])
            .unwrap_or_else(|_| unreachable!("64-byte HKDF output is valid"));
        let k1: Array<u8, _> = Array::try_from(&keys[..32])
            .unwrap_or_else(|_| unreachable!("32-byte slice fits a 32-byte key"));
        let k2: Array<u8, _> = Array::try_from(&keys[32..])
            .unwrap_or_else(|_| unreachable!("32-byte slice fits a 32-byte key"));
        let xts = Xts128::new(Aes256::new(&k1), Aes256::new(&k2));
        Ok(Cipher { xts })
    }

    /// Encrypt whole sectors in place; `first` is the logical sector of `buf[0]`.
    pub(crate) fn encrypt(&self, buf: &mut [u8], first: u64) {
        debug_assert_eq!(buf.len() % SECTOR, 0);
        self.xts
            .encrypt_area(buf, SECTOR, u128::from(first), get_tweak_default);
    }

    /// Decrypt whole sectors in place.
    pub(crate) fn decrypt(&self, buf: &mut [u8], first: u64) {
        debug_assert_eq!(buf.len() % SECTOR, 0);
        self.xts
            .decrypt_area(buf, SECTOR, u128::from(first), get_tweak_default);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrong_secret_is_refused_and_round_trip_holds() {
        let salt = [7u8; 32];
        let s = Secret::new(vec![1u8; 32]).unwrap();
        let check = key_check(&s, &salt);
        let c = Cipher::new(&s, &salt, &check).unwrap();
        let plain: Vec<u8> = (0..2048).map(|i| i as u8).collect();
        let mut buf = plain.clone();
        c.encrypt(&mut buf, 10);
        assert_ne!(buf, plain);
        // Each sector depends on its number: the same plaintext at another
        // sector encrypts differently.
        let mut other = plain.clone();
        c.encrypt(&mut other, 11);
        assert_ne!(other[..512], buf[..512]);
        c.decrypt(&mut buf, 10);
        assert_eq!(buf, plain);
        let wrong = Secret::new(vec![2u8; 32]).unwrap();
        assert!(matches!(
            Cipher::new(&wrong, &salt, &check),
            Err(EngineError::Crypto(_))
        ));
        assert!(Secret::new(vec![0u8; 8]).is_err());
        assert!(!format!("{s:?}").contains("1, 1"));
    }
}
