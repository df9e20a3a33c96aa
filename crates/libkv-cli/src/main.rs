//! The `libkv` command: keys of any libkv store, for admins and scripts. See
//! `libkv --help` and the README's "The libkv command".

mod cli;
mod commands;
mod progress;
mod stores;

use std::process::ExitCode;

use clap::Parser;
use libkv_core::ErrorKind;

use crate::cli::Cli;
use crate::commands::Outcome;

fn main() -> ExitCode {
    // Output into a closed pipe ends the command, as it does other tools.
    // SAFETY: setting a signal's disposition to its default at startup, before
    // any other thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = Cli::parse();
    match commands::run(cli.command, &cli.global) {
        Ok(Outcome::Done) => ExitCode::SUCCESS,
        Ok(Outcome::Failed) => ExitCode::from(1),
        Err(e) => {
            eprintln!("libkv: {e}");
            match e.kind() {
                ErrorKind::InvalidArgument => ExitCode::from(2),
                _ => ExitCode::from(1),
            }
        }
    }
}
