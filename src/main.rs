//! The `refacen` binary: parses the command line and runs one command (the commands live in
//! `src/cli`, the library behind them in `crates/`).

use std::process::ExitCode;

use refacen::cli::{
    Cli, Command, detect, embed, faces, guests, output, regenerate, report, search, snapshot, spaces, status,
    sync_search,
};

fn main() -> ExitCode {
    // SAFETY: nothing has started a thread yet.
    #[cfg(all(unix, feature = "gpu"))]
    unsafe {
        refacen::nn::gpu::provide_xdg_runtime_dir()
    };
    let cli = match Cli::parse_with_config() {
        Ok(cli) => cli,
        Err(e) => return fail(&e, false),
    };
    let result = match &cli.command {
        Command::Detect(args) => detect::run(args),
        Command::Embed(args) => embed::run(args),
        Command::Regenerate(args) => regenerate::run(args),
        Command::Search(args) => search::run(args),
        Command::Status(args) => status::run(args),
        Command::Faces(args) => faces::run(args),
        Command::SyncSearch(args) => sync_search::run(args),
        Command::Spaces(args) => spaces::run(args),
        Command::Guests(args) => guests::run(args),
        Command::Snapshot(args) => snapshot::run(args),
        Command::Report(args) => report::run(args),
    };
    match result {
        Ok(code) => code,
        // The reader of stdout has gone (`refacen faces | head`): nothing more to say.
        Err(e) if output::is_stdout_closed(&e) => ExitCode::SUCCESS,
        Err(e) => fail(&e, cli.verbose),
    }
}

fn fail(e: &anyhow::Error, verbose: bool) -> ExitCode {
    eprintln!("error: {}", output::error_text(e, verbose));
    ExitCode::from(2)
}
