//! The `tracegate` binary: a thin shell over the library.

use std::cell::Cell;
use std::ffi::{c_int, c_long};
use std::time::{Duration, Instant};

/// A gateway allocates per call (headers, chunks, the record's JSON) from
/// many threads; mimalloc's per-thread heaps serve that pattern better than
/// the system allocator (measured with `bench/run.sh`, see `docs/development.md`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

// mimalloc's option setter and collector, in the library the `mimalloc` crate links (its
// `mimalloc.h`; the crate's bindings offer it only with a feature that
// brings one more crate).
unsafe extern "C" {
    fn mi_option_set(option: c_int, value: c_long);
    fn mi_collect(force: bool);
}

/// `mi_option_purge_delay` in `mimalloc.h` (the same index in v2 and v3).
const MI_OPTION_PURGE_DELAY: c_int = 15;

fn main() -> std::process::ExitCode {
    return_freed_memory();
    tracegate::cli::main(collect_when_idle)
}

/// How often, at most, a runtime thread that runs out of work hands its
/// freed memory back.
const COLLECT_EVERY: Duration = Duration::from_millis(500);

/// Gives memory that became free back to the system. mimalloc purges
/// freed pages after `purge_delay` (1 s), and only when a thread next
/// allocates — so after a burst of streams an idle gateway kept its peak
/// RSS (`bench/memory.py`: 112.8 MiB after 1000 streams, 80.1 MiB with a
/// delay of 0). `MIMALLOC_PURGE_DELAY`, when set, still decides. The crate
/// is built with `no_thp`: mimalloc otherwise asks for transparent huge
/// pages on its arenas, so RSS grew and shrank in 2 MiB steps (idle
/// 32.6 → 22.8 MiB, peak with 1000 streams 104.0 → 79.4).
fn return_freed_memory() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets an integer option; it takes a plain value and is
        // called before any other thread exists.
        unsafe { mi_option_set(MI_OPTION_PURGE_DELAY, 0) };
    }
}

/// Runs when a runtime thread parks: collects that thread's heap (at most
/// every [`COLLECT_EVERY`]). A page freed by another thread stays with the
/// thread that allocated it until that thread collects, so a worker that
/// went idle after a burst kept its pages (1000 streams: 56.5 MiB after
/// they closed, 42.0 with this).
fn collect_when_idle() {
    thread_local! {
        static LAST: Cell<Option<Instant>> = const { Cell::new(None) };
    }
    let now = Instant::now();
    if LAST
        .get()
        .is_some_and(|last| now.duration_since(last) < COLLECT_EVERY)
    {
        return;
    }
    LAST.set(Some(now));
    // SAFETY: a plain call into the allocator, about this thread's heap.
    unsafe { mi_collect(false) };
}
