//! A record's `record` and `token_data` columns on PostgreSQL: what no
//! scalar column holds, encoded compactly.
//!
//! The scalar facts are columns too (for queries), but the two blobs alone
//! give back the whole record: decoding never stitches columns in, so what
//! comes out is the record that went in.
//!
//! **Token data apart, packed.** Token ids and logprobs are most of an RL
//! call's bytes, and JSON is a poor way to keep them: a logprob at full
//! precision is some twenty digits. So they leave the record before its
//! JSON is made and go to `token_data`: frames of little-endian `u32` ids
//! and `f64` logprobs (`store::codec`), zstd-compressed together. Measured
//! on 4 096 tokens of random ids and full-precision logprobs: zstd(JSON)
//! 50 914 B, zstd(packed) 44 170 B, `int4[]` + `float8[]` arrays 49 200 B
//! before TOAST (which compresses them little: they are near-random bytes);
//! at 256 tokens 3 382 / 2 816 / 3 120 B. Packed `bytea` is the smallest,
//! and reads back in one memcpy-like pass; arrays would only pay off for
//! SQL over single token ids, which nobody runs on a trace store.
//!
//! A frame is `[tag: u8][choice: u32][count: u32][values]`: tag 0 the
//! prompt's ids, 1 the completion's ids, 2 its logprobs, 3 a choice's ids,
//! 4 a choice's logprobs (the choice index is 0 but for tags 3 and 4). A
//! logprobs list is framed when the record has one, even empty, so "none"
//! and "empty" read back apart.

use crate::record::TraceRecord;
use crate::store::codec::{self, CodecError};
use crate::store::error::{StoreError, StoreResult};

/// The two encoded columns of a record's row.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Blobs {
    /// zstd of the record's JSON, without its token data.
    pub record: Vec<u8>,
    /// The record's token ids and logprobs, packed (`None`: it has none).
    pub token_data: Option<Vec<u8>>,
}

/// The frame tags.
const PROMPT_IDS: u8 = 0;
const COMPLETION_IDS: u8 = 1;
const LOGPROBS: u8 = 2;
const CHOICE_IDS: u8 = 3;
const CHOICE_LOGPROBS: u8 = 4;

/// zstd level of both blobs (the store's usual).
const LEVEL: i32 = 3;

/// Encodes `record` into its row's blobs.
pub(crate) fn encode(record: &TraceRecord) -> StoreResult<Blobs> {
    let encode_error = |source| StoreError::Encode {
        what: "the record",
        source,
    };
    let mut rest = record.clone();
    let frames = take_token_data(&mut rest);
    let json = serde_json::to_vec(&rest).map_err(|e| encode_error(e.into()))?;
    let compress = |bytes: &[u8]| zstd::bulk::compress(bytes, LEVEL);
    Ok(Blobs {
        record: compress(&json).map_err(|e| encode_error(e.into()))?,
        token_data: match frames.is_empty() {
            true => None,
            false => Some(compress(&frames).map_err(|e| encode_error(e.into()))?),
        },
    })
}

/// Decodes a row's blobs back into its record.
pub(crate) fn decode(record: &[u8], token_data: Option<&[u8]>) -> StoreResult<TraceRecord> {
    let corrupt = |source| StoreError::Corrupt {
        what: "record",
        source,
    };
    let json = zstd::stream::decode_all(record).map_err(|e| corrupt(e.into()))?;
    let mut record: TraceRecord = serde_json::from_slice(&json).map_err(|e| corrupt(e.into()))?;
    if let Some(packed) = token_data {
        let frames = zstd::stream::decode_all(packed).map_err(|e| corrupt(e.into()))?;
        put_token_data(&mut record, &frames).map_err(corrupt)?;
    }
    Ok(record)
}

/// Moves the token ids and logprobs out of `record`, as frames.
fn take_token_data(record: &mut TraceRecord) -> Vec<u8> {
    let mut out = Vec::new();
    let ids = |out: &mut Vec<u8>, tag, choice, ids: Vec<u32>| {
        if !ids.is_empty() {
            frame(out, tag, choice, ids.len(), &codec::pack_u32(&ids));
        }
    };
    let logprobs = |out: &mut Vec<u8>, tag, choice, lps: Option<Vec<f64>>| {
        if let Some(lps) = lps {
            frame(out, tag, choice, lps.len(), &codec::pack_f64(&lps));
        }
    };
    ids(
        &mut out,
        PROMPT_IDS,
        0,
        std::mem::take(&mut record.prompt_token_ids),
    );
    ids(
        &mut out,
        COMPLETION_IDS,
        0,
        std::mem::take(&mut record.completion_token_ids),
    );
    logprobs(&mut out, LOGPROBS, 0, record.logprobs.take());
    for (i, choice) in record.choices.iter_mut().enumerate() {
        let i = u32::try_from(i).unwrap_or(u32::MAX);
        ids(
            &mut out,
            CHOICE_IDS,
            i,
            std::mem::take(&mut choice.token_ids),
        );
        logprobs(&mut out, CHOICE_LOGPROBS, i, choice.logprobs.take());
    }
    out
}

