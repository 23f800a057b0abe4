//! Keys, key derivation, authenticated encryption and keyed hashing.
//!
//! The master secret is 32 random bytes. Everything else is derived from it with BLAKE3's
//! key-derivation mode, so one wrapped secret per password suffices:
//! - the XChaCha20-Poly1305 key that seals every blob and file,
//! - the BLAKE3 key that names blobs (so ids reveal nothing about content),
//! - the seed of the FastCDC gear table (so chunk sizes do not fingerprint files).

use argon2::{Algorithm, Argon2, Params, Version};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::id::BlobId;

pub const NONCE_LEN: usize = 24;
pub const TAG_LEN: usize = 16;
/// Bytes an encrypted envelope adds to its plaintext.
pub const OVERHEAD: usize = NONCE_LEN + TAG_LEN;

const CTX_ENCRYPTION: &str = "strata v1 2026-11 encryption key";
const CTX_BLOB_ID: &str = "strata v1 2026-11 blob id key";
const CTX_CHUNKER: &str = "strata v1 2026-11 chunker seed";
const CTX_WAL_NAME: &str = "strata v1 2026-11 wal record name";
const CTX_ROOT_NAME: &str = "strata v4 2026-12 root record name";

/// The repository's master secret and the keys derived from it: not `Clone` (share it by
/// reference or `Arc`), and wiped from memory when dropped (the cipher wipes its own key).
pub struct MasterKey {
    secret: [u8; 32],
    aead: XChaCha20Poly1305,
    id_key: [u8; 32],
}

impl Drop for MasterKey {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        self.secret.zeroize();
        self.id_key.zeroize();
    }
}

impl MasterKey {
    /// A new random key.
    pub fn generate() -> Self {
        let mut secret = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut secret);
        Self::from_secret(secret)
    }

    /// The key with this secret.
    pub fn from_secret(secret: [u8; 32]) -> Self {
        let enc = zeroize::Zeroizing::new(blake3::derive_key(CTX_ENCRYPTION, &secret));
        Self {
            aead: XChaCha20Poly1305::new(&(*enc).into()),
            id_key: blake3::derive_key(CTX_BLOB_ID, &secret),
            secret,
        }
    }

    /// The secret, to be sealed in a key file.
    pub fn secret(&self) -> &[u8; 32] {
        &self.secret
    }

    /// Keyed BLAKE3 of a blob's plaintext.
    pub fn blob_id(&self, plaintext: &[u8]) -> BlobId {
        BlobId(*blake3::keyed_hash(&self.id_key, plaintext).as_bytes())
    }

    /// The name of the WAL record for file `name` of PostgreSQL cluster `cluster`: a keyed
    /// BLAKE3, so that a fetch finds it with one request and names reveal nothing.
    pub fn wal_name(&self, cluster: &str, name: &str) -> [u8; 32] {
        let k = blake3::derive_key(CTX_WAL_NAME, &self.secret);
        let mut h = blake3::Hasher::new_keyed(&k);
        h.update(cluster.as_bytes())
            .update(&[0])
            .update(name.as_bytes());
        *h.finalize().as_bytes()
    }

    /// The name of the root record `key` of `namespace`: a keyed BLAKE3, so that an
    /// application finds a record with one request and names reveal nothing.
    pub fn root_name(&self, namespace: &str, key: &str) -> [u8; 32] {
        let k = blake3::derive_key(CTX_ROOT_NAME, &self.secret);
        let mut h = blake3::Hasher::new_keyed(&k);
        h.update(namespace.as_bytes())
            .update(&[0])
            .update(key.as_bytes());
        *h.finalize().as_bytes()
    }

    /// Seed XOR-ed into the FastCDC gear table; never zero (zero disables seeding).
    pub fn chunker_seed(&self) -> u64 {
        let k = blake3::derive_key(CTX_CHUNKER, &self.secret);
        u64::from_le_bytes(k[..8].try_into().unwrap()) | 1
    }

    /// `nonce || ciphertext || tag`, with a fresh random nonce.
    pub fn seal(&self, plaintext: &[u8], aad: &[u8]) -> Vec<u8> {
        seal_with(&self.aead, plaintext, aad)
    }

    /// Decrypts and authenticates what [`MasterKey::seal`] made with the same `aad`.
    pub fn open(&self, sealed: &[u8], aad: &[u8]) -> Option<Vec<u8>> {
        open_with(&self.aead, sealed, aad)
    }
}

