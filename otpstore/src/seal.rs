//! The store's keys: secrets are sealed with AES-256-GCM, each bound to the
//! record it belongs to, and wrong codes are remembered only as keyed
//! fingerprints, so the database holds no guessable digest of a code.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use hmac::{Hmac, Mac};
use rand::rngs::OsRng;
use rand::RngCore;
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::error::{Result, StoreError};

/// Length of the key file's key.
pub(crate) const KEY_LEN: usize = 32;
const NONCE_LEN: usize = 12;
/// What the database keeps sealed under the key, to recognise its key file.
pub(crate) const KEY_CHECK_PLAINTEXT: &[u8] = b"otpd key check v1";
/// The record the key check value is bound to.
pub(crate) const KEY_CHECK_AAD: &[u8] = b"key_check";

type HmacSha256 = Hmac<Sha256>;

/// The keys derived from the key file.
pub(crate) struct Keys {
    cipher: Aes256Gcm,
    /// Keys the fingerprints of wrong codes.
    fingerprint_key: Zeroizing<Vec<u8>>,
    /// Keys the stored hashes of recovery codes.
    recovery_key: Zeroizing<Vec<u8>>,
}

impl Keys {
    /// The keys of a key file's `key`; `None` when it has the wrong length.
    pub(crate) fn new(key: &[u8]) -> Result<Option<Keys>> {
        let Ok(cipher) = Aes256Gcm::new_from_slice(key) else {
            return Ok(None);
        };
        Ok(Some(Keys {
            cipher,
            fingerprint_key: hmac(key, &[b"otpd wrong-code fingerprint v1"])?,
            recovery_key: hmac(key, &[b"otpd recovery code v1"])?,
        }))
    }

    /// Encrypts `plain` bound to `aad` (the record it belongs to): nonce ‖ ciphertext.
    pub(crate) fn seal(&self, plain: &[u8], aad: &[u8]) -> Result<Vec<u8>> {
        let mut nonce = [0u8; NONCE_LEN];
        OsRng.fill_bytes(&mut nonce);
        let sealed = self
            .cipher
            .encrypt(Nonce::from_slice(&nonce), Payload { msg: plain, aad })
            .map_err(StoreError::Seal)?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    /// Decrypts what [`Keys::seal`] made; `None` for a wrong key, record or damage.
    pub(crate) fn unseal(&self, sealed: &[u8], aad: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
        if sealed.len() < NONCE_LEN {
            return None;
        }
        let (nonce, body) = sealed.split_at(NONCE_LEN);
        self.cipher
            .decrypt(Nonce::from_slice(nonce), Payload { msg: body, aad })
            .ok()
            .map(Zeroizing::new)
    }

    /// The fingerprint of `code` given for the enrolment `id`.
    pub(crate) fn fingerprint(&self, id: i64, code: &str) -> Result<[u8; 16]> {
        let digest = hmac(&self.fingerprint_key, &[&id.to_be_bytes(), code.as_bytes()])?;
        let mut fingerprint = [0u8; 16];
        fingerprint.copy_from_slice(&digest[..16]);
        Ok(fingerprint)
    }
}

impl Keys {
    /// The stored hash of the recovery code `digits` of the enrolment
    /// `id`: a keyed hash, so the database alone gives no way to try the
    /// ten billion codes.
    pub(crate) fn recovery_hash(&self, id: i64, digits: &str) -> Result<Vec<u8>> {
        Ok(hmac(&self.recovery_key, &[&id.to_be_bytes(), digits.as_bytes()])?.to_vec())
    }
}

/// HMAC-SHA256 of `parts` under `key`.
fn hmac(key: &[u8], parts: &[&[u8]]) -> Result<Zeroizing<Vec<u8>>> {
    // HMAC accepts keys of any length; the error cannot happen.
    let mut mac = <HmacSha256 as Mac>::new_from_slice(key)
        .map_err(|_| StoreError::Internal("HMAC key rejected"))?;
    for part in parts {
        mac.update(part);
    }
    Ok(Zeroizing::new(mac.finalize().into_bytes().to_vec()))
}