/// Appends one frame.
fn frame(out: &mut Vec<u8>, tag: u8, choice: u32, count: usize, values: &[u8]) {
    out.push(tag);
    out.extend_from_slice(&choice.to_le_bytes());
    out.extend_from_slice(&u32::try_from(count).unwrap_or(u32::MAX).to_le_bytes());
    out.extend_from_slice(values);
}

/// Puts the frames' token data back into `record`.
fn put_token_data(record: &mut TraceRecord, mut frames: &[u8]) -> Result<(), CodecError> {
    while !frames.is_empty() {
        let (tag, choice, count, rest) = header(frames)?;
        let width = if matches!(tag, LOGPROBS | CHOICE_LOGPROBS) {
            8
        } else {
            4
        };
        let len = count.checked_mul(width).filter(|len| *len <= rest.len());
        let len = len.ok_or(CodecError::Length {
            len: rest.len(),
            width,
        })?;
        let (values, next) = rest.split_at(len);
        frames = next;
        let choice = record.choices.get_mut(choice);
        match (tag, choice) {
            (PROMPT_IDS, _) => record.prompt_token_ids = codec::unpack_u32(values)?,
            (COMPLETION_IDS, _) => record.completion_token_ids = codec::unpack_u32(values)?,
            (LOGPROBS, _) => record.logprobs = Some(codec::unpack_f64(values)?),
            (CHOICE_IDS, Some(c)) => c.token_ids = codec::unpack_u32(values)?,
            (CHOICE_LOGPROBS, Some(c)) => c.logprobs = Some(codec::unpack_f64(values)?),
            (CHOICE_IDS | CHOICE_LOGPROBS, None) => return Err(CodecError::Dangling("choice")),
            (other, _) => return Err(CodecError::Layout(other)),
        }
    }
    Ok(())
}

/// A frame's tag, choice and count, and the bytes after its header.
fn header(frames: &[u8]) -> Result<(u8, usize, usize, &[u8]), CodecError> {
    let short = || CodecError::Length {
        len: frames.len(),
        width: 9,
    };
    let (&tag, rest) = frames.split_first().ok_or_else(short)?;
    let word = |at: usize| -> Result<usize, CodecError> {
        let bytes: [u8; 4] = rest
            .get(at..at + 4)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(short)?;
        Ok(u32::from_le_bytes(bytes) as usize)
    };
    Ok((tag, word(0)?, word(4)?, &rest[8..]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Choice;

    fn with_tokens() -> TraceRecord {
        TraceRecord {
            trace_id: "t".into(),
            prompt_token_ids: vec![1, 2, 3],
            completion_token_ids: vec![7, 8],
            logprobs: Some(vec![-0.125, -1.0e-9]),
            choices: vec![
                Choice {
                    token_ids: vec![7, 8],
                    logprobs: Some(vec![-0.125, -1.0e-9]),
                    ..Choice::default()
                },
                Choice {
                    logprobs: Some(Vec::new()),
                    ..Choice::default()
                },
            ],
            ..TraceRecord::default()
        }
    }

    #[test]
    fn a_record_reads_back_whole_with_its_token_data_apart() {
        let record = with_tokens();
        let blobs = encode(&record).unwrap();
        assert!(blobs.token_data.is_some());
        let json = zstd::stream::decode_all(&blobs.record[..]).unwrap();
        let json: serde_json::Value = serde_json::from_slice(&json).unwrap();
        let ids = json.get("prompt_token_ids");
        assert!(
            ids.is_none_or(|ids| ids == &serde_json::json!([])),
            "not in the JSON"
        );
        assert_eq!(
            decode(&blobs.record, blobs.token_data.as_deref()).unwrap(),
            record
        );
    }

    #[test]
    fn a_record_without_token_data_has_no_token_blob() {
        let record = TraceRecord::default();
        let blobs = encode(&record).unwrap();
        assert_eq!(blobs.token_data, None);
        assert_eq!(decode(&blobs.record, None).unwrap(), record);
    }

    #[test]
    fn a_cut_token_blob_is_an_error_not_a_panic() {
        let blobs = encode(&with_tokens()).unwrap();
        let frames = zstd::stream::decode_all(&blobs.token_data.unwrap()[..]).unwrap();
        for cut in [1, 5, 12, frames.len() - 3] {
            let packed = zstd::bulk::compress(&frames[..cut], 3).unwrap();
            assert!(
                decode(&blobs.record, Some(&packed)).is_err(),
                "cut at {cut}"
            );
        }
    }
}
