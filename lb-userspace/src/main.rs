//! `xlb`: the agent and the CLI in one binary.
use std::process::ExitCode;

use clap::Parser;
use xlb::{
    agent::{self, AgentArgs, AgentError},
    cli::{
        self,
        args::{Cli, Cmd, ReadArgs},
        generate,
    },
};

fn main() -> ExitCode {
    let cli = Cli::parse();
    if !matches!(cli.cmd, Cmd::Agent { .. }) {
        restore_sigpipe();
    }
    if let Some(read) = cli.cmd.map_reader() {
        if let Some(w) = xlb::status::stale_warning(&read.pin_path) {
            eprintln!("{w}");
        }
    }
    let result = match cli.cmd {
        Cmd::Agent { args, log_level } => return run_agent(args, &log_level),
        Cmd::Status { read } => return status(&read),
        Cmd::Services { read } => cli::services(&read.pin_path, read.format()),
        Cmd::Backends { service, read } => cli::backends(&read.pin_path, service.get(), read.format()),
        Cmd::Flows { service, read } => cli::flows(&read.pin_path, service.get(), read.format()),
        Cmd::Stats { read } => cli::stats(&read.pin_path, read.format()),
        Cmd::Maglev { service, read } => cli::maglev(&read.pin_path, service.get(), read.format()),
        Cmd::Top { interval, once, read } => {
            cli::top::top(&read.pin_path, cli::top::TopArgs { interval, once, format: read.format() })
        }
        Cmd::Completions { shell } => {
            generate::completions(shell, &mut std::io::stdout());
            Ok(())
        }
        Cmd::ManPages { dir } => generate::man_pages(&dir).map(|pages| {
            for p in pages {
                println!("{}", p.display());
            }
        }),
        Cmd::Trace(t) => {
            if let Some(e) = t.usage_error() {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
            match t.run() {
                Err(e) if e.is::<cli::trace::BatchUsageError>() => {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
                r => r,
            }
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
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
