use std::process::ExitCode;

fn main() -> ExitCode {
    ferry::cli::main()
}
