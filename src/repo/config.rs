//! The repository config: format version and the parameters every writer must share.

use serde::{Deserialize, Serialize};

use crate::chunker::ChunkerParams;
use crate::id::RepoId;

pub const FORMAT_VERSION: u32 = 1;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Config {
    pub version: u32,
    pub id: RepoId,
    pub chunker: ChunkerParams,
    /// zstd level for blobs; 0 disables compression.
    pub compression_level: i32,
    /// Storage class for data packs on object stores; metadata is always standard.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_storage_class: Option<String>,
}

impl Config {
    pub fn new(chunker: ChunkerParams, compression_level: i32) -> Self {
        use rand::RngCore;
        let mut id = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut id);
        Config {
            version: FORMAT_VERSION,
            id: RepoId(id),
            chunker,
            compression_level,
            data_storage_class: None,
        }
    }
}
