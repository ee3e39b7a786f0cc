//! The `tracegate` binary: a thin shell over the library.

/// A gateway allocates per call (headers, chunks, the record's JSON) from
/// many threads; mimalloc's per-thread heaps serve that pattern better than
/// the system allocator (measured with `bench/run.sh`, see `docs/development.md`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    tracegate::cli::main()
}
