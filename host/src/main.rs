use std::process::ExitCode;

use refacen::cli::{
    Cli, Command, detect, embed, faces, guests, regenerate, report, search, snapshot, spaces, sync_search,
};

fn main() -> ExitCode {
    // SAFETY: nothing has started a thread yet.
    #[cfg(unix)]
    unsafe {
        refacen::nn::gpu::provide_xdg_runtime_dir()
    };
    let result = Cli::parse_with_config().and_then(|cli| match &cli.command {
        Command::Detect(args) => detect::run(args),
        Command::Embed(args) => embed::run(args),
        Command::Regenerate(args) => regenerate::run(args),
        Command::Search(args) => search::run(args),
        Command::Faces(args) => faces::run(args),
        Command::SyncSearch(args) => sync_search::run(args),
        Command::Spaces(args) => spaces::run(args),
        Command::Guests(args) => guests::run(args),
        Command::Snapshot(args) => snapshot::run(args),
        Command::Report(args) => report::run(args),
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
