//! Wires a parsed command line to a mode: builds the handler, the node, the input
//! thread (REPL or piped stdin) and signal handling, and returns the exit status.

use crate::cli::{AcceptFiles, AccessArgs, Cli, Common, Mode, TlsArgs};
use crate::command::Input;
use crate::filer::transfer::{CHUNK_SIZE, Policy, TransferConfig};
use crate::modes::{
    Connect, Core, Filer, FilerConfig, FilerSecurity, Ipserver, Mode as _, Serve, Session,
};
use crate::net::{
    ClientAuth, Config, Handler, Identity, Node, TlsDial, TlsListen, Trust, client_config,
    describe, parse_bind, raise_nofile_limit, server_config, system_roots,
};
use crate::protocol::DEFAULT_MAX_BODY;
use crate::render::{Paced, Renderer, StdioSink, Style};
use crate::repl::{Repl, TermGuard, spawn_stdin_reader};
use crate::trust;
use std::io::IsTerminal;
use std::sync::{Arc, Mutex};

/// The loop's configuration from the shared options (a dialling mode: `--tls`
/// means every dial uses TLS).
pub fn config(c: &Common) -> Result<Config, String> {
    Ok(Config {
        max_body: c.max_body.unwrap_or(DEFAULT_MAX_BODY),
        max_queue: c.max_queue,
        write_timeout: (!c.write_timeout.is_zero()).then_some(c.write_timeout),
        max_pending_bodies: c.max_pending_bodies,
        max_conns: c.max_conns,
        heartbeat: c.heartbeat,
        idle_timeout: c.idle_timeout,
        tls_dial: tls_dial(&c.tls, c.tls.tls, true)?,
        ..Config::default()
    })
}

/// The configuration of a listening mode named `mode`: shared options, access
/// rules, and TLS on accepted connections with `--tls`.
pub fn listen_config(c: &Common, a: &AccessArgs, mode: &str) -> Result<Config, String> {
    Ok(Config {
        access: a.rules(),
        max_conns_per_ip: a.per_ip(None),
        handshake_timeout: a.handshake(None),
        tls: tls_listen(&c.tls, mode, false)?,
        tls_dial: tls_dial(&c.tls, false, false)?,
        ..config(c)?
    })
}

/// Per-address and first-frame limits a LAN-facing mode (`filer`, `ipserver`)
/// applies unless told otherwise: a peer needs a handful of connections and
/// speaks at once, so a host holding more, or silent ones, is not a peer.
pub fn lan_config(c: &Common, a: &AccessArgs, mode: &str) -> Result<Config, String> {
    Ok(Config {
        max_conns_per_ip: a.per_ip(Some(LAN_CONNS_PER_IP)),
        handshake_timeout: a.handshake(Some(LAN_HANDSHAKE)),
        ..listen_config(c, a, mode)?
    })
}

/// A listener's identity: the certificate from `--tls-cert`/`--tls-key`, else
/// the one generated for `name` and kept in the state directory.
fn listener_identity(t: &TlsArgs, name: &str) -> Result<Identity, String> {
    match (&t.tls_cert, &t.tls_key) {
        (Some(cert), Some(key)) => trust::load_identity(cert, key),
        _ => trust::generated_identity(name),
    }
}

/// A listener's TLS with `--tls`: see [`listener_identity`].
fn tls_listen(t: &TlsArgs, name: &str, plaintext_too: bool) -> Result<Option<TlsListen>, String> {
    if !t.tls {
        return Ok(None);
    }
    let id = listener_identity(t, name)?;
    let clients = match &t.tls_client_ca {
        Some(f) => ClientAuth::Roots(Arc::new(trust::load_roots(f)?)),
        None => ClientAuth::None,
    };
    Ok(Some(TlsListen {
        config: server_config(&id, clients)?,
        plaintext_too,
        fingerprint: id.fingerprint(),
    }))
}

