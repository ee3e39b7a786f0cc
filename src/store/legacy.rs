//! Reading a row of the version-1 `traces` table (schema 0001–0002), for
//! the migration to version 3 (`migrate`), which re-stores every old row in
//! the current layout.
//!
//! A version-1 row held the whole record as JSON (`record`) minus its bulky
//! parts: `prompt_token_ids` as packed u32; `completion_token_ids` as a u32
//! count of lists, then per choice a u32 length and its ids; `logprobs` the
//! same with f64 values and `0xFFFFFFFF` as the length of an absent list;
//! `top_logprobs` as zstd(JSON of one optional list per choice); the raw
//! request and response as zstd(JSON).

use crate::record::{TopLogprob, TraceRecord};
use crate::store::codec::{self, CodecError};
use crate::store::error::{StoreError, StoreResult};
use rusqlite::Row;

/// The columns [`decode`] reads, in its order.
pub(crate) const COLUMNS: &str = "rowid, record, prompt_token_ids, completion_token_ids, \
     logprobs, top_logprobs, raw_request, raw_response";

/// A version-1 row's id and record.
pub(crate) fn decode(row: &Row<'_>) -> StoreResult<(i64, TraceRecord)> {
    let id: i64 = row.get(0)?;
    let json: String = row.get(1)?;
    let blob = |i: usize| row.get::<_, Option<Vec<u8>>>(i);
    let (prompt, completion, logprobs) = (blob(2)?, blob(3)?, blob(4)?);
    let (top_logprobs, raw_request, raw_response) = (blob(5)?, blob(6)?, blob(7)?);
    let mut record: TraceRecord =
        serde_json::from_str(&json).map_err(|e| corrupt("record", e.into()))?;
    record.prompt_token_ids = match prompt.as_deref() {
        Some(bytes) => codec::unpack_u32(&bytes[..bytes.len() / 4 * 4])
            .map_err(|e| corrupt("prompt_token_ids", e))?,
        None => Vec::new(),
    };
    let ids = completion
        .as_deref()
        .map(unpack_u32_lists)
        .unwrap_or_default();
    let lps = logprobs
        .as_deref()
        .map(unpack_f64_lists)
        .unwrap_or_default();
    let tops: Vec<Option<Vec<Vec<TopLogprob>>>> = match top_logprobs.as_deref() {
        Some(blob) => {
            let value = codec::decompress_json(blob).map_err(|e| corrupt("top_logprobs", e))?;
            serde_json::from_value(value).map_err(|e| corrupt("top_logprobs", e.into()))?
        }
        None => Vec::new(),
    };
    for (i, choice) in record.choices.iter_mut().enumerate() {
        choice.token_ids = ids.get(i).cloned().unwrap_or_default();
        choice.logprobs = lps.get(i).cloned().flatten();
        choice.top_logprobs = tops.get(i).cloned().flatten();
    }
    if let Some(first) = record.choices.first() {
        record.completion_token_ids = first.token_ids.clone();
        record.logprobs = first.logprobs.clone();
    }
    let json_blob = |what, blob: Option<Vec<u8>>| {
        blob.map(|b| codec::decompress_json(&b).map_err(|e| corrupt(what, e)))
            .transpose()
    };
    record.raw_request = json_blob("raw_request", raw_request)?;
    record.raw_response = json_blob("raw_response", raw_response)?;
    Ok((id, record))
}

fn corrupt(what: &'static str, source: CodecError) -> StoreError {
    StoreError::Corrupt { what, source }
}

/// The length marking an absent list.
const ABSENT: u32 = u32::MAX;

/// Reads little-endian numbers off the front of a byte slice.
struct Numbers<'a>(&'a [u8]);

impl Numbers<'_> {
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

/// Per-choice token ids: a count of lists, then each list's length and
/// values. A truncated blob yields what it holds.
fn unpack_u32_lists(bytes: &[u8]) -> Vec<Vec<u32>> {
    let mut reader = Numbers(bytes);
    let count = reader.u32().unwrap_or(0);
    let mut lists = Vec::new();
    for _ in 0..count {
        let Some(len) = reader.u32() else { break };
        lists.push((0..len).map_while(|_| reader.u32()).collect());
    }
    lists
}

/// Per-choice logprobs, [`ABSENT`] marking a choice without.
fn unpack_f64_lists(bytes: &[u8]) -> Vec<Option<Vec<f64>>> {
    let mut reader = Numbers(bytes);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_1_lists_read_back() {
        let mut ids = Vec::new();
        for v in [2u32, 3, 1, 2, 3, 0] {
            ids.extend(v.to_le_bytes());
        }
        assert_eq!(unpack_u32_lists(&ids), vec![vec![1, 2, 3], vec![]]);
        assert_eq!(unpack_u32_lists(&ids[..14]), vec![vec![1]]);
        let mut lps = Vec::new();
        lps.extend(2u32.to_le_bytes());
        lps.extend(ABSENT.to_le_bytes());
        lps.extend(1u32.to_le_bytes());
        lps.extend((-0.5f64).to_le_bytes());
        assert_eq!(unpack_f64_lists(&lps), vec![None, Some(vec![-0.5])]);
    }
}
