//! Compact encodings for the bulky parts of a record.
//!
//! Token ids and logprobs are the bulk of an RL trace and are read back as
//! whole arrays, never searched inside, so they are stored as raw
//! little-endian numbers with no header: 4 bytes per token id, 8 per
//! logprob (exact, unlike JSON text or f32). A blob is one array, so
//! `numpy.frombuffer(blob, '<u4')` (or `'<f8'`) is the whole read.
//!
//! JSON that is read back whole and rarely (top logprobs) is stored
//! zstd-compressed on its own. The request and response are compressed
//! against a dictionary of the call's own content (`raw` decides what goes
//! into it); here is only the zstd part: one plain compression context per
//! thread, and a small context per call for a dictionary
//! ([`compress_with`]).
//!
//! These are the encodings only; which table and column holds which is the
//! row's and the content tables' business.

use serde_json::Value;
use std::cell::RefCell;

/// zstd level: fast enough for the capture path, a good ratio on JSON.
const ZSTD_LEVEL: i32 = 3;

/// zstd level against a dictionary: the raw parts mostly repeat the
/// dictionary in long runs, which level 1's single hash table finds as
/// well; against level 3 it costs the 640-call session workload of
/// `bench/storage.sh` 1.5 % more bytes (4.83 → 4.91 MB) and saves a third
/// of the compression's instructions (its second table is not zeroed and
/// filled).
const DICT_LEVEL: i32 = 1;

/// The most a stored blob may decompress to (a request body is at most
/// `max_body_bytes`, 32 MiB by default; this leaves room for any setting).
const MAX_DECOMPRESSED: usize = 1 << 30;