/// How TLS dials are verified: `--tls-insecure`, `--tls-pin`, `--tls-ca`, else
/// the system's roots; `all` when every dial uses TLS. A dialling mode
/// (`client_cert`) presents `--tls-cert` when the server asks for one. Without
/// any TLS option, `None`: a `tls://` target then uses the system's roots.
fn tls_dial(t: &TlsArgs, all: bool, client_cert: bool) -> Result<Option<TlsDial>, String> {
    let shown_cert = client_cert && t.tls_cert.is_some();
    if !all && t.tls_ca.is_none() && t.tls_pin.is_empty() && !t.tls_insecure && !shown_cert {
        return Ok(None);
    }
    let trust = if t.tls_insecure {
        Trust::Anything
    } else if !t.tls_pin.is_empty() {
        Trust::Pins(t.tls_pin.clone())
    } else if let Some(ca) = &t.tls_ca {
        Trust::Roots(Arc::new(trust::load_roots(ca)?))
    } else {
        Trust::Roots(Arc::new(system_roots()))
    };
    let id = match (&t.tls_cert, &t.tls_key) {
        (Some(cert), Some(key)) if client_cert => Some(trust::load_identity(cert, key)?),
        _ => None,
    };
    Ok(Some(TlsDial {
        config: client_config(trust, id.as_ref())?,
        all,
        insecure: t.tls_insecure,
    }))
}

/// `--max-conns-per-ip` of `filer` and `ipserver` when not given.
const LAN_CONNS_PER_IP: usize = 16;
/// `--handshake-timeout` of `filer` and `ipserver` when not given.
const LAN_HANDSHAKE: std::time::Duration = std::time::Duration::from_secs(10);
/// `--max-body` of `filer` when not given: its own frames are 256 KiB chunks.
const FILER_MAX_BODY: usize = 4 << 20;

/// How a mode's handler reports its exit status.
pub trait ExitStatus {
    /// The status to exit with once the loop has stopped.
    fn exit_code(&self) -> i32;
}

impl<M: crate::modes::Mode> ExitStatus for Session<M> {
    fn exit_code(&self) -> i32 {
        self.core.exit_code
    }
}

impl<H: ExitStatus> ExitStatus for Paced<H> {
    fn exit_code(&self) -> i32 {
        self.inner.exit_code()
    }
}

/// The front end: a prompt on a terminal, piped stdin, or the `-c` lines.
pub struct Front {
    repl: Option<Repl>,
    /// The `-c` lines, when given: run instead of reading stdin.
    commands: Option<Vec<String>>,
    /// Completion targets shared with the prompt.
    pub targets: Arc<Mutex<Vec<String>>>,
}

impl Front {
    /// A prompt when stdin and stdout are a terminal, else lines read from stdin
    /// as when piped (so `sockmod serve | tee log` typed at a terminal reads the
    /// commands typed and sends events down the pipe; the prompt would draw on
    /// stdout).
    ///
    /// With `-c` lines in `c`, those are the commands, run as piped lines that
    /// then end; stdin is left for `-f -`.
    pub fn new(mode: &'static str, c: &Common) -> Result<Self, String> {
        let targets = Arc::new(Mutex::new(Vec::new()));
        let commands = (!c.commands.is_empty()).then(|| c.commands.clone());
        let repl = if commands.is_none()
            && std::io::stdin().is_terminal()
            && std::io::stdout().is_terminal()
        {
            Some(Repl::new(mode, targets.clone())?)
        } else {
            None
        };
        Ok(Front {
            repl,
            commands,
            targets,
        })
    }

    /// True when reading piped input.
    pub fn piped(&self) -> bool {
        self.repl.is_none()
    }

    /// The state a mode's [`Session`] shares, with a renderer that writes to the
    /// right place.
    pub fn core(&mut self, c: &Common) -> Result<Core, String> {
        let sink = match &mut self.repl {
            Some(r) => r.sink()?,
            None => Box::new(StdioSink::new()),
        };
        let style = if c.json { Style::Json } else { Style::Human };
        let out = Renderer::new(style, c.body_format, c.quiet, sink);
        let completion = self.repl.as_ref().map(|_| self.targets.clone());
        let mut core = Core::new(out, completion);
        if let Some(lines) = &self.commands {
            let wants_stdin = lines.iter().any(|l| {
                crate::command::parse(l).is_ok_and(|c| c.is_some_and(|c| c.reads_stdin()))
            });
            if wants_stdin {
                core.stdin_body = read_stdin_body(c.max_queue);
            }
        }
        Ok(core)
    }

