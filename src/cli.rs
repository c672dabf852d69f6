//! The command line: clap definitions only.

use crate::net::{Access, Cidr, parse_bind_addr, parse_host_port};
use crate::render::BodyFormat;
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::time::Duration;

/// Painless TCP messaging: one small protocol, four modes, one event loop.
#[derive(Debug, Parser)]
#[command(
    name = "sockmod",
    version,
    about = "Painless TCP messaging: one small protocol, four modes, one event loop.",
    long_about = "Painless TCP messaging: one small protocol (a key/value header plus an optional \
binary body), four modes sharing one event loop.\n\n\
Every mode reads commands from an interactive prompt on a terminal, or line by line \
from stdin when piped (type `help` at the prompt), or from -c LINE options (stdin then \
carries a body: `send * -f -`). Events go to stdout (human lines, \
or JSON lines with --json); errors and notices go to stderr.\n\n\
Exit status: 0 normal, 1 runtime failure, 2 usage error.",
    after_help = "Examples:\n  sockmod serve --bind 127.0.0.1:0 --json\n  printf 'send * hello\\n' | sockmod connect 127.0.0.1:63335\n  sockmod connect 127.0.0.1:63335 -c 'send * hello'\n  sockmod ipserver\n  sockmod filer --id alice --ipserver 192.168.1.10:5000"
)]
pub struct Cli {
    /// The mode to run.
    #[command(subcommand)]
    pub mode: Mode,
}

