use std::process::ExitCode;

use clap::Parser;
use refacen::cli::{Cli, Command, detect, guests};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Detect(args) => detect::run(args),
        Command::Guests(args) => guests::run(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