    /// Runs `node` with this front end until it stops; returns the exit status.
    pub fn run<H>(self, node: Node<H>) -> i32
    where
        H: Handler<Command = Input> + ExitStatus + Send + 'static,
    {
        let remote = node.remote();
        let signal_remote = remote.clone();
        // SIGINT and SIGTERM: the handler's `on_interrupt` stops the node cleanly.
        if let Err(e) = ctrlc::set_handler(move || signal_remote.interrupt()) {
            eprintln!("warning: cannot handle signals: {e}");
        }
        match self.repl {
            None => {
                let reader = match self.commands {
                    Some(lines) => spawn_command_lines(remote, lines),
                    None => spawn_stdin_reader(remote),
                };
                if let Err(e) = reader {
                    eprintln!("error: cannot read stdin: {}", describe(&e));
                    return 1;
                }
                match node.run() {
                    Ok(h) => h.exit_code(),
                    Err(e) => {
                        eprintln!("error: event loop failed: {}", describe(&e));
                        1
                    }
                }
            }
            Some(repl) => {
                let term = TermGuard::save();
                let spawned = std::thread::Builder::new()
                    .name("loop".into())
                    .spawn(move || {
                        let code = match node.run() {
                            Ok(h) => h.exit_code(),
                            Err(e) => {
                                eprintln!("error: event loop failed: {}", describe(&e));
                                1
                            }
                        };
                        // The prompt may still be waiting for a key: put the terminal
                        // back before leaving.
                        term.restore();
                        std::process::exit(code);
                    });
                if let Err(e) = spawned {
                    eprintln!("error: cannot start the event loop: {}", describe(&e));
                    return 1;
                }
                repl.run(&remote);
                // The loop exits the process once it has closed everything.
                loop {
                    std::thread::park();
                }
            }
        }
    }
}

/// A node running `handler`, whose reading pauses while stdout is backed up.
fn node<H: Handler>(config: Config, handler: H) -> Result<Node<Paced<H>>, String> {
    let node = Node::new(config, Paced::new(handler))
        .map_err(|e| format!("cannot start: {}", describe(&e)))?;
    crate::render::stdout::attach(&node.remote());
    Ok(node)
}

/// Reads all of stdin for `-f -` (before the loop starts, so the loop never
/// waits on it): at most `max` bytes (`--max-queue`, the largest body).
fn read_stdin_body(max: usize) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let mut body = Vec::new();
    std::io::stdin()
        .lock()
        .take(max as u64 + 1)
        .read_to_end(&mut body)
        .map_err(|e| format!("-f -: cannot read stdin: {}", describe(&e)))?;
    if body.len() > max {
        return Err(format!(
            "-f -: stdin is larger than --max-queue ({})",
            crate::render::human_size(max as u64)
        ));
    }
    Ok(body)
}

/// Hands the `-c` lines to the loop, in order, then the end of input.
fn spawn_command_lines(
    remote: crate::net::Remote<Input>,
    lines: Vec<String>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("commands".into())
        .spawn(move || {
            for l in lines {
                if remote.send(Input::Line(l)).is_err() {
                    return;
                }
            }
            let _ = remote.send(Input::Eof);
        })
}

fn listen<H: Handler>(node: &mut Node<H>, bind: &str) -> Result<(), String> {
    node.listen(bind)
        .map(|_| ())
        .map_err(|e| format!("cannot listen on {bind}: {}", describe(&e)))
}

/// Binds `bind`, or if its port is taken the next free one up (at most 100 tries);
/// returns the port bound.
fn listen_next_free<H: Handler>(node: &mut Node<H>, bind: &str) -> Result<u16, String> {
    let sa = parse_bind(bind).map_err(|e| format!("cannot listen on {bind}: {}", describe(&e)))?;
    let tries = if sa.port() == 0 { 1 } else { 100 };
    let mut last_err = None;
    for i in 0..tries {
        let Some(port) = sa.port().checked_add(i) else {
            break;
        };
        let mut at = sa;
        at.set_port(port);
        match node.listen_on(at) {
            Ok(local) => {
                if i > 0 {
                    eprintln!("port {} is taken; using {}", sa.port(), local.port());
                }
                return Ok(local.port());
            }
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => last_err = Some(e),
            Err(e) => return Err(format!("cannot listen on {at}: {}", describe(&e))),
        }
    }
    let reason = last_err.map_or_else(|| "no port left".to_string(), |e| describe(&e));
    Err(format!(
        "cannot listen on {bind} or the {} ports above it: {reason}",
        tries - 1
    ))
}

