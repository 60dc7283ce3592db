//! The command line of `xlb` (clap): subcommands, their flags and the
//! examples their `--help` ends with. `main.rs` parses it; the completions
//! and man pages ([`super::generate`]) are generated from it.
use std::path::PathBuf;

use clap::{Parser, Subcommand};

use super::{Format, Output};
use crate::agent::AgentArgs;

/// `xlb`: the agent and the CLI.
#[derive(Parser, Debug)]
#[command(name = "xlb", version = crate::VERSION, about = "XDP load balancer for UDP and TCP")]
#[command(after_help = examples::XLB)]
pub struct Cli {
    /// The subcommand.
    #[command(subcommand)]
    pub cmd: Cmd,
}

/// Flags of every command that reads the pinned maps.
#[derive(clap::Args, Debug)]
pub struct ReadArgs {
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t)]
    pub output: Output,
    /// Table output without the header line (and without `xlb maglev`'s
    /// summary line), for scripts. No effect on `-o json`.
    #[arg(long)]
    pub no_headers: bool,
    /// bpffs directory of the agent's pinned maps.
    #[arg(long, default_value = "/sys/fs/bpf/xlb")]
    pub pin_path: PathBuf,
}

impl ReadArgs {
    /// The output format these flags ask for.
    pub fn format(&self) -> Format {
        Format { output: self.output, headers: !self.no_headers }
    }
}

/// An optional service, named as `xlb services` prints it: positional
/// (`xlb backends dns`) or with `--service` (`xlb backends --service dns`).
#[derive(clap::Args, Debug)]
pub struct ServiceFilter {
    /// Only this service (its name as `xlb services` prints it).
    #[arg(value_name = "SERVICE", conflicts_with = "service_flag")]
    service: Option<String>,
    /// Only this service (the same as the positional SERVICE).
    #[arg(long = "service", id = "service_flag", value_name = "SERVICE")]
    service_flag: Option<String>,
}

impl ServiceFilter {
    /// The service named, if any.
    pub fn get(&self) -> Option<&str> {
        self.service.as_deref().or(self.service_flag.as_deref())
    }
}

/// A required service, positional or with `--service`.
#[derive(clap::Args, Debug)]
#[group(id = "service_choice", required = true, multiple = false)]
pub struct ServiceChoice {
    /// The service (its name as `xlb services` prints it).
    #[arg(value_name = "SERVICE")]
    service: Option<String>,
    /// The service (the same as the positional SERVICE).
    #[arg(long = "service", id = "service_flag", value_name = "SERVICE")]
    service_flag: Option<String>,
}

impl ServiceChoice {
    /// The service named (clap requires one of the two forms).
    pub fn get(&self) -> &str {
        self.service.as_deref().or(self.service_flag.as_deref()).unwrap_or_default()
    }
}

