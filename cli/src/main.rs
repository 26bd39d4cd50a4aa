//! The `patronusc` binary; everything lives in the `patronus_cli` library.

fn main() -> std::process::ExitCode {
    patronus_cli::run_main()
}