/// The file chunk size: [`CHUNK_SIZE`], or `SOCKMOD_CHUNK_SIZE` (bytes, 4 KiB to
/// 16 MiB) for benchmarking other sizes.
fn chunk_size() -> usize {
    std::env::var("SOCKMOD_CHUNK_SIZE")
        .ok()
        .and_then(|v| crate::cli::parse_size(&v).ok())
        .map_or(CHUNK_SIZE, |n| n.clamp(4 << 10, 16 << 20))
}

/// Keeps freed buffers of up to a few MiB in the heap instead of returning them
/// to the system at every free.
///
/// The loop allocates and frees a buffer per large frame (file chunks, frame
/// bodies). With glibc's defaults, buffers of 128 KiB and more are mapped fresh
/// and the heap top is trimmed back whenever 128 KiB lie free, so a steady
/// stream of such frames faults every page in anew: measured on a 1 GiB file
/// transfer, 200k page faults on the sender and 120k on the receiver, and about
/// 15% more CPU. Memory stays bounded: at most the trim threshold is kept.
fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; called before any
    // other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 4 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 16 << 20);
    }
}

/// Parses the process's arguments; a usage error is printed and the process
/// exits 2 (help and version exit 0), as `Cli::parse` does, with two of
/// clap's messages said more plainly (see [`usage_error`]).
pub fn parse_args() -> Cli {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    match <Cli as clap::Parser>::try_parse_from(&args) {
        Ok(cli) => cli,
        Err(e) => {
            let words: Vec<String> = args
                .iter()
                .map(|a| a.to_string_lossy().into_owned())
                .collect();
            match usage_error(&e, &words) {
                Some(msg) => {
                    eprintln!("error: {msg}\n\nFor more information, try '--help'.");
                    std::process::exit(2);
                }
                None => e.exit(),
            }
        }
    }
}

/// Our own text for a usage error, where clap's misleads:
///
/// - an unknown option: clap's tip to pass `--ssl` as a value (`-- --ssl`) is
///   not what anyone meant; we say `unknown option '--ssl'`, with the nearest
///   real one when clap found one;
/// - `connect HOST PORT` (netcat's form): we suggest `HOST:PORT`.
pub fn usage_error(e: &clap::Error, args: &[String]) -> Option<String> {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    let ctx_str = |k: ContextKind| match e.get(k) {
        Some(ContextValue::String(s)) => Some(s.clone()),
        Some(ContextValue::Strings(v)) => v.first().cloned(),
        _ => None,
    };
    match e.kind() {
        ErrorKind::UnknownArgument => {
            // A stray word (`serve 1 2`) is no option: clap's text is right.
            let arg = ctx_str(ContextKind::InvalidArg).filter(|a| a.starts_with('-'))?;
            let mut msg = format!("unknown option '{arg}'");
            if let Some(near) = ctx_str(ContextKind::SuggestedArg) {
                msg.push_str(&format!(" (did you mean '{near}'?)"));
            }
            Some(msg)
        }
        ErrorKind::ValueValidation => {
            let bad = ctx_str(ContextKind::InvalidValue)?;
            let at = args.iter().position(|a| *a == bad)?;
            let next = args.get(at + 1)?;
            let is_port =
                !next.is_empty() && next.len() <= 5 && next.bytes().all(|b| b.is_ascii_digit());
            if !is_port || bad.starts_with('-') || bad.contains(['[', ']']) {
                return None;
            }
            let host = if bad.contains(':') {
                // A bare IPv6 address.
                bad.parse::<std::net::Ipv6Addr>().ok()?;
                format!("[{bad}]")
            } else {
                bad.clone()
            };
            Some(format!(
                "{bad:?} {next:?} is two arguments: a server is one, HOST:PORT (try {host}:{next})"
            ))
        }
        _ => None,
    }
}