/// The four modes, plus shell completions.
#[derive(Debug, Subcommand)]
pub enum Mode {
    /// Listen, keep many clients, print what they send, send back.
    ///
    /// Prints `listening on IP:PORT` once bound, then an event for every
    /// connection and message. Commands (type `help`, or pipe them in): send,
    /// broadcast, multicast, close, list, connect, quit. With piped input it keeps
    /// running after the end of it, until `quit`, SIGINT or SIGTERM.
    Serve(ServeArgs),
    /// Connect to one or more servers and talk to them.
    ///
    /// Dials every ADDR at start. Piped commands wait until those dials have
    /// finished, so `printf 'send * hi\n' | sockmod connect HOST:PORT` never races
    /// the connection; at the end of piped input it exits once every dial has
    /// finished and everything sent is flushed (see --stay). Exit status 1 when
    /// every dial failed, a piped command failed, or a message was dropped
    /// because the dial it waited for failed.
    Connect(ConnectArgs),
    /// Discovery server of the filer network: collect reports, multicast the roster.
    ///
    /// Filers report `ID:NAME;Port:PORT`; every --interval the roster
    /// (`ID,IP,PORT;…`) goes to each peer that reported within --alive. `peers`
    /// lists who reported, from where and when.
    Ipserver(IpserverArgs),
    /// LAN peer: report to an ipserver, talk to peers, send and receive files.
    ///
    /// Reports to --ipserver (retrying while it is away), learns who else is
    /// online, and talks to them directly: `peers`, `dial NAME`, `send NAME TEXT`,
    /// `sendfile NAME PATH...`, `transfers`, `cancel tN`. Received files go to
    /// --inbox, verified, never overwriting a file.
    Filer(FilerArgs),
    /// Print a shell completion script.
    ///
    /// For example: `sockmod completions bash >
    /// ~/.local/share/bash-completion/completions/sockmod`, `sockmod completions zsh >
    /// ~/.zfunc/_sockmod`, `sockmod completions fish >
    /// ~/.config/fish/completions/sockmod.fish`.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

/// Options every mode shares.
#[derive(Debug, Clone, Args)]
pub struct Common {
    /// Run this command line instead of reading commands from stdin or a
    /// prompt, as `sh -c` does; repeatable, run in order. Then as at the end of
    /// piped input: connect exits once everything is flushed, the listening
    /// modes keep running until `quit` (give `-c quit` last to stop them),
    /// SIGINT or SIGTERM. stdin is left free for a body: `send * -f -`.
    #[arg(short = 'c', long = "command", value_name = "LINE")]
    pub commands: Vec<String>,
    /// Events as JSON lines on stdout (one object per line).
    #[arg(long)]
    pub json: bool,
    /// How message bodies are shown.
    #[arg(long, value_enum, default_value_t = BodyFormat::Auto, value_name = "FORMAT")]
    pub body_format: BodyFormat,
    /// Do not show message events (`list` still counts them).
    #[arg(long, short)]
    pub quiet: bool,
    /// Largest body accepted from a peer (e.g. 64MiB, 1GB, 4096); a frame declaring
    /// more closes that connection. Default: 64MiB; 4MiB for filer, whose own
    /// frames are 256KiB file chunks.
    #[arg(long, value_parser = parse_size, value_name = "SIZE")]
    pub max_body: Option<usize>,
    /// Bytes of partly received frames held for all connections together; over
    /// it, the connection holding the largest is closed and the others carry on.
    #[arg(long, value_parser = parse_positive_size, default_value = "256MiB", value_name = "SIZE")]
    pub max_pending_bodies: usize,
    /// Largest outbound queue per connection: a peer that does not read while its
    /// queue is over this is dropped as a slow consumer. Also the largest file
    /// `send -f` reads.
    /// Commands (typed or piped) wait while any queue is over 3/4 of it, and go
    /// on once every queue is under half: a script waits for its readers.
    #[arg(long, value_parser = parse_positive_size, default_value = "64MiB", value_name = "SIZE")]
    pub max_queue: usize,
    /// Drop a peer whose queued output waited this long with nothing of it
    /// written, as a slow consumer (a reader that stopped or trickles); `off`
    /// to keep such peers.
    #[arg(long, value_parser = parse_duration_or_off, default_value = "10s", value_name = "DURATION")]
    pub write_timeout: Duration,
    /// Most connections at once; more are accepted and closed at once, with a notice.
    #[arg(long, default_value_t = 10_000, value_name = "N", value_parser = parse_max_conns)]
    pub max_conns: usize,
    /// Send a TP:Check probe on a connection after sending it nothing for this
    /// long (e.g. 5s), so quiet links stay up; off unless given.
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub heartbeat: Option<Duration>,
    /// Close a connection that sent nothing (not even a probe) for this long
    /// (e.g. 30s, 1m); off unless given.
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub idle_timeout: Option<Duration>,
    /// TLS options.
    #[command(flatten)]
    pub tls: TlsArgs,
}

/// TLS, for listening (`serve`, `ipserver`, `filer`) and for dialling
/// (`connect`, and the `connect`/`dial` commands of every mode).
#[derive(Debug, Clone, Default, Args)]
#[command(next_help_heading = "TLS")]
pub struct TlsArgs {
    /// Listening modes: accept TLS only (with a certificate from --tls-cert and
    /// --tls-key, or one generated on first use and kept in the state directory).
    /// connect: dial every ADDR with TLS. A single dial can also say tls://HOST:PORT.
    #[arg(long)]
    pub tls: bool,
    /// PEM certificate chain: the listener's, or the client certificate a dial
    /// presents when the server asks.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Listening: require client certificates issued by this CA (PEM).
    #[arg(long, value_name = "FILE")]
    pub tls_client_ca: Option<PathBuf>,
    /// Dialling: trust servers whose certificate this CA (PEM) issued, instead of
    /// the system's roots.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["tls_pin", "tls_insecure"])]
    pub tls_ca: Option<PathBuf>,
    /// Dialling: trust exactly the certificate with this SHA-256 fingerprint
    /// (64 hex digits, colons optional, as `listening on` prints); repeatable.
    #[arg(long, value_name = "FINGERPRINT", value_parser = parse_pin, conflicts_with = "tls_insecure")]
    pub tls_pin: Vec<[u8; 32]>,
    /// Dialling: do not verify the server's certificate (still encrypted, but
    /// anyone on the path can pretend to be the server); warns on every connection.
    #[arg(long)]
    pub tls_insecure: bool,
}

/// `--tls-pin`: a SHA-256 fingerprint.
fn parse_pin(s: &str) -> Result<[u8; 32], String> {
    crate::net::parse_fingerprint(s)
}

/// A closed group of filers and their ipserver (`--secret`).
#[derive(Debug, Clone, Default, Args)]
pub struct SecretArgs {
    /// A passphrase every link (filer to filer, filer to ipserver) must prove,
    /// over TLS, without revealing it (SPAKE2): peers with another passphrase or
    /// none, and plaintext peers, are refused. Also read from SOCKMOD_SECRET
    /// (better than the command line, which other users can see).
    #[arg(
        long,
        value_name = "PASSPHRASE",
        env = "SOCKMOD_SECRET",
        hide_env_values = true,
        conflicts_with = "secret_file"
    )]
    pub secret: Option<String>,
    /// Read the --secret passphrase from the first line of FILE.
    #[arg(long, value_name = "FILE")]
    pub secret_file: Option<PathBuf>,
}

