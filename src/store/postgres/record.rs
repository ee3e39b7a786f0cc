//! A record's `record` and `token_data` columns on PostgreSQL: what no
//! scalar column holds, encoded compactly.
//!
//! The scalar facts are columns too (for queries), but the blob alone gives
//! back the whole record: decoding never has to stitch columns in, so what
//! comes out is byte for byte the record that went in.

use crate::record::TraceRecord;
use crate::store::codec::CodecError;
use crate::store::error::{StoreError, StoreResult};

/// The two encoded columns of a record's row.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Blobs {
    /// zstd of the record's JSON.
    pub record: Vec<u8>,
    /// The record's token ids and logprobs, packed (`None`: kept in `record`).
    pub token_data: Option<Vec<u8>>,
}

/// Encodes `record` into its row's blobs.
pub(crate) fn encode(record: &TraceRecord) -> StoreResult<Blobs> {
    let json = serde_json::to_vec(record).map_err(|e| StoreError::Encode {
        what: "record",
        source: CodecError::from(e),
    })?;
    let record = zstd::bulk::compress(&json, 3).map_err(|e| StoreError::Encode {
        what: "record",
        source: CodecError::from(e),
    })?;
    Ok(Blobs {
        record,
        token_data: None,
    })
}

/// Decodes a row's blobs back into its record.
pub(crate) fn decode(record: &[u8], _token_data: Option<&[u8]>) -> StoreResult<TraceRecord> {
    let corrupt = |source| StoreError::Corrupt {
        what: "record",
        source,
    };
    let json = zstd::stream::decode_all(record).map_err(|e| corrupt(CodecError::from(e)))?;
    serde_json::from_slice(&json).map_err(|e| corrupt(CodecError::from(e)))
}