/// Runs the command line; returns the process exit status.
pub fn run(cli: Cli) -> i32 {
    tune_allocator();
    raise_nofile_limit();
    let result: Result<i32, String> = match cli.mode {
        Mode::Serve(a) => (|| {
            let mut front = Front::new(Serve::NAME, &a.common)?;
            let h = Session::new(front.core(&a.common)?, Serve);
            let mut node = node(listen_config(&a.common, &a.access, "serve")?, h)?;
            listen(&mut node, a.addr.as_deref().unwrap_or(&a.bind))?;
            Ok(front.run(node))
        })(),
        Mode::Connect(a) => (|| {
            let mut front = Front::new(Connect::NAME, &a.common)?;
            let mode = Connect::new(a.addrs.clone(), a.stay);
            let h = Session::new(front.core(&a.common)?, mode);
            let node = node(config(&a.common)?, h)?;
            Ok(front.run(node))
        })(),
        Mode::Ipserver(a) => (|| {
            let mut front = Front::new(Ipserver::NAME, &a.common)?;
            let mode = Ipserver::new(a.interval, a.alive);
            let h = Session::new(front.core(&a.common)?, mode);
            // Always able to speak TLS, so a filer's report shows its key and
            // the ipserver can hold its name for it; --tls refuses plaintext.
            let id = listener_identity(&a.common.tls, "ipserver")?;
            let secret = a.secret.secret()?;
            let config = Config {
                tls: Some(TlsListen {
                    config: server_config(&id, ClientAuth::AnyKey)?,
                    // Plaintext peers cannot prove a secret.
                    plaintext_too: !a.common.tls.tls && secret.is_none(),
                    fingerprint: id.fingerprint(),
                }),
                secret,
                ..lan_config(&a.common, &a.access, "ipserver")?
            };
            let mut node = node(config, h)?;
            listen(&mut node, a.addr.as_deref().unwrap_or(&a.bind))?;
            Ok(front.run(node))
        })(),
        Mode::Filer(a) => (|| {
            let mut front = Front::new(Filer::NAME, &a.common)?;
            let core = front.core(&a.common)?;
            // Absolute, so every path reported names the file wherever the
            // reader stands; the directory itself is made when a file arrives.
            let inbox = std::path::absolute(&a.inbox)
                .map_err(|e| format!("cannot use inbox {}: {}", a.inbox.display(), describe(&e)))?;
            // Said now rather than when the first file arrives.
            if inbox.exists() && !inbox.is_dir() {
                return Err(format!(
                    "cannot use inbox {}: not a directory",
                    inbox.display()
                ));
            }
            let cfg = FilerConfig {
                id: a.id.clone(),
                ipserver: a.ipserver.clone(),
                report_interval: a.report_interval,
                transfer: TransferConfig {
                    inbox,
                    max_file_size: a.max_file_size.map(|n| n as u64),
                    accept: match a.accept_files {
                        AcceptFiles::Ask => Policy::Ask,
                        AcceptFiles::Yes => Policy::Yes,
                        AcceptFiles::No => Policy::No,
                        AcceptFiles::Known => Policy::Known,
                    },
                    chunk_size: chunk_size(),
                    offer_timeout: a.offer_timeout,
                    transfer_timeout: a.transfer_timeout,
                    min_free: a.min_free.map(|n| n as u64),
                    keep_partial: a.keep_partial,
                },
                security: None,
            };
            // Every filer has a key: links between sockmod filers are TLS, and
            // names are bound to keys. Original peers stay plaintext on the same
            // port unless --require-encryption.
            let name = format!("filer-{}", a.id);
            let mut config = Config {
                max_body: a.common.max_body.unwrap_or(FILER_MAX_BODY),
                ..lan_config(&a.common, &a.access, &name)?
            };
            let mut cfg = cfg;
            let secret = a.secret.secret()?;
            if a.plaintext && secret.is_some() {
                return Err("--secret needs TLS: it cannot go with --plaintext".into());
            }
            config.secret = secret;
            if !a.plaintext {
                let id = listener_identity(&a.common.tls, &name)?;
                // Plaintext peers cannot prove a secret.
                let require = a.require_encryption || config.secret.is_some();
                config.tls = Some(TlsListen {
                    config: server_config(&id, ClientAuth::AnyKey)?,
                    plaintext_too: !require,
                    fingerprint: id.fingerprint(),
                });
                cfg.security = Some(FilerSecurity {
                    identity: id,
                    pins: trust::KnownPeers::load(&a.id)?,
                    require_encryption: require,
                });
            }
            let h = Session::new(core, Filer::new(cfg)?);
            let mut node = node(config, h)?;
            let port = listen_next_free(&mut node, &a.bind)?;
            node.handler().mode.set_port(port);
            Ok(front.run(node))
        })(),
        Mode::Completions { shell } => {
            crate::completions::write(shell, &mut std::io::stdout());
            Ok(0)
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    }
}
