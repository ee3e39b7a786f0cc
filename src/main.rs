//! The `tracegate` binary: a thin shell over the library.

use std::ffi::{c_int, c_long};

/// A gateway allocates per call (headers, chunks, the record's JSON) from
/// many threads; mimalloc's per-thread heaps serve that pattern better than
/// the system allocator (measured with `bench/run.sh`, see `docs/development.md`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

// mimalloc's option setter, in the library the `mimalloc` crate links (its
// `mimalloc.h`; the crate's bindings offer it only with a feature that
// brings one more crate).
unsafe extern "C" {
    fn mi_option_set(option: c_int, value: c_long);
}

/// `mi_option_purge_delay` in `mimalloc.h` (the same index in v2 and v3).
const MI_OPTION_PURGE_DELAY: c_int = 15;

fn main() -> std::process::ExitCode {
    return_freed_memory();
    tracegate::cli::main()
}

/// Gives memory that became free back to the system at once. mimalloc
/// purges freed pages after `purge_delay` (1 s), and only when a thread
/// next allocates — so after a burst of streams an idle gateway kept its
/// peak RSS (`bench/memory.py`: 112.8 MiB after 1000 streams, 80.1 MiB with
/// this). `MIMALLOC_PURGE_DELAY`, when set, still decides.
fn return_freed_memory() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets an integer option; it takes a plain value and is
        // called before any other thread exists.
        unsafe { mi_option_set(MI_OPTION_PURGE_DELAY, 0) };
    }
}