/// The subcommands.
#[derive(Subcommand, Debug)]
#[expect(clippy::large_enum_variant, reason = "parsed once at start-up")]
pub enum Cmd {
    /// Run the agent (foreground).
    #[command(after_help = examples::AGENT)]
    Agent {
        /// The agent's flags.
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
    #[command(after_help = examples::SERVICES)]
    Services {
        /// Output flags.
        #[command(flatten)]
        read: ReadArgs,
    },
    /// List backends, of one service or all: SERVICE, ADDRESS, WEIGHT, STATE, PACKETS, BYTES, REASON.
    ///
    /// An unknown service is an error (exit 1) that names the services there are.
    #[command(after_help = examples::BACKENDS)]
    Backends {
        /// Which service.
        #[command(flatten)]
        service: ServiceFilter,
        /// Output flags.
        #[command(flatten)]
        read: ReadArgs,
    },
    /// List connection-table entries, of one service or all: SERVICE, PROTO, CLIENT, BACKEND, STATE, AGE(S).
    ///
    /// An unknown service is an error (exit 1) that names the services there are.
    #[command(after_help = examples::FLOWS)]
    Flows {
        /// Which service.
        #[command(flatten)]
        service: ServiceFilter,
        /// Output flags.
        #[command(flatten)]
        read: ReadArgs,
    },
    /// Global counters, drops by reason.
    #[command(after_help = examples::STATS)]
    Stats {
        /// Output flags.
        #[command(flatten)]
        read: ReadArgs,
    },
    /// Lookup-table share of each backend of a service (docs/maglev.md explains it).
    #[command(after_help = examples::MAGLEV)]
    Maglev {
        /// Which service.
        #[command(flatten)]
        service: ServiceChoice,
        /// Output flags.
        #[command(flatten)]
        read: ReadArgs,
    },
    /// Live packets/s and bytes/s per service and backend, drops/s by reason, new flows/s.
    ///
    /// A terminal view refreshed every --interval; q (or Esc, Ctrl-C) quits.
    /// With --once, -o json, or when stdout is not a terminal: two samples
    /// --interval apart and one table of rates (a service's own row has
    /// BACKEND -), after a summary line of packets/s, new flows/s and drops/s.
    #[command(after_help = examples::TOP)]
    Top {
        /// Time between two samples: seconds (1, 0.5, 2s) or milliseconds (500ms).
        #[arg(long, default_value = "1", value_parser = crate::cli::top::parse_interval)]
        interval: std::time::Duration,
        /// Print one table of rates over one interval and exit (the default
        /// when stdout is not a terminal, and with -o json).
        #[arg(long)]
        once: bool,
        /// Output flags (of --once).
        #[command(flatten)]
        read: ReadArgs,
    },
    /// Where a packet from CLIENT to VIP:PORT would go and why, from the
    /// real data path, changing no flow, counter or table.
    ///
    /// Runs the agent's XDP program (BPF_PROG_TEST_RUN) on a frame built for
    /// that packet, against the live pinned maps, in a trace mode that
    /// writes no map; reports the service, verdict, backend, reason and the
    /// packet as it would leave.
    #[command(after_help = examples::TRACE)]
    Trace(Box<crate::cli::trace::TraceArgs>),
    /// Is an agent running; attached interfaces, XDP modes and transmit
    /// paths (xdp-redirect or tc-redirect, and why); last apply; announced
    /// VIPs (exit 1 when no agent runs).
    #[command(after_help = examples::STATUS)]
    Status {
        /// Output flags.
        #[command(flatten)]
        read: ReadArgs,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    #[command(after_help = examples::COMPLETIONS)]
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write the man pages (xlb.1 and one per subcommand) into DIR
    /// (`cargo xtask man` calls it).
    #[command(hide = true)]
    ManPages {
        /// Where to write them (created if missing).
        dir: PathBuf,
    },
}

impl Cmd {
    /// The read flags of the commands whose output comes from the pinned
    /// maps (which may be stale when no agent runs).
    pub fn map_reader(&self) -> Option<&ReadArgs> {
        match self {
            Cmd::Services { read }
            | Cmd::Backends { read, .. }
            | Cmd::Flows { read, .. }
            | Cmd::Stats { read }
            | Cmd::Maglev { read, .. }
            | Cmd::Top { read, .. } => Some(read),
            Cmd::Agent { .. } | Cmd::Status { .. } | Cmd::Trace(_) | Cmd::Completions { .. } | Cmd::ManPages { .. } => {
                None
            }
        }
    }
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

/// The examples each `--help` ends with. Every line starting with `  xlb `
/// must parse split at blanks (checked by a unit test): no pipes, no quoted blanks.
pub mod examples {
    /// `xlb --help`.
    pub const XLB: &str = "\
Examples:
  xlb agent --config /etc/xlb/xlb.yaml --interface eth0
  xlb services
  xlb backends dns
  xlb flows --service dns -o json
  xlb top
  xlb trace udp 10.0.0.7:5353 10.0.0.100:53
  xlb completions bash
Each command's --help has more; `man xlb` after `cargo xtask man`.";
    /// `xlb agent --help`.
    pub const AGENT: &str = "\
Examples:
  # A YAML file; XDP on the uplink and on the pods' veths:
  xlb agent --config /etc/xlb/xlb.yaml --interface eth0 --interface veth0 --interface veth1
  # Kubernetes mode, as the DaemonSet runs it: the uplink(s) of the default
  # routes, the pods' veths, metrics on the node's IP only (port 9464):
  xlb agent --kubernetes --node-name node1 --interface-default-route --interface-glob 'veth*' --metrics-addr 10.0.0.7
  # Answer ARP/NDP for the VIPs on eth0:
  xlb agent --config xlb.yaml --interface eth0 --announce l2";
    /// `xlb services --help`.
    pub const SERVICES: &str = "\
Examples:
  xlb services
  xlb services -o json
  xlb services --no-headers";
    /// `xlb backends --help`.
    pub const BACKENDS: &str = "\
Examples:
  xlb backends
  xlb backends dns
  xlb backends --service xlb-demo/dns:dns -o json
  xlb backends dns --no-headers";
    /// `xlb flows --help`.
    pub const FLOWS: &str = "\
Examples:
  xlb flows
  xlb flows --service dns
  xlb flows dns -o json
  xlb flows --no-headers";
    /// `xlb stats --help`.
    pub const STATS: &str = "\
Examples:
  xlb stats
  xlb stats -o json";
    /// `xlb maglev --help`.
    pub const MAGLEV: &str = "\
Examples:
  xlb maglev dns
  xlb maglev --service xlb-demo/dns:dns -o json";
    /// `xlb top --help`.
    pub const TOP: &str = "\
Examples:
  xlb top
  xlb top --interval 2s
  # One table of rates over 5 seconds, for a script or a ticket:
  xlb top --once --interval 5
  xlb top --once -o json
  xlb top --once --no-headers";
    /// `xlb trace --help`.
    pub const TRACE: &str = "\
Examples:
  # Where would a new DNS query from 10.0.0.7:5353 go?
  xlb trace udp 10.0.0.7:5353 10.0.0.100:53
  # A new TCP connection (a SYN), as JSON:
  xlb trace tcp 10.0.0.7:40000 10.0.0.100:80 --syn -o json
  # The reply of an existing flow, from its backend:
  xlb trace udp 10.0.0.7:5353 10.0.0.100:53 --reply 10.1.0.2:5353
  xlb trace udp [2001:db8::7]:5353 [2001:db8::100]:53
  # Many packets on one load of the program, one per line (as the arguments):
  printf 'udp 10.0.0.7:5353 10.0.0.100:53\ntcp 10.0.0.7:40000 10.0.0.100:80 --syn\n' | xlb trace --batch - -o json";
    /// `xlb status --help`.
    pub const STATUS: &str = "\
Examples:
  xlb status
  xlb status -o json
  xlb status --pin-path /sys/fs/bpf/xlb";
    /// `xlb completions --help`.
    pub const COMPLETIONS: &str = "\
Examples:
  xlb completions bash
  # bash, for this user:
  #   xlb completions bash > ~/.local/share/bash-completion/completions/xlb
  # zsh, into a directory of your $fpath:
  #   xlb completions zsh > ~/.zfunc/_xlb
  # fish:
  #   xlb completions fish > ~/.config/fish/completions/xlb.fish
  xlb completions zsh
  xlb completions fish";
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::*;

    /// The `  xlb ...` lines of every subcommand's examples parse, and
    /// every visible subcommand has examples.
    #[test]
    fn every_help_has_examples_that_parse() {
        let mut cmd = Cli::command();
        cmd.build();
        let mut seen = 0;
        let mut with_examples = vec![("xlb".to_owned(), cmd.get_after_help().map(ToString::to_string))];
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set() && s.get_name() != "help") {
            with_examples.push((sub.get_name().to_owned(), sub.get_after_help().map(ToString::to_string)));
        }
        for (name, text) in with_examples {
            let text = text.unwrap_or_else(|| panic!("`xlb {name} --help` has no examples"));
            assert!(text.starts_with("Examples:"), "{name}: {text}");
            let lines: Vec<&str> = text.lines().filter(|l| l.starts_with("  xlb ")).collect();
            assert!(!lines.is_empty(), "{name}: no `xlb ...` example in {text}");
            for line in lines {
                let words: Vec<&str> = line.split_whitespace().collect();
                if name != "xlb" {
                    assert_eq!(words[1], name, "an example of `xlb {name}` runs another command: {line}");
                }
                if let Err(e) = Cli::try_parse_from(&words) {
                    panic!("example of `xlb {name}` does not parse: {line}\n{e}");
                }
                seen += 1;
            }
        }
        assert!(seen >= 20, "{seen} examples");
    }

    #[test]
    fn service_is_positional_or_a_flag_but_not_both() {
        let sel = |args: &[&str]| match Cli::try_parse_from(args).map(|c| c.cmd) {
            Ok(Cmd::Backends { service, .. } | Cmd::Flows { service, .. }) => Ok(service.get().map(str::to_owned)),
            Ok(Cmd::Maglev { service, .. }) => Ok(Some(service.get().to_owned())),
            Ok(other) => panic!("{other:?}"),
            Err(e) => Err(e.kind()),
        };
        for sub in ["backends", "flows", "maglev"] {
            assert_eq!(sel(&["xlb", sub, "dns"]), Ok(Some("dns".into())), "{sub}");
            assert_eq!(sel(&["xlb", sub, "--service", "dns"]), Ok(Some("dns".into())), "{sub}");
            assert!(sel(&["xlb", sub, "dns", "--service", "web"]).is_err(), "{sub}: both forms");
        }
        assert_eq!(sel(&["xlb", "backends"]), Ok(None));
        assert_eq!(sel(&["xlb", "flows"]), Ok(None));
        assert_eq!(sel(&["xlb", "maglev"]), Err(clap::error::ErrorKind::MissingRequiredArgument));
    }

    #[test]
    fn version_names_the_commit() {
        let v = Cli::command().render_version();
        assert!(v.starts_with(&format!("xlb {} (commit ", env!("CARGO_PKG_VERSION"))), "{v}");
    }
}
