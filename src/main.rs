//! The `tracegate` binary: a thin shell over the library.

fn main() -> std::process::ExitCode {
    tracegate::cli::main()
}
