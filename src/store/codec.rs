//! Compact encodings for the bulky parts of a record.
//!
//! Token ids and logprobs are the bulk of an RL trace and are read back as
//! whole arrays, never searched inside, so they are stored as packed
//! little-endian numbers (4 bytes per token id, 8 per logprob: exact, unlike
//! JSON text or f32). Raw requests and responses are JSON, often repetitive
//! (an agent resends its whole conversation every step), so they are stored
//! zstd-compressed. An empty array or an absent value is stored as NULL.

use serde_json::Value;
use std::cell::RefCell;

/// zstd level: fast enough for the capture path, a good ratio on JSON.
const ZSTD_LEVEL: i32 = 3;

/// Packs token ids as little-endian u32; `None` for an empty list.
pub fn pack_u32(values: &[u32]) -> Option<Vec<u8>> {
    (!values.is_empty()).then(|| values.iter().flat_map(|v| v.to_le_bytes()).collect())
}

/// Unpacks [`pack_u32`]; trailing bytes that do not form a whole value are
/// ignored.
pub fn unpack_u32(bytes: &[u8]) -> Vec<u32> {
    bytes
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// Packs logprobs as little-endian f64; `None` for an absent list.
pub fn pack_f64(values: Option<&[f64]>) -> Option<Vec<u8>> {
    values.map(|vs| vs.iter().flat_map(|v| v.to_le_bytes()).collect())
}

/// Unpacks [`pack_f64`].
pub fn unpack_f64(bytes: &[u8]) -> Vec<f64> {
    bytes
        .chunks_exact(8)
        .map(|c| {
            let mut b = [0u8; 8];
            b.copy_from_slice(c);
            f64::from_le_bytes(b)
        })
        .collect()
}

thread_local! {
    /// One compression context per thread: creating a zstd context costs
    /// more than compressing a typical record.
    static COMPRESSOR: RefCell<Option<zstd::bulk::Compressor<'static>>> = const { RefCell::new(None) };
}

/// Compresses a JSON value; `None` for an absent value.
pub fn compress_json(value: Option<&Value>) -> Result<Option<Vec<u8>>, String> {
    let Some(value) = value else { return Ok(None) };
    let text = serde_json::to_vec(value).map_err(|e| format!("cannot encode JSON: {e}"))?;
    COMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        let compressor = match slot.as_mut() {
            Some(c) => c,
            None => slot.insert(
                zstd::bulk::Compressor::new(ZSTD_LEVEL)
                    .map_err(|e| format!("cannot create a compressor: {e}"))?,
            ),
        };
        compressor
            .compress(&text)
            .map(Some)
            .map_err(|e| format!("cannot compress: {e}"))
    })
}

/// Decompresses [`compress_json`].
pub fn decompress_json(bytes: &[u8]) -> Result<Value, String> {
    let text = zstd::stream::decode_all(bytes).map_err(|e| format!("cannot decompress: {e}"))?;
    serde_json::from_slice(&text).map_err(|e| format!("stored JSON is corrupt: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn token_ids_round_trip() {
        let ids = [0, 1, 151_643, u32::MAX];
        let packed = pack_u32(&ids).unwrap();
        assert_eq!(packed.len(), 16);
        assert_eq!(unpack_u32(&packed), ids);
        assert_eq!(pack_u32(&[]), None);
    }

    #[test]
    fn logprobs_round_trip_exactly() {
        let lp = [-0.002187633514404297, -12.5, 0.0];
        assert_eq!(unpack_f64(&pack_f64(Some(&lp)).unwrap()), lp);
        assert_eq!(pack_f64(None), None);
    }

    #[test]
    fn json_round_trips_compressed() {
        let v = json!({"messages": [{"role": "user", "content": "hello ".repeat(200)}]});
        let packed = compress_json(Some(&v)).unwrap().unwrap();
        assert!(packed.len() < v.to_string().len() / 4);
        assert_eq!(decompress_json(&packed).unwrap(), v);
    }
}
