//! Compact encodings for the bulky parts of a record.
//!
//! Token ids and logprobs are the bulk of an RL trace and are read back as
//! whole arrays, never searched inside, so they are stored as packed
//! little-endian numbers (4 bytes per token id, 8 per logprob: exact, unlike
//! JSON text or f32), one list per choice for completions. Raw requests and
//! responses are JSON, often repetitive (an agent resends its whole
//! conversation every step), so they are stored zstd-compressed. An empty
//! array or an absent value is stored as NULL.
//!
//! These are the encodings only; which column holds which is the row's
//! business (`row`).

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

/// Packs one list of token ids per choice: a little-endian u32 count of
/// lists, then for each list its u32 length and its u32 values. `None` when
/// every list is empty.
pub fn pack_u32_lists(lists: &[&[u32]]) -> Option<Vec<u8>> {
    if lists.iter().all(|l| l.is_empty()) {
        return None;
    }
    let mut out = Vec::with_capacity(4 + lists.iter().map(|l| 4 + 4 * l.len()).sum::<usize>());
    push_len(&mut out, lists.len());
    for list in lists {
        push_len(&mut out, list.len());
        out.extend(list.iter().flat_map(|v| v.to_le_bytes()));
    }
    Some(out)
}

/// Unpacks [`pack_u32_lists`]; a truncated blob yields what it holds.
pub fn unpack_u32_lists(bytes: &[u8]) -> Vec<Vec<u32>> {
    let mut reader = Reader(bytes);
    let count = reader.u32().unwrap_or(0);
    let mut lists = Vec::new();
    for _ in 0..count {
        let Some(len) = reader.u32() else { break };
        lists.push((0..len).map_while(|_| reader.u32()).collect());
    }
    lists
}

/// Packs one optional list of logprobs per choice: a u32 count of lists,
/// then for each its u32 length (`u32::MAX` for an absent list) and its
/// little-endian f64 values. `None` when every list is absent.
pub fn pack_f64_lists(lists: &[Option<&[f64]>]) -> Option<Vec<u8>> {
    if lists.iter().all(Option::is_none) {
        return None;
    }
    let mut out = Vec::new();
    push_len(&mut out, lists.len());
    for list in lists {
        match list {
            Some(values) => {
                push_len(&mut out, values.len());
                out.extend(values.iter().flat_map(|v| v.to_le_bytes()));
            }
            None => out.extend(ABSENT.to_le_bytes()),
        }
    }
    Some(out)
}

/// Unpacks [`pack_f64_lists`].
pub fn unpack_f64_lists(bytes: &[u8]) -> Vec<Option<Vec<f64>>> {
    let mut reader = Reader(bytes);
    let count = reader.u32().unwrap_or(0);
    let mut lists = Vec::new();
    for _ in 0..count {
        match reader.u32() {
            None => break,
            Some(ABSENT) => lists.push(None),
            Some(len) => lists.push(Some((0..len).map_while(|_| reader.f64()).collect())),
        }
    }
    lists
}

/// The length marking an absent list.
const ABSENT: u32 = u32::MAX;

fn push_len(out: &mut Vec<u8>, len: usize) {
    // Lists longer than 4 billion tokens do not occur; saturate rather than wrap.
    let len = u32::try_from(len).unwrap_or(ABSENT - 1);
    out.extend(len.to_le_bytes());
}

/// Reads little-endian numbers off the front of a byte slice.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, rest) = self.0.split_first_chunk::<N>()?;
        self.0 = rest;
        Some(*head)
    }

    fn u32(&mut self) -> Option<u32> {
        self.take::<4>().map(u32::from_le_bytes)
    }

    fn f64(&mut self) -> Option<f64> {
        self.take::<8>().map(f64::from_le_bytes)
    }
}

/// Why a JSON blob cannot be encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The JSON itself.
    #[error("JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// The zstd compression.
    #[error("zstd: {0}")]
    Zstd(#[from] std::io::Error),
}

thread_local! {
    /// One compression context per thread: creating a zstd context costs
    /// more than compressing a typical record.
    static COMPRESSOR: RefCell<Option<zstd::bulk::Compressor<'static>>> = const { RefCell::new(None) };
}

/// Compresses a JSON value; `None` for an absent value.
pub fn compress_json(value: Option<&Value>) -> Result<Option<Vec<u8>>, CodecError> {
    let Some(value) = value else { return Ok(None) };
    let text = serde_json::to_vec(value)?;
    COMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        let compressor = match slot.as_mut() {
            Some(c) => c,
            None => slot.insert(zstd::bulk::Compressor::new(ZSTD_LEVEL)?),
        };
        Ok(Some(compressor.compress(&text)?))
    })
}

/// Decompresses [`compress_json`].
pub fn decompress_json(bytes: &[u8]) -> Result<Value, CodecError> {
    let text = zstd::stream::decode_all(bytes)?;
    Ok(serde_json::from_slice(&text)?)
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
    fn per_choice_token_ids_round_trip() {
        let a: &[u32] = &[1, 2, 3];
        let b: &[u32] = &[];
        let c: &[u32] = &[u32::MAX - 1];
        let packed = pack_u32_lists(&[a, b, c]).unwrap();
        assert_eq!(
            unpack_u32_lists(&packed),
            vec![vec![1, 2, 3], vec![], vec![u32::MAX - 1]]
        );
        assert_eq!(pack_u32_lists(&[b, b]), None);
    }

    #[test]
    fn per_choice_logprobs_round_trip_exactly() {
        let lp: &[f64] = &[-0.002187633514404297, -12.5, 0.0];
        let packed = pack_f64_lists(&[Some(lp), None, Some(&[])]).unwrap();
        assert_eq!(
            unpack_f64_lists(&packed),
            vec![Some(lp.to_vec()), None, Some(vec![])]
        );
        assert_eq!(pack_f64_lists(&[None, None]), None);
    }

    #[test]
    fn truncated_blobs_do_not_panic() {
        let packed = pack_u32_lists(&[&[1, 2, 3]]).unwrap();
        assert_eq!(unpack_u32_lists(&packed[..14]), vec![vec![1]]);
        assert!(unpack_f64_lists(&[1, 0]).is_empty());
    }

    #[test]
    fn json_round_trips_compressed() {
        let v = json!({"messages": [{"role": "user", "content": "hello ".repeat(200)}]});
        let packed = compress_json(Some(&v)).unwrap().unwrap();
        assert!(packed.len() < v.to_string().len() / 4);
        assert_eq!(decompress_json(&packed).unwrap(), v);
    }
}