fn seal_with(aead: &XChaCha20Poly1305, plaintext: &[u8], aad: &[u8]) -> Vec<u8> {
    let mut nonce = [0u8; NONCE_LEN];
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    let ct = aead
        .encrypt(
            XNonce::from_slice(&nonce),
            Payload {
                msg: plaintext,
                aad,
            },
        )
        .expect("XChaCha20-Poly1305 encryption cannot fail for in-memory buffers");
    let mut out = Vec::with_capacity(NONCE_LEN + ct.len());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ct);
    out
}

fn open_with(aead: &XChaCha20Poly1305, sealed: &[u8], aad: &[u8]) -> Option<Vec<u8>> {
    if sealed.len() < OVERHEAD {
        return None;
    }
    let (nonce, ct) = sealed.split_at(NONCE_LEN);
    aead.decrypt(XNonce::from_slice(nonce), Payload { msg: ct, aad })
        .ok()
}

/// Argon2id parameters, stored in each key file.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct KdfParams {
    /// The derivation: `argon2id`.
    pub algorithm: String,
    /// Memory in KiB.
    pub memory_kib: u32,
    /// Passes.
    pub iterations: u32,
    /// Lanes.
    pub parallelism: u32,
    /// Random salt.
    #[serde(with = "serde_bytes")]
    pub salt: Vec<u8>,
}

/// How much a new key's Argon2id costs. An explicit argument of key creation: the library
/// never weakens keys on its own (no environment variable can lower the cost).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KdfCost {
    /// Argon2id memory in KiB.
    pub memory_kib: u32,
    /// Argon2id passes.
    pub iterations: u32,
    /// Argon2id lanes.
    pub parallelism: u32,
}

impl KdfCost {
    /// 46 MiB, 1 pass, 1 lane, the first of OWASP's (equally strong) Argon2id
    /// recommendations. Every command unwraps the key once, so the cost lands on each hourly
    /// run: the memory-heavy, single-pass choice keeps that at ~40 ms and peak RSS low while
    /// costing an attacker as much per guess as 19 MiB/2 passes. Key files record their own
    /// parameters, so this default may rise without breaking existing keys.
    pub const DEFAULT: KdfCost = KdfCost {
        memory_kib: 46 * 1024,
        iterations: 1,
        parallelism: 1,
    };

    /// For test suites only: a key anyone can brute-force, made in microseconds.
    pub const INSECURE_FOR_TESTS: KdfCost = KdfCost {
        memory_kib: 64,
        iterations: 1,
        parallelism: 1,
    };
}

impl Default for KdfCost {
    fn default() -> Self {
        KdfCost::DEFAULT
    }
}

impl KdfParams {
    /// Fresh parameters (a new random salt) at the given cost.
    pub fn generate(cost: &KdfCost) -> Self {
        let mut salt = vec![0u8; 16];
        rand::rngs::OsRng.fill_bytes(&mut salt);
        KdfParams {
            algorithm: "argon2id".into(),
            memory_kib: cost.memory_kib,
            iterations: cost.iterations,
            parallelism: cost.parallelism,
            salt,
        }
    }

    /// The key-file policy (format-spec §3, §16): the most Argon2id work one key file may
    /// ask for. Strata writes 46 MiB × 1 pass; anyone who can add a file to the repository
    /// can add a key file, and opening tries key files, so a crafted one must not make it
    /// allocate gigabytes or derive for minutes.
    pub const MAX_MEMORY_KIB: u32 = 256 << 10;
    /// Passes, at most.
    pub const MAX_ITERATIONS: u32 = 10;
    /// Lanes, at most.
    pub const MAX_PARALLELISM: u32 = 16;
    /// Memory × passes, at most (KiB·passes): 512 MiB once, or 51 MiB ten times.
    pub const MAX_WORK: u64 = 512 << 10;

    /// Memory × passes in KiB: what trying this key costs, roughly.
    pub fn work(&self) -> u64 {
        u64::from(self.memory_kib) * u64::from(self.iterations)
    }

