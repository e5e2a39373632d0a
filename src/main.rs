//! The `vigild` binary: everything lives in the library; see [`vigild::cli`].

fn main() -> std::process::ExitCode {
    vigild::cli::main()
}