impl SecretArgs {
    /// The passphrase, if one was given.
    pub fn secret(&self) -> Result<Option<crate::net::Secret>, String> {
        if let Some(s) = &self.secret {
            if s.is_empty() {
                return Err("--secret: the passphrase is empty".into());
            }
            return Ok(Some(crate::net::Secret::new(s.as_bytes().to_vec())));
        }
        let Some(f) = &self.secret_file else {
            return Ok(None);
        };
        let text = std::fs::read_to_string(f).map_err(|e| {
            format!(
                "--secret-file {}: {}",
                f.display(),
                crate::net::describe(&e)
            )
        })?;
        let line = text.lines().next().unwrap_or("").trim_end_matches('\r');
        if line.is_empty() {
            return Err(format!(
                "--secret-file {}: the first line is empty",
                f.display()
            ));
        }
        Ok(Some(crate::net::Secret::new(line.as_bytes().to_vec())))
    }
}

/// Who may connect to a listening mode (`serve`, `ipserver`, `filer`).
#[derive(Debug, Clone, Default, Args)]
pub struct AccessArgs {
    /// Admit only peers in this address or network (e.g. 192.168.1.0/24, ::1);
    /// repeatable. Without it, everyone not denied is admitted.
    #[arg(long, value_name = "ADDR|CIDR")]
    pub allow: Vec<Cidr>,
    /// Refuse peers in this address or network; repeatable; wins over --allow.
    /// Refused peers are closed at once, with a notice.
    #[arg(long, value_name = "ADDR|CIDR")]
    pub deny: Vec<Cidr>,
    /// Most connections at once from one address; more are closed at once, with
    /// one notice per address per burst; 0 for no limit. Default: 16 for filer
    /// and ipserver (a LAN peer needs a handful), none for serve.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(usize))]
    pub max_conns_per_ip: Option<usize>,
    /// Close an accepted connection that has not sent one whole frame within
    /// this long (`off` for no limit). Default: 10s for filer and ipserver, off
    /// for serve (a client may connect and wait before it speaks).
    #[arg(long, value_parser = parse_duration_or_off, value_name = "DURATION")]
    pub handshake_timeout: Option<Duration>,
}

impl AccessArgs {
    /// The rules for the event loop.
    pub fn rules(&self) -> Access {
        Access::new(self.allow.clone(), self.deny.clone())
    }

    /// `--max-conns-per-ip`, or the mode's default when not given (0: no limit).
    pub fn per_ip(&self, default: Option<usize>) -> Option<usize> {
        self.max_conns_per_ip
            .map_or(default, |n| (n > 0).then_some(n))
    }

    /// `--handshake-timeout`, or the mode's default when not given (`off`: none).
    pub fn handshake(&self, default: Option<Duration>) -> Option<Duration> {
        self.handshake_timeout
            .map_or(default, |d| (!d.is_zero()).then_some(d))
    }
}

/// `sockmod serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on: HOST:PORT or PORT (port 0: any free port).
    #[arg(long, short, default_value = "0.0.0.0:63335", value_name = "ADDR", value_parser = parse_bind_addr)]
    pub bind: String,
    /// The same as --bind, for the netcat habit `sockmod serve 9000`.
    #[arg(value_name = "ADDR", conflicts_with = "bind", value_parser = parse_bind_addr)]
    pub addr: Option<String>,
    /// `--allow`, `--deny`.
    #[command(flatten)]
    pub access: AccessArgs,
    /// The options every mode shares.
    #[command(flatten)]
    pub common: Common,
}

/// `sockmod connect`.
#[derive(Debug, Args)]
pub struct ConnectArgs {
    /// Servers to connect to (HOST:PORT).
    #[arg(required = true, value_name = "ADDR", value_parser = parse_host_port)]
    pub addrs: Vec<String>,
    /// At end of piped input, keep running until every connection closes
    /// (without it: exit once everything sent is flushed).
    #[arg(long)]
    pub stay: bool,
    /// The options every mode shares.
    #[command(flatten)]
    pub common: Common,
}

