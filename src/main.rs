//! The `imkit-batch` binary: all behaviour lives in the library; see [`imkit_batch::cli`].

fn main() -> std::process::ExitCode {
    imkit_batch::cli::main()
}
