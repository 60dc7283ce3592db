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
#[expect(clippy::large_enum_variant, reason = "parsed once at start-up")]
enum Cmd {
    /// Run the agent (foreground).
    Agent {
        #[command(flatten)]
        args: AgentArgs,
        /// Log level: error, warn, info, debug or trace (or tracing
        /// directives such as `info,xlb=debug`).
        #[arg(long, default_value = "info", value_parser = parse_log_level)]
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
    /// Where a packet from CLIENT to VIP:PORT would go and why, from the
    /// real data path, changing no flow, counter or table.
    ///
    /// Example: `xlb trace udp 10.0.0.7:5353 10.0.0.100:53 -o json`;
    /// `xlb trace tcp 10.0.0.7:40000 10.0.0.100:80 --syn`; the reply of an
    /// existing flow: `xlb trace udp 10.0.0.7:5353 10.0.0.100:53 --reply 10.1.0.2:5353`.
    Trace(Box<cli::trace::TraceArgs>),
    /// Is an agent running; attached interfaces and XDP modes; last apply;
    /// announced VIPs (exit 1 when no agent runs).
    Status {
        #[command(flatten)]
        read: ReadArgs,
    },
}

/// The levels `--log-level` takes.
const LEVELS: [&str; 6] = ["error", "warn", "info", "debug", "trace", "off"];

/// `--log-level`: one of [`LEVELS`], or `tracing` directives
/// (`info,xlb=debug`) whose bare words are levels. A bare unknown word
/// (`warning`) would be taken as a target name and turn logging off, so it
/// is refused.
fn parse_log_level(s: &str) -> Result<String, String> {
    let hint = "use error, warn, info, debug or trace (or directives such as info,xlb=debug)";
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        if !part.contains('=') && !LEVELS.contains(&part.to_ascii_lowercase().as_str()) {
            return Err(format!("{part:?} is not a log level; {hint}"));
        }
    }
    tracing_subscriber::EnvFilter::try_new(s).map_err(|e| format!("{e}; {hint}"))?;
    Ok(s.to_owned())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if !matches!(cli.cmd, Cmd::Agent { .. }) {
        restore_sigpipe();
    }
    if let Some(read) = stale_check(&cli.cmd) {
        if let Some(w) = xlb::status::stale_warning(&read.pin_path) {
            eprintln!("{w}");
        }
    }
    let result = match cli.cmd {
        Cmd::Agent { args, log_level } => return run_agent(args, &log_level),
        Cmd::Status { read } => return status(&read),
        Cmd::Services { read } => cli::services(&read.pin_path, read.output),
        Cmd::Backends { service, read } => cli::backends(&read.pin_path, service.as_deref(), read.output),
        Cmd::Flows { service, read } => cli::flows(&read.pin_path, service.as_deref(), read.output),
        Cmd::Stats { read } => cli::stats(&read.pin_path, read.output),
        Cmd::Maglev { service, read } => cli::maglev(&read.pin_path, &service, read.output),
        Cmd::Trace(t) => t.run(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// The read commands whose output comes from maps that may be stale.
fn stale_check(cmd: &Cmd) -> Option<&ReadArgs> {
    match cmd {
        Cmd::Services { read }
        | Cmd::Backends { read, .. }
        | Cmd::Flows { read, .. }
        | Cmd::Stats { read }
        | Cmd::Maglev { read, .. } => Some(read),
        Cmd::Agent { .. } | Cmd::Status { .. } | Cmd::Trace(_) => None,
    }
}

/// The CLI commands die quietly on a closed pipe (`xlb flows | head`), as
/// Unix tools do, instead of panicking in `println!`: Rust ignores SIGPIPE
/// by default. (The agent keeps ignoring it: a closed socket must not kill it.)
fn restore_sigpipe() {
    // SAFETY: setting a signal's disposition to the default before any
    // other thread exists.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
}

/// `xlb status`: exit 0 when an agent runs, 1 when none does.
fn status(read: &ReadArgs) -> ExitCode {
    let st = xlb::status::read(&read.pin_path);
    if let Err(e) = cli::status(&st, read.output) {
        eprintln!("error: {e:#}");
        return ExitCode::from(1);
    }
    if st.running {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
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