/// `sockmod ipserver`.
#[derive(Debug, Args)]
pub struct IpserverArgs {
    /// Address to listen on: HOST:PORT or PORT (port 0: any free port).
    #[arg(long, short, default_value = "0.0.0.0:5000", value_name = "ADDR", value_parser = parse_bind_addr)]
    pub bind: String,
    /// The same as --bind (`sockmod ipserver 5000`).
    #[arg(value_name = "ADDR", conflicts_with = "bind", value_parser = parse_bind_addr)]
    pub addr: Option<String>,
    /// How often the roster is multicast to the peers.
    #[arg(long, value_parser = parse_duration, default_value = "2s", value_name = "DURATION")]
    pub interval: Duration,
    /// A peer stays in the roster this long after its last report.
    #[arg(long, value_parser = parse_duration, default_value = "10s", value_name = "DURATION")]
    pub alive: Duration,
    /// `--secret`, `--secret-file`.
    #[command(flatten)]
    pub secret: SecretArgs,
    /// `--allow`, `--deny`.
    #[command(flatten)]
    pub access: AccessArgs,
    /// The options every mode shares.
    #[command(flatten)]
    pub common: Common,
}

/// `sockmod filer`.
#[derive(Debug, Args)]
pub struct FilerArgs {
    /// This peer's name: at most 255 bytes, no `,` `;` `:` or control characters,
    /// no leading or trailing spaces.
    #[arg(long, value_name = "NAME", value_parser = parse_id)]
    pub id: String,
    /// Address to listen on; if its port is taken, the next ones up are tried (up
    /// to 100; port 0: any free port).
    #[arg(long, short, default_value = "0.0.0.0:63330", value_name = "ADDR", value_parser = parse_bind_addr)]
    pub bind: String,
    /// The ipserver to report to (HOST:PORT, or HOST for port 5000); retried while
    /// it is unreachable.
    #[arg(long, default_value = "127.0.0.1:5000", value_name = "HOST:PORT")]
    pub ipserver: String,
    /// How often to report to the ipserver (also how often to retry it, within
    /// 100ms to 5s, while it is unreachable).
    #[arg(long, value_parser = parse_duration, default_value = "2s", value_name = "DURATION")]
    pub report_interval: Duration,
    /// Where received files are written (created if missing).
    #[arg(long, default_value = "./inbox", value_name = "DIR")]
    pub inbox: PathBuf,
    /// Refuse incoming files larger than this (e.g. 4GiB); without it, only files
    /// that would leave less than --min-free are refused.
    #[arg(long, value_parser = parse_size, value_name = "SIZE")]
    pub max_file_size: Option<usize>,
    /// Which incoming files are taken: ask (each offer waits for `accept tN` or
    /// `refuse tN`), yes (all), no (none; the sender is told why), known (those
    /// from pinned peers; ask about the rest).
    #[arg(long, value_enum, default_value_t = AcceptFiles::Ask, value_name = "ask|yes|no|known")]
    pub accept_files: AcceptFiles,
    /// An offer not answered within this is refused (the sender is told).
    #[arg(long, value_parser = parse_duration, default_value = "2m", value_name = "DURATION")]
    pub offer_timeout: Duration,
    /// An incoming file that moves no byte for this long fails (its part file
    /// and descriptor are released).
    #[arg(long, value_parser = parse_duration, default_value = "2m", value_name = "DURATION")]
    pub transfer_timeout: Duration,
    /// Incomplete received files kept for resuming (in INBOX/.sockmod-partial),
    /// and folders cut short (in INBOX/.sockmod-staging), are deleted at start
    /// once untouched for this long.
    #[arg(long, value_parser = parse_duration, default_value = "7d", value_name = "DURATION")]
    pub keep_partial: Duration,
    /// Free space to keep on the inbox's disk: a file is refused when it and
    /// the files being received would leave less [default: 1GiB, or 5% of a
    /// smaller disk].
    #[arg(long, value_parser = parse_size, value_name = "SIZE")]
    pub min_free: Option<usize>,
    /// Refuse peers that cannot encrypt (original Python/Qt peers, which speak
    /// plaintext): on the listening port and when dialling.
    #[arg(long, conflicts_with = "plaintext")]
    pub require_encryption: bool,
    /// Run as an original peer does: no key, no TLS, names taken on their word
    /// (for comparisons and for debugging with a packet capture).
    #[arg(long)]
    pub plaintext: bool,
    /// `--secret`, `--secret-file`.
    #[command(flatten)]
    pub secret: SecretArgs,
    /// `--allow`, `--deny`.
    #[command(flatten)]
    pub access: AccessArgs,
    /// The options every mode shares.
    #[command(flatten)]
    pub common: Common,
}