/// Why a blob cannot be encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The JSON itself.
    #[error("JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// The zstd compression.
    #[error("zstd: {0}")]
    Zstd(#[from] std::io::Error),
    /// A packed array whose length is not a whole number of values.
    #[error("{len} bytes is not a whole number of {width}-byte values")]
    Length {
        /// The blob's length.
        len: usize,
        /// The size of one value.
        width: usize,
    },
    /// A blob in a layout this binary does not know.
    #[error("unknown layout {0}")]
    Layout(u8),
    /// A stored reference to a row or part that is not there.
    #[error("it refers to a missing {0}")]
    Dangling(&'static str),
}

/// Token ids as little-endian u32, no header.
pub fn pack_u32(values: &[u32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// Reads [`pack_u32`].
pub fn unpack_u32(bytes: &[u8]) -> Result<Vec<u32>, CodecError> {
    unpack(bytes, u32::from_le_bytes)
}

/// Logprobs as little-endian f64, no header.
pub fn pack_f64(values: &[f64]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// Reads [`pack_f64`].
pub fn unpack_f64(bytes: &[u8]) -> Result<Vec<f64>, CodecError> {
    unpack(bytes, f64::from_le_bytes)
}

/// Values of `N` little-endian bytes each, no header; an error unless the
/// bytes are whole values.
fn unpack<const N: usize, T>(bytes: &[u8], value: fn([u8; N]) -> T) -> Result<Vec<T>, CodecError> {
    whole(bytes, N)?;
    let (values, _) = bytes.as_chunks::<N>();
    Ok(values.iter().map(|c| value(*c)).collect())
}

fn whole(bytes: &[u8], width: usize) -> Result<(), CodecError> {
    if bytes.len().is_multiple_of(width) {
        Ok(())
    } else {
        Err(CodecError::Length {
            len: bytes.len(),
            width,
        })
    }
}

thread_local! {
    /// The plain compression context of this thread.
    static COMPRESSOR: RefCell<Option<zstd::bulk::Compressor<'static>>> = const { RefCell::new(None) };
    /// The compression context for dictionaries.
    static DICT_COMPRESSOR: RefCell<Option<zstd::zstd_safe::CCtx<'static>>> = const { RefCell::new(None) };
    /// The decompression context for dictionaries.
    static DICT_DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> = const { RefCell::new(None) };
}

/// Compresses a JSON value on its own; `None` for an absent value.
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

/// Compresses `data` with `dictionary` (raw content: zstd finds in it the
/// long matches the data shares with it).
///
/// The dictionary is referenced as a prefix of the frame, indexed into the
/// match-finding table of a context that each thread reuses, sized for the
/// prefix and the data ([`table_log`]), at level 1. Measured with callgrind
/// on the store bench (`benches/store.rs`), per call: loading the
/// dictionary builds a compression dictionary (`ZSTD_createCDict`: a
/// quarter of the store's instructions, even with small tables), and a new
/// context for each call spent 12 % allocating and zeroing its workspace.
/// A reused context keeps its workspace and does not zero its tables (it
/// moves its window past what it indexed before). The frames decompress
/// the same way ([`decompress_with`] loads the same bytes as raw content,
/// which zstd reads as the history before the frame either way).
pub fn compress_with(dictionary: &[u8], data: &[u8]) -> Result<Vec<u8>, CodecError> {
    use zstd::zstd_safe::{CParameter, ResetDirective};
    let code = |code: usize| std::io::Error::other(zstd::zstd_safe::get_error_name(code));
    DICT_COMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        let context = slot.get_or_insert_with(zstd::zstd_safe::CCtx::create);
        let tables = table_log(dictionary.len() + data.len());
        context
            .set_parameter(CParameter::CompressionLevel(DICT_LEVEL))
            .and_then(|_| context.set_parameter(CParameter::HashLog(tables)))
            .map_err(code)?;
        // SAFETY: the context outlives `dictionary`, so the reference is
        // given a longer lifetime than the bytes have; it is sound because
        // zstd uses a prefix for the next frame only: `compress2` below
        // compresses the whole frame and ends it, and the prefix is
        // dropped with that frame (or, on an error, by the reset), before
        // this function returns and `dictionary` may go. The next frame
        // invalidates the window's old positions before it reads.
        let prefix: &'static [u8] =
            unsafe { std::slice::from_raw_parts(dictionary.as_ptr(), dictionary.len()) };
        let mut frame = Vec::with_capacity(zstd::zstd_safe::compress_bound(data.len()));
        let written = context
            .ref_prefix(prefix)
            .and_then(|_| context.compress2(&mut frame, data));
        if let Err(e) = written {
            // Parameters and dictionaries go: nothing refers to `prefix`.
            let _ = context.reset(ResetDirective::SessionAndParameters);
            return Err(code(e).into());
        }
        Ok(frame)
    })
}

/// The size (log2 entries) of the match-finding table for `bytes` of
/// prefix and data: about one entry a byte, from 2^10 to 2^17. zstd sizes
/// it for at least 16 KiB of input, and a new context zeroes it for every
/// call, most of what compressing a small call cost. Fewer entries than
/// bytes would lose matches; more find nothing new.
fn table_log(bytes: usize) -> u32 {
    let bits = usize::BITS - bytes.max(1).leading_zeros();
    bits.clamp(10, 17)
}

/// Decompresses [`compress_with`], given the same dictionary.
pub fn decompress_with(dictionary: &[u8], frame: &[u8]) -> Result<Vec<u8>, CodecError> {
    DICT_DECOMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        let decompressor = match slot.as_mut() {
            Some(d) => d,
            None => slot.insert(zstd::bulk::Decompressor::new()?),
        };
        decompressor.set_dictionary(dictionary)?;
        Ok(decompressor.decompress(frame, MAX_DECOMPRESSED)?)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn token_ids_are_raw_little_endian() {
        let ids = [0, 1, 151_643, u32::MAX];
        let packed = pack_u32(&ids);
        assert_eq!(packed.len(), 16);
        assert_eq!(&packed[8..12], &151_643u32.to_le_bytes());
        assert_eq!(unpack_u32(&packed).unwrap(), ids);
        assert!(pack_u32(&[]).is_empty());
        assert!(unpack_u32(&packed[..15]).is_err());
    }

    #[test]
    fn logprobs_round_trip_exactly() {
        let lp = [-0.002187633514404297, -12.5, 0.0, -0.0, f64::MIN_POSITIVE];
        let back = unpack_f64(&pack_f64(&lp)).unwrap();
        assert_eq!(
            back.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            lp.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        );
        assert!(unpack_f64(&[1, 0]).is_err());
    }

    #[test]
    fn json_round_trips_compressed() {
        let v = json!({"messages": [{"role": "user", "content": "hello ".repeat(200)}]});
        let packed = compress_json(Some(&v)).unwrap().unwrap();
        assert!(packed.len() < v.to_string().len() / 4);
        assert_eq!(decompress_json(&packed).unwrap(), v);
    }

    #[test]
    fn a_dictionary_makes_shared_content_nearly_free() {
        // Text that does not compress on its own: numbers of a simple LCG.
        let mut x: u64 = 7;
        let shared: String = (0..2000)
            .map(|_| {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                format!("{} ", x >> 44)
            })
            .collect();
        let data = format!("{{\"messages\":\"{shared}\",\"n\":1}}");
        let alone = compress_with(b"", data.as_bytes()).unwrap();
        let with = compress_with(shared.as_bytes(), data.as_bytes()).unwrap();
        assert!(with.len() < 60, "{} bytes", with.len());
        assert!(alone.len() > 4000, "{} bytes", alone.len());
        let back = decompress_with(shared.as_bytes(), &with).unwrap();
        assert_eq!(back, data.as_bytes());
    }
}
