//! Key files: several passwords open one master key.

use super::*;

impl Repository {
    /// Every key file, unreadable ones left out.
    pub fn list_keys(&self) -> Result<Vec<(KeyId, KeyFile)>> {
        let mut out = Vec::new();
        for info in self.backend.list(FileKind::Key)? {
            let bytes = self.backend.read(FileKind::Key, &info.name)?;
            let id = info
                .name
                .parse()
                .map_err(|_| Error::corrupt(format!("key {}", info.name), "bad name"))?;
            out.push((id, KeyFile::decode(&bytes, &info.name)?));
        }
        out.sort_by(|a, b| a.1.created.cmp(&b.1.created));
        Ok(out)
    }

    /// Adds a key file for `password` to the repository's master key.
    pub fn add_key(&self, password: &[u8], cost: &KdfCost) -> Result<KeyId> {
        let bytes = KeyFile::create(&self.key, password, cost)?.encode();
        let id = KeyId(content_address(&bytes));
        self.backend.write(FileKind::Key, &id.to_hex(), &bytes)?;
        Ok(id)
    }

    /// The key whose id starts with `prefix` (hex, any case).
    pub fn find_key(&self, prefix: &str) -> Result<KeyId> {
        let prefix = prefix.to_ascii_lowercase();
        let hits: Vec<KeyId> = self
            .list_keys()?
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
    pub fn remove_key(&self, id: &KeyId) -> Result<()> {
        if *id == self.key_id {
            return Err(Error::KeyInUse);
        }
        self.remove_key_file(id)
    }

    /// Replaces the password in use: the new key is durable before the old one goes.
    /// Returns the new key's id.
    pub fn change_password(&self, password: &[u8], cost: &KdfCost) -> Result<KeyId> {
        let new = self.add_key(password, cost)?;
        self.remove_key_file(&self.key_id)?;
        Ok(new)
    }

    pub(super) fn remove_key_file(&self, id: &KeyId) -> Result<()> {
        let keys = self.list_keys()?;
        if !keys.iter().any(|(k, _)| k == id) {
            return Err(Error::not_found(Missing::Key(id.to_hex())));
        }
        if keys.len() == 1 {
            return Err(Error::LastKey);
        }
        self.backend.delete(FileKind::Key, &id.to_hex())
    }
}