    /// Refuses parameters beyond the policy above, naming them.
    pub(crate) fn check_bounds(&self) -> Result<()> {
        if self.algorithm != "argon2id" {
            return Err(Error::UnsupportedKdf(self.algorithm.clone()));
        }
        if self.memory_kib > Self::MAX_MEMORY_KIB
            || self.iterations > Self::MAX_ITERATIONS
            || self.parallelism > Self::MAX_PARALLELISM
            || self.work() > Self::MAX_WORK
            || self.salt.len() > 1024
        {
            return Err(Error::corrupt(
                "key file",
                format!(
                    "Argon2id parameters beyond the key-file policy (m={} KiB, t={}, p={}; at \
                     most m={} KiB, t={}, p={}, m×t={})",
                    self.memory_kib,
                    self.iterations,
                    self.parallelism,
                    Self::MAX_MEMORY_KIB,
                    Self::MAX_ITERATIONS,
                    Self::MAX_PARALLELISM,
                    Self::MAX_WORK
                ),
            ));
        }
        Ok(())
    }

    pub(crate) fn derive(&self, password: &[u8]) -> Result<[u8; 32]> {
        self.check_bounds()?;
        let params = Params::new(self.memory_kib, self.iterations, self.parallelism, Some(32))
            .map_err(|e| Error::corrupt("key file", format!("bad Argon2id parameters: {e}")))?;
        let mut out = [0u8; 32];
        Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
            .hash_password_into(password, &self.salt, &mut out)
            .map_err(|e| Error::corrupt("key file", format!("Argon2id: {e}")))?;
        Ok(out)
    }
}

/// Wraps the master secret under a password-derived key.
pub fn wrap_secret(kek: &[u8; 32], secret: &[u8; 32], aad: &[u8]) -> Vec<u8> {
    seal_with(&XChaCha20Poly1305::new(kek.into()), secret, aad)
}