/// What a filer does with files sent to it (`--accept-files`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AcceptFiles {
    /// Show each offer; `accept tN` or `refuse tN` answers it.
    Ask,
    /// Accept incoming files into --inbox.
    Yes,
    /// Refuse every incoming file; the sender is told why.
    No,
    /// Accept files from pinned peers; ask about the others.
    Known,
}

/// Checks a filer peer name.
pub fn parse_id(s: &str) -> Result<String, String> {
    crate::filer::roster::check_id(s).map(|_| s.to_string())
}

/// Parses a duration like `500ms`, `2s`, `1m`: at least a millisecond (a zero
/// interval would make a timer fire on every turn of the loop) and at most
/// 100 years (further than the clock can count from now).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    const MAX: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
    let d = humantime::parse_duration(s)
        .map_err(|e| format!("{s:?} is not a duration ({e}); try 500ms, 2s, 1m"))?;
    if d < Duration::from_millis(1) {
        return Err(format!("{s:?} is too short; give at least 1ms"));
    }
    if d > MAX {
        return Err(format!("{s:?} is too long; give at most 100 years"));
    }
    Ok(d)
}

/// A duration, or `off` (returned as zero) for a limit that can be turned off.
pub fn parse_duration_or_off(s: &str) -> Result<Duration, String> {
    if s.trim().eq_ignore_ascii_case("off") {
        return Ok(Duration::ZERO);
    }
    parse_duration(s).map_err(|e| format!("{e}, or off"))
}

/// `--max-conns`: a count of at least 1 (0 would refuse every peer).
fn parse_max_conns(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(0) => Err(format!("{s:?} is too small: allow at least 1 connection")),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("{s:?} is not a count; try 100 or 10000")),
    }
}

/// [`parse_size`] for limits where 0 would refuse everything (`--max-queue 0`
/// would drop every peer at its first message).
pub fn parse_positive_size(s: &str) -> Result<usize, String> {
    match parse_size(s)? {
        0 => Err(format!("{s:?} is too small: it must be at least 1 byte")),
        n => Ok(n),
    }
}

/// Parses a size: plain bytes, or with a unit (`KB`/`MB`/`GB` decimal, `KiB`/`MiB`/`GiB` binary,
/// `K`/`M`/`G` binary).
pub fn parse_size(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let bad = || format!("{s:?} is not a size; try 4096, 64KiB, 64MiB, 1GB");
    let n: f64 = num.parse().map_err(|_| bad())?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "kb" => 1e3,
        "mb" => 1e6,
        "gb" => 1e9,
        "tb" => 1e12,
        "k" | "kib" => 1024.0,
        "m" | "mib" => 1024.0 * 1024.0,
        "g" | "gib" => 1024.0 * 1024.0 * 1024.0,
        "t" | "tib" => 1024f64.powi(4),
        _ => return Err(bad()),
    };
    let v = n * mult;
    if !v.is_finite() || v < 0.0 || v > usize::MAX as f64 {
        return Err(bad());
    }
    Ok(v as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration_or_off("off"), Ok(Duration::ZERO));
        assert_eq!(parse_duration_or_off("2s"), Ok(Duration::from_secs(2)));
        assert!(parse_duration_or_off("0s").unwrap_err().contains("or off"));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert!(parse_duration("0s").unwrap_err().contains("too short"));
        assert!(
            parse_duration("500000000000y")
                .unwrap_err()
                .contains("too long")
        );
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("1GB"), Ok(1_000_000_000));
        assert_eq!(parse_size("1.5k"), Ok(1536));
        assert!(parse_size("x").is_err());
        assert!(parse_size("1XB").is_err());
        assert!(parse_size("").is_err());
    }
}
