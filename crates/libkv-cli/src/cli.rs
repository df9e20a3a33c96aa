//! The command line: commands, arguments and options.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

const AFTER_HELP: &str = "\
STORES (URL):
  file:///ROOT  legacy-simp6:// (with --vardir)  etcd://HOST:PORT[,HOST:PORT...]/PREFIX
  etcd+ssl://...  consul://HOST:PORT/PREFIX  consul+ssl://...  mock://
  zookeeper://HOST:PORT[,HOST:PORT...]/PREFIX  sqlite:///ABSOLUTE/FILE.db
  simpkv:///ROOT (simpkv's file plugin tree, read only: a source for cp, dump, diff)

CREDENTIALS never go on the command line. --auth-file FILE (or LIBKV_AUTH_FILE)
names a YAML file of settings (username, password, token, ca_file, cert_file,
key_file); LIBKV_USERNAME, LIBKV_PASSWORD, LIBKV_TOKEN, LIBKV_CA_FILE,
LIBKV_CERT_FILE and LIBKV_KEY_FILE set one each. For cp's and diff's destination:
--to-auth-file, LIBKV_TO_AUTH_FILE and LIBKV_TO_*.

EXIT STATUS: 0 done; 1 failed (the store failed, a key is absent, a copy differs);
2 usage (a bad argument, URL or key).";

/// Keys of any libkv store, for admins and scripts: read, write, list, remove,
/// copy between stores, compare, dump and load. Values travel as stored bytes.
#[derive(Parser, Debug)]
#[command(name = "libkv", version, after_help = AFTER_HELP)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,

    #[command(flatten)]
    pub global: Global,
}

#[derive(Args, Debug)]
pub struct Global {
    /// YAML file of the store's credentials and TLS files.
    #[arg(long, global = true, env = "LIBKV_AUTH_FILE", value_name = "FILE")]
    pub auth_file: Option<PathBuf>,

    /// The same for the destination of cp and diff.
    #[arg(long, global = true, env = "LIBKV_TO_AUTH_FILE", value_name = "FILE")]
    pub to_auth_file: Option<PathBuf>,

    /// Seconds for connecting and each request.
    #[arg(long, global = true, default_value_t = 5.0, value_name = "SECONDS")]
    pub timeout: f64,

    /// Puppet's vardir, for legacy-simp6:// (`puppet config print vardir --section server`).
    #[arg(long, global = true, env = "LIBKV_VARDIR", value_name = "DIR")]
    pub vardir: Option<PathBuf>,

    /// The Puppet environment, for legacy-simp6://.
    #[arg(long, global = true, default_value = "production", value_name = "ENV")]
    pub environment: String,

    /// Machine output: JSON on stdout, no progress bar.
    #[arg(long, global = true)]
    pub json: bool,

    /// No progress bar, even on a terminal.
    #[arg(long, short, global = true)]
    pub quiet: bool,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Print the value of a key (a String as its text; other types as JSON).
    Get {
        url: String,
        key: String,
        /// Write the stored bytes exactly, nothing added.
        #[arg(long, conflicts_with = "json")]
        raw: bool,
    },
    /// Store a value at a key. Without VALUE (or with -), the value is read from
    /// stdin: secrets belong there, not on the command line.
    Put {
        url: String,
        key: String,
        value: Option<String>,
        /// What the value is.
        #[arg(long = "type", value_enum, default_value_t = ValueType::String)]
        kind: ValueType,
    },
    /// List the keys below a directory, one per line.
    Ls {
        url: String,
        #[arg(default_value = "/")]
        dir: String,
    },
    /// Delete keys (an absent key is not an error).
    Rm {
        url: String,
        #[arg(required = true)]
        keys: Vec<String>,
    },
    /// Delete every key below a directory.
    Rmtree {
        url: String,
        dir: String,
        /// Needed to delete every key of the store (DIR /).
        #[arg(long)]
        all: bool,
    },
    /// Print facts about the store.
    Info { url: String },
    /// Copy every key below DIR from SRC to DST, as stored bytes. Keys DST
    /// already holds with the same bytes are left alone, so running it again
    /// after an interruption completes the copy.
    Cp {
        src: String,
        dst: String,
        #[arg(default_value = "/")]
        dir: String,
        /// Then compare every key of both, byte for byte; exit 1 on any difference.
        #[arg(long)]
        verify: bool,
        #[command(flatten)]
        transfer: Transfer,
    },
    /// Compare every key below DIR of SRC and DST, byte for byte; exit 1 when DST
    /// lacks a key of SRC or holds different bytes.
    Diff {
        src: String,
        dst: String,
        #[arg(default_value = "/")]
        dir: String,
    },
    /// Write every key below DIR as JSON lines: {"key":...,"value":...} (or
    /// "base64" for bytes that are not text).
    Dump {
        url: String,
        #[arg(default_value = "/")]
        dir: String,
        /// Write to FILE instead of stdout.
        #[arg(long, short, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Put every key of a dump (from FILE, or stdin).
    Load {
        url: String,
        file: Option<PathBuf>,
        #[command(flatten)]
        transfer: Transfer,
    },
}

#[derive(Args, Debug, Clone, Copy)]
pub struct Transfer {
    /// Batches written at once.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub concurrency: u16,
    /// Keys per batch (a store cuts them further: 128 per etcd transaction, 64 per Consul one).
    #[arg(long, default_value_t = 512, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub batch: u32,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueType {
    /// Text, stored as its plain bytes.
    String,
    Integer,
    Float,
    /// true or false.
    Boolean,
    /// JSON: an Array, a Hash, or any of the above.
    Json,
    /// Bytes, stored as they are (a Puppet Binary when they are not text).
    Binary,
}
