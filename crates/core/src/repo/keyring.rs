//! Key files: several passwords open one master key.

use super::*;

/// The repository's key files (format-spec §3.1), one per password: `repo.keys()`.
pub struct Keys<'r>(&'r Repository);

impl Repository {
    /// The key files.
    pub fn keys(&self) -> Keys<'_> {
        Keys(self)
    }
}

impl Keys<'_> {
    /// Every key file, unreadable ones left out (junk, or a FIFO or directory in a key
    /// file's place: whoever can write the storage can plant them).
    pub fn list(&self) -> Result<Vec<(KeyId, KeyFile)>> {
        let backend = &self.0.backend;
        let mut out = Vec::new();
        for info in backend.list(FileKind::Key)? {
            let Ok(id) = info.name.parse() else { continue };
            let bytes = match backend.read(FileKind::Key, &info.name) {
                Ok(bytes) => bytes,
                Err(Error::Corrupt { .. } | Error::NotFound { .. }) => continue,
                Err(e) => return Err(e),
            };
            if let Ok(kf) = KeyFile::decode(&bytes, &info.name) {
                out.push((id, kf));
            }
        }
        out.sort_by(|a, b| a.1.created.cmp(&b.1.created));
        Ok(out)
    }

    /// Adds a key file for `password` to the repository's master key.
    pub fn add(&self, password: &[u8], cost: &KdfCost) -> Result<KeyId> {
        let bytes = KeyFile::create(&self.0.key, password, cost)?.encode();
        let id = KeyId(content_address(&bytes));
        self.0.backend.write(FileKind::Key, &id.to_hex(), &bytes)?;
        Ok(id)
    }

    /// The key whose id starts with `prefix` (hex, any case).
    pub fn find(&self, prefix: &str) -> Result<KeyId> {
        let prefix = prefix.to_ascii_lowercase();
        let hits: Vec<KeyId> = self
            .list()?
            .into_iter()
            .map(|(k, _)| k)
            .filter(|k| k.to_hex().starts_with(&prefix))
            .collect();
        match hits[..] {
            [one] => Ok(one),
            [] => Err(Error::not_found(Missing::Key(prefix))),
            _ => Err(Error::Ambiguous {
                what: "key",
                prefix,
                matches: hits.len(),
            }),
        }
    }

    /// Removes another password's key; never the one in use, never the last.
    pub fn remove(&self, id: &KeyId) -> Result<()> {
        if *id == self.0.key_id {
            return Err(Error::KeyInUse);
        }
        self.remove_file(id)
    }

    /// Replaces the password in use: the new key is durable before the old one goes.
    /// Returns the new key's id.
    pub fn change_password(&self, password: &[u8], cost: &KdfCost) -> Result<KeyId> {
        let new = self.add(password, cost)?;
        self.remove_file(&self.0.key_id)?;
        Ok(new)
    }

    fn remove_file(&self, id: &KeyId) -> Result<()> {
        let keys = self.list()?;
        if !keys.iter().any(|(k, _)| k == id) {
            return Err(Error::not_found(Missing::Key(id.to_hex())));
        }
        if keys.len() == 1 {
            return Err(Error::LastKey);
        }
        // The record first: a host holding a cached copy of this key file learns from it
        // that the key is gone (format-spec §3.1); one left by a failed deletion only makes
        // such hosts list the key files once.
        self.0.write_key_record(&[*id])?;
        self.0.backend.delete(FileKind::Key, &id.to_hex())
    }
}
