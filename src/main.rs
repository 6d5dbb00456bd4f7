//! The `coffer` binary: everything lives in the library; see `coffer::cli`.

fn main() {
    std::process::exit(coffer::cli::main());
}