pub fn unwrap_secret(kek: &[u8; 32], wrapped: &[u8], aad: &[u8]) -> Option<[u8; 32]> {
    let plain = open_with(&XChaCha20Poly1305::new(kek.into()), wrapped, aad)?;
    plain.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Format-spec §17's vectors, computed there with independent libraries
    /// (`tools/vectors.py`): a changed context string, AAD, nonce layout or KDF would make
    /// every existing repository unreadable, and fails here.
    #[test]
    fn the_spec_vectors_are_computed() {
        let v = crate::util::spec_vectors();
        let secret: [u8; 32] = v["master_secret"].clone().try_into().unwrap();
        let key = MasterKey::from_secret(secret);
        assert_eq!(
            blake3::derive_key(CTX_ENCRYPTION, &secret),
            v["encryption_key"][..]
        );
        assert_eq!(key.id_key, v["blob_id_key"][..]);
        assert_eq!(key.chunker_seed().to_be_bytes(), v["chunker_seed"][..]);
        assert_eq!(
            blake3::derive_key(CTX_WAL_NAME, &secret),
            v["wal_name_key"][..]
        );
        assert_eq!(
            blake3::derive_key(CTX_ROOT_NAME, &secret),
            v["root_name_key"][..]
        );
        let plain = &v["blob_plaintext"];
        let id = key.blob_id(plain);
        assert_eq!(id.0, v["blob_id"][..]);
        assert_eq!(key.blob_id(b"").0, v["blob_id_of_empty"][..]);
        let wal = key.wal_name("main", "000000010000000000000001");
        assert_eq!(wal, v["wal_name_main_000000010000000000000001"][..]);
        let root = key.root_name("postgres.wal", "main");
        assert_eq!(root, v["root_name_postgres.wal_main"][..]);
        let aad = [&[0u8][..], &id.0].concat();
        assert_eq!(key.open(&v["sealed_data_blob"], &aad).as_ref(), Some(plain));
        let kdf = KdfParams {
            algorithm: "argon2id".into(),
            memory_kib: 64,
            iterations: 1,
            parallelism: 1,
            salt: v["argon2id_salt"].clone(),
        };
        let kek = kdf.derive(&v["password"]).unwrap();
        assert_eq!(kek, v["argon2id_m64_t1_p1_kek"][..]);
        let unwrapped = unwrap_secret(&kek, &v["wrapped_master_secret"], b"strata/key/v1");
        assert_eq!(unwrapped, Some(secret));
    }

    proptest! {
        #[test]
        fn seal_open_round_trip(data in proptest::collection::vec(any::<u8>(), 0..4096),
                                aad in proptest::collection::vec(any::<u8>(), 0..64)) {
            let key = MasterKey::generate();
            let sealed = key.seal(&data, &aad);
            prop_assert_eq!(sealed.len(), data.len() + OVERHEAD);
            prop_assert_eq!(key.open(&sealed, &aad).unwrap(), data);
        }
    }

    #[test]
    fn tamper_and_wrong_aad_are_rejected() {
        let key = MasterKey::generate();
        let mut sealed = key.seal(b"hello", b"a");
        assert!(key.open(&sealed, b"b").is_none());
        sealed[NONCE_LEN] ^= 1;
        assert!(key.open(&sealed, b"a").is_none());
        assert!(MasterKey::generate()
            .open(&key.seal(b"x", b""), b"")
            .is_none());
    }

    #[test]
    fn a_crafted_key_file_cannot_make_opening_allocate_or_spin() {
        let mut kdf = KdfParams::generate(&KdfCost::INSECURE_FOR_TESTS);
        kdf.memory_kib = u32::MAX;
        let started = std::time::Instant::now();
        assert!(matches!(kdf.derive(b"pw"), Err(Error::Corrupt { .. })));
        kdf.memory_kib = 64;
        kdf.iterations = u32::MAX;
        assert!(matches!(kdf.derive(b"pw"), Err(Error::Corrupt { .. })));
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
    }

    #[test]
    fn the_key_file_policy_admits_its_limits_and_nothing_past_them() {
        let at = |m: u32, t: u32, p: u32| {
            let mut kdf = KdfParams::generate(&KdfCost::DEFAULT);
            (kdf.memory_kib, kdf.iterations, kdf.parallelism) = (m, t, p);
            kdf.check_bounds().is_ok()
        };
        assert!(at(46 * 1024, 1, 1), "the default");
        assert!(at(KdfParams::MAX_MEMORY_KIB, 2, KdfParams::MAX_PARALLELISM));
        assert!(!at(KdfParams::MAX_MEMORY_KIB + 1, 1, 1));
        assert!(!at(KdfParams::MAX_MEMORY_KIB, 3, 1), "work past the limit");
        assert!(at(1024, KdfParams::MAX_ITERATIONS, 1));
        assert!(!at(1024, KdfParams::MAX_ITERATIONS + 1, 1));
        assert!(!at(1024, 1, KdfParams::MAX_PARALLELISM + 1));
        let mut kdf = KdfParams::generate(&KdfCost::DEFAULT);
        kdf.memory_kib = 52_428;
        kdf.iterations = 10;
        assert_eq!(kdf.work(), 524_280);
        assert!(kdf.check_bounds().is_ok());
        kdf.memory_kib = 52_429;
        assert!(kdf.check_bounds().is_err(), "m×t = {}", kdf.work());
    }

    #[test]
    fn blob_ids_are_keyed() {
        let a = MasterKey::generate();
        let b = MasterKey::generate();
        assert_eq!(a.blob_id(b"x"), a.blob_id(b"x"));
        assert_ne!(a.blob_id(b"x"), b.blob_id(b"x"));
        assert_ne!(a.blob_id(b"x").0, *blake3::hash(b"x").as_bytes());
    }

    #[test]
    fn no_environment_variable_weakens_keys() {
        std::env::set_var("STRATA_TEST_FAST_KDF", "1");
        let params = KdfParams::generate(&KdfCost::DEFAULT);
        assert_eq!(params.memory_kib, 46 * 1024);
        assert_eq!(KdfCost::default(), KdfCost::DEFAULT);
    }

    #[test]
    fn wrap_unwrap() {
        let params = KdfParams::generate(&KdfCost::INSECURE_FOR_TESTS);
        let kek = params.derive(b"pw").unwrap();
        let secret = [7u8; 32];
        let wrapped = wrap_secret(&kek, &secret, b"k");
        assert_eq!(unwrap_secret(&kek, &wrapped, b"k"), Some(secret));
        let other = params.derive(b"pw2").unwrap();
        assert_eq!(unwrap_secret(&other, &wrapped, b"k"), None);
    }
}
