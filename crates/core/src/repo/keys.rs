//! Key files: the master secret wrapped under a password-derived key.

use serde::{Deserialize, Serialize};

use crate::crypto::{self, KdfCost, KdfParams, MasterKey};
use crate::error::{Error, Result};

const WRAP_AAD: &[u8] = b"strata/key/v1";

/// `keys/<id>`: plain CBOR (it must be readable before any key is known).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct KeyFile {
    /// Key file format version (1).
    pub version: u32,
    /// RFC 3339 creation time.
    pub created: String,
    /// The host that created it.
    pub host: String,
    /// The user that created it.
    pub user: String,
    /// How the password is stretched.
    pub kdf: KdfParams,
    /// `nonce || XChaCha20-Poly1305(kek, master secret) || tag`, AAD `strata/key/v1`.
    #[serde(with = "serde_bytes")]
    pub wrapped: Vec<u8>,
}

impl KeyFile {
    pub(crate) fn create(master: &MasterKey, password: &[u8], cost: &KdfCost) -> Result<Self> {
        if password.iter().all(u8::is_ascii_whitespace) {
            return Err(Error::BadInput {
                what: "password",
                reason: "an empty password protects nothing: refusing it".into(),
            });
        }
        let kdf = KdfParams::generate(cost);
        let kek = zeroize::Zeroizing::new(kdf.derive(password)?);
        Ok(KeyFile {
            version: 1,
            created: chrono::Local::now().to_rfc3339(),
            host: crate::util::hostname(),
            user: crate::util::username(),
            wrapped: crypto::wrap_secret(&kek, master.secret(), WRAP_AAD),
            kdf,
        })
    }

    /// The master key, if `password` is this key's password.
    pub fn open(&self, password: &[u8]) -> Result<Option<MasterKey>> {
        let kek = zeroize::Zeroizing::new(self.kdf.derive(password)?);
        Ok(crypto::unwrap_secret(&kek, &self.wrapped, WRAP_AAD).map(MasterKey::from_secret))
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut buf = Vec::new();
        ciborium::into_writer(self, &mut buf).expect("CBOR encoding into memory cannot fail");
        buf
    }

    pub(crate) fn decode(bytes: &[u8], name: &str) -> Result<Self> {
        ciborium::from_reader(bytes)
            .map_err(|e| Error::corrupt(format!("key {name}"), e.to_string()))
    }
}
