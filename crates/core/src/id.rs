//! Typed 32-byte identifiers.
//!
//! Every id in a repository is 32 bytes shown as 64 lower-case hex digits. Object names
//! (packs, index files, snapshots, keys) are the unkeyed BLAKE3 hash of the stored bytes;
//! blob ids (file chunks, trees) are the keyed BLAKE3 hash of the plaintext. Distinct types
//! keep the two kinds from being mixed up.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Length of every id in bytes.
pub const ID_LEN: usize = 32;

macro_rules! typed_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub [u8; ID_LEN]);

        impl $name {
            /// The id in these 32 bytes; `None` if there are not 32.
            pub fn from_slice(bytes: &[u8]) -> Option<Self> {
                Some(Self(bytes.try_into().ok()?))
            }

            /// The id's bytes.
            pub fn as_bytes(&self) -> &[u8; ID_LEN] {
                &self.0
            }

            /// The id in lowercase hex, as files are named.
            pub fn to_hex(self) -> String {
                hex::encode(self.0)
            }

            /// The first eight hex digits, as shown in tables.
            pub fn short(&self) -> String {
                hex::encode(&self.0[..4])
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_hex())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.short())
            }
        }

        impl FromStr for $name {
            type Err = hex::FromHexError;
            /// Lower-case hex only, as ids name files (format-spec §1): another
            /// spelling of a file's name must not be read as the same id.
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                if let Some((index, c)) = s.char_indices().find(|(_, c)| c.is_ascii_uppercase()) {
                    return Err(hex::FromHexError::InvalidHexCharacter { c, index });
                }
                let mut out = [0u8; ID_LEN];
                hex::decode_to_slice(s, &mut out)?;
                Ok(Self(out))
            }
        }

        /// A byte string in the repository's CBOR; hex in human-readable formats (the
        /// CLI's JSON), as operators see ids everywhere else.
        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                if s.is_human_readable() {
                    s.serialize_str(&self.to_hex())
                } else {
                    s.serialize_bytes(&self.0)
                }
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                if d.is_human_readable() {
                    let hex = String::deserialize(d)?;
                    return hex.parse().map_err(serde::de::Error::custom);
                }
                let bytes = serde_bytes::ByteBuf::deserialize(d)?;
                Self::from_slice(&bytes).ok_or_else(|| {
                    serde::de::Error::invalid_length(bytes.len(), &"32 bytes")
                })
            }
        }
    };
}

typed_id!(
    /// Keyed BLAKE3 of a blob's plaintext (a file chunk or an encoded tree).
    BlobId
);
typed_id!(
    /// BLAKE3 of a pack file's bytes.
    PackId
);
typed_id!(
    /// BLAKE3 of an index file's bytes.
    IndexId
);
typed_id!(
    /// BLAKE3 of a snapshot file's bytes.
    SnapshotId
);
typed_id!(
    /// BLAKE3 of a key file's bytes.
    KeyId
);
typed_id!(
    /// Random id chosen at `init`.
    RepoId
);
typed_id!(
    /// BLAKE3 of an audit record's bytes.
    AuditId
);
typed_id!(
    /// BLAKE3 of a mark record's bytes.
    MarkId
);

/// A tree is a blob; the alias documents intent where a tree is expected.
pub type TreeId = BlobId;

/// Content address of stored bytes: the unkeyed BLAKE3 hash.
pub fn content_address(bytes: &[u8]) -> [u8; ID_LEN] {
    *blake3::hash(bytes).as_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn hex_round_trip(bytes in proptest::array::uniform32(any::<u8>())) {
            let id = PackId(bytes);
            prop_assert_eq!(id.to_hex().parse::<PackId>().unwrap(), id);
            prop_assert!(id.to_hex().to_ascii_uppercase().parse::<PackId>().is_err() || id.to_hex().bytes().all(|b| b.is_ascii_digit()));
        }

        #[test]
        fn cbor_round_trip(bytes in proptest::array::uniform32(any::<u8>())) {
            let id = BlobId(bytes);
            let mut buf = Vec::new();
            ciborium::into_writer(&id, &mut buf).unwrap();
            // A 32-byte CBOR byte string: major type 2, one length byte.
            prop_assert_eq!(&buf[..2], &[0x58, 32]);
            let back: BlobId = ciborium::from_reader(&buf[..]).unwrap();
            prop_assert_eq!(back, id);
        }

        #[test]
        fn json_is_hex(bytes in proptest::array::uniform32(any::<u8>())) {
            let id = SnapshotId(bytes);
            let json = serde_json::to_string(&id).unwrap();
            prop_assert_eq!(&json, &format!("\"{}\"", id.to_hex()));
            let back: SnapshotId = serde_json::from_str(&json).unwrap();
            prop_assert_eq!(back, id);
        }
    }
}
