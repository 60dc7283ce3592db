//! `xlb`: the agent and the CLI in one binary.
use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use xlb::{
    agent::{self, AgentArgs, AgentError},
    cli::{self, Output},
};

#[derive(Parser, Debug)]
#[command(name = "xlb", version, about = "XDP load balancer for UDP and TCP")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(clap::Args, Debug)]
struct ReadArgs {
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t)]
    output: Output,
    /// bpffs directory of the agent's pinned maps.
    #[arg(long, default_value = "/sys/fs/bpf/xlb")]
    pin_path: PathBuf,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run the agent (foreground).
    Agent {
        #[command(flatten)]
        args: AgentArgs,
        /// Log level (error, warn, info, debug, trace).
        #[arg(long, default_value = "info")]
        log_level: String,
    },
    /// List services: NAME, VIP, PORT, PROTO, SOURCE, BACKENDS, PACKETS, BYTES, AFFINITY, SOURCE-RANGES.
    ///
    /// SOURCE is snat or preserve; BACKENDS the "ip:port" list; PACKETS and
    /// BYTES count the client-to-backend direction (bytes are IP packet
    /// lengths); AFFINITY is the client-IP session-affinity timeout (- when
    /// off); SOURCE-RANGES the client ranges admitted (- when every client
    /// is). `-o json` prints one object per service.
    Services {
        #[command(flatten)]
        read: ReadArgs,
    },
    /// List backends, of one service or all.
    Backends {
        service: Option<String>,
        #[command(flatten)]
        read: ReadArgs,
    },
    /// List connection-table entries.
    Flows {
        #[arg(long)]
        service: Option<String>,
        #[command(flatten)]
        read: ReadArgs,
    },
    /// Global counters, drops by reason.
    Stats {
        #[command(flatten)]
        read: ReadArgs,
    },
    /// Lookup-table share of each backend of a service.
    Maglev {
        service: String,
        #[command(flatten)]
        read: ReadArgs,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.cmd {
        Cmd::Agent { args, log_level } => return run_agent(args, &log_level),
        Cmd::Services { read } => cli::services(&read.pin_path, read.output),
        Cmd::Backends { service, read } => cli::backends(&read.pin_path, service.as_deref(), read.output),
        Cmd::Flows { service, read } => cli::flows(&read.pin_path, service.as_deref(), read.output),
        Cmd::Stats { read } => cli::stats(&read.pin_path, read.output),
        Cmd::Maglev { service, read } => cli::maglev(&read.pin_path, &service, read.output),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn run_agent(args: AgentArgs, log_level: &str) -> ExitCode {
    let filter = match tracing_subscriber::EnvFilter::try_new(log_level) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("error: --log-level {log_level:?}: {e}; use error, warn, info, debug or trace");
            return ExitCode::from(2);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let rt = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(agent::run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(AgentError::Config(errors)) => {
            eprintln!("{errors}");
            eprintln!("error: invalid configuration; nothing attached");
            ExitCode::from(2)
        }
        Err(AgentError::Usage(msg)) => {
            eprintln!("error: {msg}");
            ExitCode::from(2)
        }
        Err(AgentError::Runtime(e)) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}
