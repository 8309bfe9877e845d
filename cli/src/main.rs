//! `stratavore`: the command line. For now it runs the stack on this
//! machine (`provision`, `up`, `down`, `status`); the API commands come with
//! the gateway's API.

mod local_stack;

use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "stratavore",
    about = "Control plane for AI coding agents",
    version
)]
struct Cli {
    /// Folder for downloads, local servers, logs and pid files (git-ignored).
    #[arg(
        long,
        env = "STRATAVORE_LOCAL_DIR",
        default_value = ".local",
        global = true
    )]
    local_dir: PathBuf,
    /// Config file (default: $STRATAVORE_CONFIG or ./stratavore.toml).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Provision what is missing: RabbitMQ running, Postgres with pgvector
    /// (embedded when no DATABASE_URL), roles, schemas, broker topology.
    Provision,
    /// Provision, then start the five services in the background.
    Up,
    /// Stop the services, the embedded Postgres, and RabbitMQ if `up` started it.
    Down,
    /// Show whether each service runs and is ready.
    Status,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let stack = local_stack::LocalStack::load(cli.local_dir, cli.config.as_deref())?;
    match cli.command {
        Command::Provision => stack.provision().await.map(|_| ()),
        Command::Up => stack.up().await,
        Command::Down => stack.down().await,
        Command::Status => stack.status().await,
    }
}
