//! Activation passwords, kept as argon2id hashes (PHC string format).

use argon2::password_hash::{Output, PasswordHash, PasswordHasher, SaltString};
use argon2::Argon2;

use crate::error::{Result, StoreError};

/// An argon2id hash of an activation password (PHC string format).
pub struct ActivationHash(String);

/// The least working memory a password check asks the allocator for. The
/// check needs 19 MiB; glibc's malloc takes requests below its mapping
/// threshold from per-thread arenas that keep the memory once freed, so
/// every thread that ever checked a password would hold 19 MiB for good.
/// That threshold adapts but never exceeds 32 MiB on 64-bit systems:
/// asking for at least that much gets the check its own mapping, returned
/// to the system when the check ends. The pages the check does not use
/// are never touched and cost address space only.
const CHECK_MEMORY_FLOOR: usize = 32 * 1024 * 1024;

impl ActivationHash {
    /// Hashes `password` under a fresh salt. Slow by design.
    pub(crate) fn new(password: &str) -> Result<ActivationHash> {
        let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
        let hash = Argon2::default().hash_password(password.as_bytes(), &salt)?;
        Ok(ActivationHash(hash.to_string()))
    }

    /// A hash as the database keeps it.
    pub(crate) fn from_stored(phc: String) -> ActivationHash {
        ActivationHash(phc)
    }

    /// The hash as the database keeps it.
    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `password` is the activation password. Takes tens of
    /// milliseconds and 19 MiB of memory by design; call it off any async
    /// executor, and bound how many run at once.
    pub fn verify(&self, password: &str) -> Result<bool> {
        let hash = PasswordHash::new(&self.0)?;
        let (Some(salt), Some(expected)) = (hash.salt, hash.hash) else {
            return Err(StoreError::HashIncomplete);
        };
        let algorithm = argon2::Algorithm::try_from(hash.algorithm)?;
        let version = hash
            .version
            .map(argon2::Version::try_from)
            .transpose()
            .map_err(argon2::password_hash::Error::from)?
            .unwrap_or_default();
        let params = argon2::Params::try_from(&hash)?;
        let mut salt_bytes = [0u8; 64];
        let salt = salt.decode_b64(&mut salt_bytes)?;
        let blocks = params.block_count();
        let floor = CHECK_MEMORY_FLOOR / argon2::Block::SIZE;
        let mut memory = Vec::with_capacity(blocks.max(floor));
        memory.resize(blocks, argon2::Block::new());
        let argon2 = Argon2::new(algorithm, version, params);
        let computed = Output::init_with(expected.len(), |out| {
            argon2
                .hash_password_into_with_memory(password.as_bytes(), salt, out, &mut memory)
                .map_err(Into::into)
        })?;
        // Output compares in constant time.
        Ok(computed == expected)
    }
}
