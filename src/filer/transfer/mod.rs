//! File transfer between filers (docs/PROTOCOL.md §5): sending with flow control, receiving
//! into the inbox, failures on both sides, progress, `transfers` and `cancel`.
//!
//! The filer handler owns one [`Transfers`] and hands it the events that concern
//! files (frames, drained queues, closed connections, its timer, commands).
//!
//! - Sending: files queue per connection and go one at a time, in order; each
//!   connection is pumped on its own, so different peers are served in
//!   parallel. A chunk is read from disk only while the connection's outbound
//!   queue holds less than four chunks ([`Context::notify_drained`] wakes the
//!   pump when it falls to two), so memory stays bounded whatever the file size
//!   and link speed, and other frames (chat) wait behind at most four chunks
//!   (1 MiB).
//! - Receiving: see [`recv`]. A failure on either side ends that transfer only
//!   and is told to the other side with a `TP:cancel` frame ([`wire`]).
//! - The disk is off the loop: each file being sent has a reader thread that
//!   reads, hashes and frames it a few chunks ahead ([`send`]), and each file
//!   being received a writer thread that writes, hashes, verifies and stores it
//!   ([`recv`]); the loop only moves chunks between them and the connections.
//!   A writer more than 2 MiB behind holds its connection's reads
//!   ([`Context::hold_reads`]); workers report through the loop's waker, and
//!   [`Transfers::poll_disk`] (from `on_idle`) takes their news.
//!
//! This code keeps the facts ([`Record`]s) and says what happened through
//! [`Report`]; how that looks (lines, JSON, the `transfers` table, the progress
//! block) is up to the implementation the mode hands in, so the transfer logic
//! depends on no output code.

pub mod digest;
pub mod naming;
pub mod partial;
pub mod paths;
pub mod prefetch;
pub mod record;
pub mod recv;
pub mod send;
pub mod tree;
pub mod wire;

use crate::human::{human_size, quoted_name};
use crate::net::{ConnId, ConnInfo, Context, State, TimerId};
use crate::protocol::Message;
pub use record::{Change, Phase, Record};
use recv::{Incoming, Notify, Step};
use send::{Outgoing, check_source, wire_name};
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use wire::{Chunk, Control, Entry, Frame, Role};

/// The chunk size: bytes of file per frame.
///
/// Chosen by measurement on 1 GiB filer to filer over loopback:
/// - `CHUNKS="64KiB 256KiB 1MiB" scripts/bench_file.sh` (disk to disk, 5 runs,
///   best / median): 64 KiB 1.47 / 2.03 s, 256 KiB 1.11 / 1.80 s, 1 MiB
///   2.87 / 4.31 s (socat in the same run: 1.45 / 2.22 s);
/// - `perf stat` (tmpfs, two runs each, with the allocator keeping freed
///   buffers, see `app::tune_allocator`): sender + receiver CPU 1.66–1.79 s with
///   256 KiB, 1.77–1.97 s with 1 MiB, 2.00–2.02 s with 64 KiB (more frames,
///   writes and wake-ups).
///
/// 256 KiB also keeps a connection's queue at 1 MiB and chat latency low, and
/// stays far below every receiver's body limit.
pub const CHUNK_SIZE: usize = 256 << 10;

/// The pump keeps at most this many chunks in a connection's outbound queue,
/// and refills once it has drained to half of that.
const QUEUE_CHUNKS: usize = 4;

/// How often progress is refreshed (JSON progress events, the status block).
const TICK: Duration = Duration::from_millis(250);

/// The reason of a transfer stopped with `cancel` (on both sides).
const CANCELLED: &str = "cancelled";

/// This filer's own reason for a transfer it cut short by quitting.
const STOPPED_BY_QUIT: &str = "stopped: quitting";

/// The refusal under `--accept-files no`.
const REFUSE_ALL: &str = "refused: this filer does not accept files (--accept-files no)";

/// The refusal of a file sent without an offer where consent is needed.
const NO_OFFER: &str = "refused: the file came without an offer and this filer asks before \
     taking files (--accept-files ask; an original peer cannot ask: the receiver may run \
     with --accept-files yes)";

/// In a folder batch's staging folder: one line per file complete in it
/// (`RESUME_ID<TAB>PATH`), so a folder sent again skips them.
const DONE_LIST: &str = ".sockmod-done";

/// The lines of the done list of staging folder `staging` (read once, when
/// its batch begins; kept in memory after that).
fn read_done_list(staging: &Path) -> HashSet<String> {
    std::fs::read_to_string(staging.join(DONE_LIST))
        .map(|t| t.lines().map(str::to_string).collect())
        .unwrap_or_default()
}

/// A file of a folder batch at most this long is received without a
/// resumable part file (there is nothing to resume within one block): its
/// part file is made in its folder in staging (files made in one folder
/// would share one inode group, markedly slower to allocate from on ext4 after
/// many deletions), and only the done list remembers it; what an earlier try
/// left unverified is removed when the batch begins again.
const SMALL_FILE: u64 = digest::BLOCK;

/// Finished transfers kept for `transfers`.
const KEEP_FINISHED: usize = 1000;

/// How long a sender waits for a new connection's peer to name itself (a
/// sockmod filer sends its identity frame first, and is then offered each
/// file) before sending files to it without an offer. Such a file is `done`
/// only on the receiver's confirmation, or once the peer is known to be
/// original; a sockmod receiver that wants an offer refuses it.
const IDENTITY_WAIT: Duration = Duration::from_secs(5);

/// The default `--offer-timeout` and `--transfer-timeout`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);

/// The default `--min-free`: 1 GiB, or 5% of a disk smaller than 20 GiB.
const DEFAULT_MIN_FREE: u64 = 1 << 30;

/// What a filer does with the files offered to it (`--accept-files`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// Each offer waits for `accept tN` or `refuse tN`.
    Ask,
    /// Every file is taken (within `--max-file-size` and `--min-free`).
    Yes,
    /// Every file is refused.
    No,
    /// Files from pinned peers (a key verified against a pin) are taken; the
    /// others are asked about.
    Known,
}

/// Transfer settings from the command line.
#[derive(Debug, Clone)]
pub struct TransferConfig {
    /// Where received files go (created if missing).
    pub inbox: PathBuf,
    /// Refuse incoming files larger than this.
    pub max_file_size: Option<u64>,
    /// Which incoming files are taken.
    pub accept: Policy,
    /// Bytes per chunk when sending.
    pub chunk_size: usize,
    /// An offer not answered within this is refused.
    pub offer_timeout: Duration,
    /// An incoming file that moves no byte for this long fails.
    pub transfer_timeout: Duration,
    /// Free space to keep on the inbox's disk; `None`: [`DEFAULT_MIN_FREE`], or
    /// 5% of a smaller disk.
    pub min_free: Option<u64>,
    /// Resumable part files untouched this long are deleted at start.
    pub keep_partial: Duration,
}

impl Default for TransferConfig {
    fn default() -> Self {
        TransferConfig {
            inbox: PathBuf::from("inbox"),
            max_file_size: None,
            accept: Policy::Ask,
            chunk_size: CHUNK_SIZE,
            offer_timeout: DEFAULT_TIMEOUT,
            transfer_timeout: DEFAULT_TIMEOUT,
            min_free: None,
            keep_partial: partial::DEFAULT_KEEP,
        }
    }
}

/// Where transfers tell what happens; the mode hands in its output, which
/// draws these facts.
pub trait Report {
    /// Transfer `r` has just changed (`peer_name` as [`Listed::peer_name`]).
    fn transfer(&mut self, r: &Record, change: Change, peer_name: Option<&str>, now: Instant);
    /// Every file of a `sendfile` with several files has ended.
    fn batch(&mut self, summary: &BatchSummary);
    /// The answer to `transfers`: every record kept, by number.
    fn transfers(&mut self, all: &[Listed<'_>], now: Instant);
    /// The transfers moving bytes or awaiting confirmation, for the progress
    /// block (empty clears it). Called only when [`Report::shows_progress`].
    fn progress(&mut self, active: &[Listed<'_>]);
    /// A notice about no transfer in particular (an ignored frame).
    fn notice(&mut self, text: &str);
    /// Writes out what is pending. The loop flushes output when idle, which a
    /// busy transfer may keep it from being for a long time.
    fn flush(&mut self);
    /// True when [`Change::Progress`] is wanted (JSON output); otherwise only
    /// the other changes are reported.
    fn wants_progress_events(&self) -> bool;
    /// True when there is a progress block to keep up to date (human output on
    /// a terminal).
    fn shows_progress(&self) -> bool;
}

/// A record with its peer's name as it stands.
#[derive(Debug, Clone, Copy)]
pub struct Listed<'a> {
    /// The transfer.
    pub record: &'a Record,
    /// The peer's current name, else the last one seen (the name goes with
    /// the connection when it closes); `None` if it never named itself.
    pub peer_name: Option<&'a str>,
}

/// What the transfer code needs from the mode: where to report, and peer names.
pub struct Env<'a> {
    /// Where events go.
    pub out: &'a mut dyn Report,
    /// Peer names by connection (from their identity frames, or the roster
    /// name a connection was dialled by).
    pub names: &'a HashMap<ConnId, String>,
    /// Connections whose peer sent an identity frame: sockmod filers, which
    /// confirm every file they store (`TP:received`). Original peers do not.
    pub identified: &'a HashSet<ConnId>,
    /// Connections known to reach an original peer without it having spoken:
    /// dialled by the roster name of a peer the ipserver lists without a key.
    pub originals: &'a HashSet<ConnId>,
    /// Connections whose peer's name was verified against a pinned key
    /// (`--accept-files known` takes their files without asking).
    pub pinned: &'a HashSet<ConnId>,
}

impl Env<'_> {
    /// True when the peer on `conn` is known to be an original one, which
    /// never confirms a file: it never identified itself, and it either sent a
    /// message (`msgs_in`) or was dialled as a keyless roster peer.
    fn is_original(&self, conn: ConnId, msgs_in: u64) -> bool {
        !self.identified.contains(&conn) && (msgs_in > 0 || self.originals.contains(&conn))
    }
}

/// A file checked for sending: its path, announced name and size.
#[derive(Debug, Clone)]
pub struct Checked {
    path: PathBuf,
    name: String,
    size: u64,
    /// A file or empty folder of a folder batch (§5.7).
    entry: Option<Entry>,
}

/// A file offered to us, waiting for `accept` or `refuse`.
struct Pending {
    conn: ConnId,
    name: String,
    total: u64,
    /// The sender's number for it (`T`), said back in the answer.
    their_id: Option<u64>,
    /// The resume id it was offered with (`R`), when usable.
    resume: Option<String>,
    since: Instant,
    /// A file of a folder batch: its batch's key and checked path parts.
    entry: Option<(BatchKey, Vec<String>)>,
    /// Accepted, its part file being read back and checked on a worker
    /// ([`Transfers::poll_disk`] answers once it is).
    opening: bool,
}

/// Part files read back off the loop: (transfer, the file ready to receive
/// or why not, where a folder's file is stored).
type Opened = Vec<(u64, Result<KeptPart, String>, Option<(PathBuf, String)>)>;

/// A part file read back by a worker: kept (suspended, not removed) if it is
/// dropped before the loop takes it, as when the filer quits meanwhile.
struct KeptPart(Option<Incoming>);

impl KeptPart {
    fn take(mut self) -> Result<Incoming, String> {
        self.0
            .take()
            .ok_or_else(|| "the part file was already taken".into())
    }
}

impl Drop for KeptPart {
    fn drop(&mut self) {
        if let Some(inc) = self.0.as_mut() {
            inc.suspend();
        }
    }
}

/// A folder batch being received, by connection and batch id (`B`).
type BatchKey = (ConnId, String);

/// A folder batch being received (§5.7): built under
/// `INBOX/.sockmod-staging/B/`, moved into the inbox once complete.
struct RecvBatch {
    /// Its record.
    id: u64,
    /// The folder's name (the first component of every path).
    top: String,
    /// `INBOX/.sockmod-staging/B`.
    staging: PathBuf,
    files: u64,
    dirs_total: u64,
    /// Empty folders announced (checked path parts).
    dirs: HashSet<Vec<String>>,
    /// Files complete in staging.
    done: u64,
    /// The user (or the policy) took it: later files need no answer.
    accepted: bool,
    /// The done list's lines (`RESUME_ID<TAB>PATH`): files complete in
    /// staging from this or an earlier try.
    held: HashSet<String>,
    /// The done list, open for appending once a file completes.
    done_list: Option<std::fs::File>,
    /// Folders made under staging so far (not made again for each file).
    made: HashSet<Vec<String>>,
}

impl RecvBatch {
    /// True when staging holds `file` (`rel`) complete, as received with
    /// resume id `rid` and `total` bytes long.
    fn holds(&self, file: &Path, rid: &str, rel: &str, total: u64) -> bool {
        self.held.contains(&format!("{rid}\t{rel}"))
            && std::fs::symlink_metadata(file)
                .is_ok_and(|m| m.file_type().is_file() && m.len() == total)
    }

    /// Notes that `rel` is complete, received with resume id `rid`.
    fn note_held(&mut self, rid: &str, rel: &str) {
        use std::io::Write;
        if self.done_list.is_none() {
            self.done_list = std::fs::OpenOptions::new()
                .append(true)
                .create(true)
                .open(self.staging.join(DONE_LIST))
                .ok();
        }
        let line = format!("{rid}\t{rel}");
        if let Some(f) = self.done_list.as_mut() {
            let _ = writeln!(f, "{line}");
        }
        self.held.insert(line);
    }

    /// Makes the folders `dirs` of a file under staging (once each) and
    /// returns the innermost.
    fn make_dirs(&mut self, dirs: &[String]) -> std::io::Result<PathBuf> {
        let mut path = self.staging.clone();
        if self.made.contains(dirs) {
            path.extend(dirs);
            return Ok(path);
        }
        std::fs::create_dir_all(&self.staging)?;
        let parts: Vec<&str> = dirs.iter().map(String::as_str).collect();
        let made = naming::make_dirs(&self.staging, &parts)?;
        self.made.insert(dirs.to_vec());
        Ok(made)
    }
}

/// A file whose sending to `peer` was cut short (a dropped connection, or
/// the receiver quit) after the receiver took its offer with a resume id:
/// sent again, by name, whenever the peer is reachable and no try is under
/// way, until `until` ([`Transfers::due_retries`]).
struct Retry {
    peer: String,
    file: Checked,
    until: Instant,
    /// The transfer of the latest try.
    attempt: Option<u64>,
}

/// The files of one `sendfile` with several files, for its summary line.
struct Batch {
    ids: Vec<u64>,
}

/// What a batch came to, once every file in it ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchSummary {
    /// Files in the batch (over every target).
    pub files: usize,
    /// Files delivered.
    pub sent: usize,
    /// Files that failed (cancelled ones included).
    pub failed: usize,
    /// Bytes delivered.
    pub bytes: u64,
}

/// A file waiting for its turn on a connection.
struct Waiting {
    id: u64,
    path: PathBuf,
    name: String,
    entry: Option<Entry>,
    /// The size when it was checked.
    size: u64,
}

/// A file sent in full, not yet known to be complete on the other side.
struct Unconfirmed {
    id: u64,
    name: String,
    total: u64,
    /// For peers that do not confirm: done once the connection has written
    /// this many bytes in total.
    written_at: u64,
}

/// The sending side of one connection.
#[derive(Default)]
struct SendQueue {
    waiting: VecDeque<Waiting>,
    active: Option<Outgoing>,
    unconfirmed: VecDeque<Unconfirmed>,
    /// Folder batches (`B`) the receiver took: their small files go with
    /// `go:yes`, their chunk right after the offer (§5.7).
    taken: HashSet<String>,
}

impl SendQueue {
    fn is_idle(&self) -> bool {
        self.waiting.is_empty() && self.active.is_none() && self.unconfirmed.is_empty()
    }
}

/// The receiving side of one connection.
enum RecvState {
    /// Between files.
    Receiving(Box<Incoming>),
    /// The rest of a file we gave up on is dropped as it arrives.
    Discarding { name: String, total: u64 },
}

/// Every transfer of this filer.
pub struct Transfers {
    cfg: TransferConfig,
    next_id: u64,
    records: BTreeMap<u64, Record>,
    finished: VecDeque<u64>,
    sends: HashMap<ConnId, SendQueue>,
    recvs: HashMap<ConnId, RecvState>,
    /// The progress timer while one is set (transfers are running).
    tick: Option<TimerId>,
    /// Files this filer was asked to send that failed (not counting `cancel`).
    send_failures: u64,
    /// Some finished records were forgotten (over [`KEEP_FINISHED`]): a number
    /// missing from `records` may then have been used.
    pruned: bool,
    /// `sendfile`s of several files not yet ended.
    batches: Vec<Batch>,
    /// Offers waiting for an answer, by transfer number.
    offers: BTreeMap<u64, Pending>,
    /// Sends cut short, to resume when their peer is back.
    retries: Vec<Retry>,
    /// Folder batches being received.
    rbatches: HashMap<BatchKey, RecvBatch>,
    /// Files being received into a folder batch: their batch and path parts.
    rchild: HashMap<u64, (BatchKey, Vec<String>)>,
    /// Folder batches (their records) with files not yet ended: `(ended,
    /// first failure)`.
    open_batches: HashMap<u64, (u64, Option<String>)>,
    /// What the writers of received files report to.
    notify: Arc<Notify>,
    /// Received files whose last chunk went to their writer, waiting for its
    /// outcome, with their connection.
    finishing: HashMap<u64, (ConnId, Box<Incoming>)>,
    /// Connections whose reads are held while their file's writer catches up.
    held: HashSet<ConnId>,
    /// Connections waiting for their file's reader.
    starved: HashSet<ConnId>,
    /// Small files of folders read ahead.
    prefetch: prefetch::Prefetch,
    /// Block digests of files sent with a resume id, for resuming them.
    digests: send::Digests,
    /// Part files read back and checked by workers, ready to answer.
    opened: Arc<std::sync::Mutex<Opened>>,
}

/// The peer's name for a record: the current one, else the last one seen (the
/// name goes with the connection when it closes).
fn peer_name<'a>(r: &'a Record, names: &'a HashMap<ConnId, String>) -> Option<&'a str> {
    names
        .get(&r.conn)
        .or(r.peer_name.as_ref())
        .map(String::as_str)
}

/// A reason the peer gave, said to be the `role`'s (`sender: disk full`),
/// unless it already says so (`sender quit`).
fn said_by(role: &str, reason: &str) -> String {
    if reason.starts_with(role) {
        reason.to_string()
    } else {
        format!("{role}: {reason}")
    }
}

fn matches(name: &str, total: u64, c: &Control<'_>) -> bool {
    name == c.name && c.total.is_none_or(|t| t == total)
}

impl Transfers {
    /// No transfers yet.
    pub fn new(cfg: TransferConfig) -> Self {
        Transfers {
            cfg,
            next_id: 1,
            records: BTreeMap::new(),
            finished: VecDeque::new(),
            sends: HashMap::new(),
            recvs: HashMap::new(),
            tick: None,
            send_failures: 0,
            pruned: false,
            batches: Vec::new(),
            offers: BTreeMap::new(),
            retries: Vec::new(),
            rbatches: HashMap::new(),
            rchild: HashMap::new(),
            open_batches: HashMap::new(),
            notify: Arc::new(Notify::default()),
            finishing: HashMap::new(),
            held: HashSet::new(),
            starved: HashSet::new(),
            prefetch: prefetch::Prefetch::default(),
            digests: send::Digests::default(),
            opened: Arc::default(),
        }
    }

    fn new_record(
        &mut self,
        ctx: &Context<'_>,
        sending: bool,
        conn: ConnId,
        name: &str,
        total: u64,
    ) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.insert_record(ctx, id, sending, conn, name, total)
    }

    /// A record for a file arriving, numbered as its sender numbered it
    /// (`want`, the chunk's `T`) when that number was never used here, so both
    /// sides call it alike; else the next number.
    fn new_recv_record(
        &mut self,
        ctx: &Context<'_>,
        conn: ConnId,
        name: &str,
        total: u64,
        want: Option<u64>,
    ) -> u64 {
        match want {
            Some(w)
                if w > 0
                    && !self.records.contains_key(&w)
                    && (w >= self.next_id || !self.pruned) =>
            {
                self.next_id = self.next_id.max(w.saturating_add(1));
                self.insert_record(ctx, w, false, conn, name, total)
            }
            _ => self.new_record(ctx, false, conn, name, total),
        }
    }

    fn insert_record(
        &mut self,
        ctx: &Context<'_>,
        id: u64,
        sending: bool,
        conn: ConnId,
        name: &str,
        total: u64,
    ) -> u64 {
        let addr = ctx
            .info(conn)
            .map_or_else(String::new, |i| i.addr.to_string());
        self.records.insert(
            id,
            Record::new(id, sending, conn, addr, name.to_string(), total),
        );
        id
    }

    fn emit(&self, env: &mut Env<'_>, id: u64, change: Change) {
        if let Some(r) = self.records.get(&id)
            && r.parent.is_none()
        {
            let name = peer_name(r, env.names);
            env.out.transfer(r, change, name, Instant::now());
        }
    }

    /// Every record with its peer's name, by number.
    fn listed<'a>(
        &'a self,
        names: &'a HashMap<ConnId, String>,
    ) -> impl Iterator<Item = Listed<'a>> {
        self.records.values().map(|r| Listed {
            record: r,
            peer_name: peer_name(r, names),
        })
    }

    fn start(&mut self, ctx: &mut Context<'_>, env: &mut Env<'_>, id: u64, total: u64) {
        if let Some(r) = self.records.get_mut(&id) {
            r.phase = Phase::Active;
            r.total = total;
            r.started = Some(Instant::now());
            if let Some(n) = env.names.get(&r.conn) {
                r.peer_name = Some(n.clone());
            }
        }
        self.emit(env, id, Change::Started);
        // The loop flushes output when idle, which a busy transfer may keep it
        // from being for a long time: transfer events go out at once.
        env.out.flush();
        self.ensure_tick(ctx);
    }

    /// Sets the progress timer unless it is set: it also drives offer and
    /// stall timeouts, and files waiting for their peer to name itself.
    fn ensure_tick(&mut self, ctx: &mut Context<'_>) {
        if self.tick.is_none() {
            self.tick = Some(ctx.set_timer(TICK));
        }
    }

    /// Ends a transfer: `Ok(path)` done (path of a received file), `Err` failed.
    fn finish(&mut self, env: &mut Env<'_>, id: u64, result: Result<Option<PathBuf>, String>) {
        let Some(r) = self.records.get_mut(&id) else {
            return;
        };
        if r.phase.is_final() {
            return;
        }
        let now = Instant::now();
        r.ended = Some(now);
        if let Some(n) = env.names.get(&r.conn) {
            r.peer_name = Some(n.clone());
        }
        let change = match result {
            Ok(path) => {
                r.phase = Phase::Done;
                r.bytes = r.total;
                if let Some(p) = path {
                    r.path = Some(p.display().to_string());
                }
                Change::Done
            }
            Err(reason) => {
                if r.sending && reason != CANCELLED {
                    self.send_failures += 1;
                }
                r.phase = Phase::Failed;
                r.reason = Some(reason);
                Change::Failed
            }
        };
        let parent = r.parent;
        let failure = r.reason.clone();
        self.emit(env, id, change);
        if let Some(p) = parent {
            self.child_ended(env, p, failure);
        }
        self.end_batches(env);
        self.finished.push_back(id);
        while self.finished.len() > KEEP_FINISHED {
            if let Some(old) = self.finished.pop_front() {
                self.records.remove(&old);
                self.pruned = true;
            }
        }
        self.refresh_status(env);
        env.out.flush();
    }

    /// Reports the batches whose files have all ended.
    fn end_batches(&mut self, env: &mut Env<'_>) {
        let records = &self.records;
        let ended = |id: &u64| records.get(id).is_none_or(|r| r.phase.is_final());
        let mut i = 0;
        while i < self.batches.len() {
            if !self.batches[i].ids.iter().all(ended) {
                i += 1;
                continue;
            }
            let b = self.batches.swap_remove(i);
            let mut s = BatchSummary {
                files: b.ids.len(),
                sent: 0,
                failed: 0,
                bytes: 0,
            };
            for r in b.ids.iter().filter_map(|id| self.records.get(id)) {
                if r.phase == Phase::Done {
                    s.sent += 1;
                    s.bytes += r.total;
                } else {
                    s.failed += 1;
                }
            }
            env.out.batch(&s);
        }
    }

    fn set_bytes(&mut self, id: u64, bytes: u64) {
        let Some(r) = self.records.get_mut(&id) else {
            return;
        };
        let (old, parent) = (r.bytes, r.parent);
        r.bytes = bytes;
        if let Some(p) = parent.and_then(|p| self.records.get_mut(&p)) {
            p.bytes = (p.bytes + bytes).saturating_sub(old).min(p.total);
        }
    }

    /// A file of folder batch `p` ended (`failure` when it failed). A sent
    /// batch ends with its last file (failed if any did, the files still
    /// queued dropped at the first failure); a received one fails with its
    /// first failed file and is done only once moved into place.
    fn child_ended(&mut self, env: &mut Env<'_>, p: u64, failure: Option<String>) {
        let Some(r) = self.records.get_mut(&p) else {
            return;
        };
        if r.phase.is_final() {
            return;
        }
        let sending = r.sending;
        if failure.is_none()
            && let Some((done, _)) = r.files.as_mut()
        {
            *done += 1;
        }
        let total = r.files.map_or(0, |f| f.1);
        let conn = r.conn;
        let e = self.open_batches.entry(p).or_insert((0, None));
        e.0 += 1;
        if e.1.is_none() {
            e.1.clone_from(&failure);
        }
        let (ended, first) = (e.0, e.1.clone());
        if !sending {
            if let Some(why) = failure {
                self.open_batches.remove(&p);
                self.rbatches.retain(|_, b| b.id != p);
                self.finish(env, p, Err(why));
            }
            return;
        }
        if let Some(why) = &first {
            // The rest of the folder is not sent.
            let mut dropped = Vec::new();
            if let Some(q) = self.sends.get_mut(&conn) {
                let records = &self.records;
                q.waiting.retain(|w| {
                    let mine = w.id == 0 && w.entry.is_some()
                        || records.get(&w.id).is_some_and(|c| c.parent == Some(p));
                    if mine && w.id != 0 {
                        dropped.push(w.id);
                    }
                    !mine
                });
            }
            if ended + dropped.len() as u64 >= total || !dropped.is_empty() {
                self.open_batches.remove(&p);
                let why = why.clone();
                for id in dropped {
                    if let Some(c) = self.records.get_mut(&id) {
                        c.phase = Phase::Failed;
                        c.reason = Some("not sent: the folder failed".into());
                        c.ended = Some(Instant::now());
                    }
                }
                self.finish(env, p, Err(why));
                return;
            }
        }
        if ended >= total {
            self.open_batches.remove(&p);
            match first {
                None => self.finish(env, p, Ok(None)),
                Some(why) => self.finish(env, p, Err(why)),
            }
        }
    }

    // ----------------------------------------------------------------------
    // Commands
    // ----------------------------------------------------------------------

    /// `sendfile`'s paths, before anything else is done: patterns expanded
    /// ([`paths::expand`]) and every file checked. `Err` when one cannot be
    /// sent (missing, unreadable, a directory) or a pattern matches nothing.
    ///
    /// A folder is walked ([`tree::walk`]): its files and empty folders make
    /// a folder batch (§5.7); the notices (one per symlink or special file
    /// skipped) come back with the files.
    pub fn check_files(args: &[PathBuf]) -> Result<(Vec<Checked>, Vec<String>), String> {
        let paths = paths::expand(args)?;
        let mut files = Vec::with_capacity(paths.len());
        let mut notices = Vec::new();
        for p in paths {
            if std::fs::metadata(&p).is_ok_and(|m| m.is_dir()) {
                let w = tree::walk(&p)?;
                notices.extend(w.skipped);
                let batch = tree::batch_id(&p);
                let bytes = w.files.iter().map(|f| f.2).sum();
                let entry = |path: String| Entry {
                    path,
                    batch: batch.clone(),
                    files: w.files.len() as u64,
                    dirs: w.dirs.len() as u64,
                    bytes,
                };
                for d in &w.dirs {
                    files.push(Checked {
                        path: p.clone(),
                        name: wire_name(Path::new(d.trim_end_matches('/'))),
                        size: 0,
                        entry: Some(entry(d.clone())),
                    });
                }
                for (path, rel, size) in &w.files {
                    files.push(Checked {
                        path: path.clone(),
                        name: wire_name(path),
                        size: *size,
                        entry: Some(entry(rel.clone())),
                    });
                }
                continue;
            }
            let size = check_source(&p)?;
            let name = wire_name(&p);
            files.push(Checked {
                path: p,
                name,
                size,
                entry: None,
            });
        }
        Ok((files, notices))
    }

    /// `sendfile`: queues every checked file ([`Transfers::check_files`]) for
    /// every connection. Several files make a batch, which ends with a
    /// summary ([`Report::batch`]).
    pub fn send_files(
        &mut self,
        ctx: &mut Context<'_>,
        env: &mut Env<'_>,
        conns: &[ConnId],
        files: &[Checked],
    ) -> Result<(), String> {
        // Sent again by hand: no longer waited for by a retry.
        for conn in conns {
            if let Some(peer) = env.names.get(conn) {
                self.retries
                    .retain(|r| &r.peer != peer || !files.iter().any(|f| f.path == r.file.path));
            }
        }
        self.queue_files(ctx, env, conns, files)
    }

    fn queue_files(
        &mut self,
        ctx: &mut Context<'_>,
        env: &mut Env<'_>,
        conns: &[ConnId],
        files: &[Checked],
    ) -> Result<(), String> {
        let mut batch = Vec::new();
        for &conn in conns {
            // Folder batches: one record each, by batch id.
            let mut parents: HashMap<&str, u64> = HashMap::new();
            for Checked {
                path,
                name,
                size,
                entry,
            } in files
            {
                let parent = match entry {
                    None => None,
                    Some(e) => Some(match parents.get(e.batch.as_str()) {
                        Some(&p) => p,
                        None => {
                            let top = e.path.split('/').next().unwrap_or("folder");
                            let p = self.new_record(ctx, true, conn, top, e.bytes);
                            if let Some(r) = self.records.get_mut(&p) {
                                r.files = Some((0, e.files));
                                let dir = if e.path.ends_with('/') {
                                    path.clone()
                                } else {
                                    path.ancestors()
                                        .nth(e.path.matches('/').count())
                                        .map_or_else(|| path.clone(), Path::to_path_buf)
                                };
                                r.path = Some(dir.display().to_string());
                            }
                            self.start(ctx, env, p, e.bytes);
                            if e.files == 0 {
                                self.open_batches.insert(p, (0, None));
                            }
                            parents.insert(&e.batch, p);
                            p
                        }
                    }),
                };
                if entry.as_ref().is_some_and(|e| e.path.ends_with('/')) {
                    // An empty folder: a `TP:dir` frame, no record.
                    self.sends
                        .entry(conn)
                        .or_default()
                        .waiting
                        .push_back(Waiting {
                            id: 0,
                            path: path.clone(),
                            name: name.clone(),
                            entry: entry.clone(),
                            size: 0,
                        });
                    continue;
                }
                let id = self.new_record(ctx, true, conn, name, *size);
                if let Some(r) = self.records.get_mut(&id) {
                    r.path = Some(path.display().to_string());
                    r.parent = parent;
                }
                self.sends
                    .entry(conn)
                    .or_default()
                    .waiting
                    .push_back(Waiting {
                        id,
                        path: path.clone(),
                        name: name.clone(),
                        entry: entry.clone(),
                        size: *size,
                    });
                if parent.is_none() {
                    batch.push(id);
                }
            }
            // A folder with no file at all ends once its folders are sent.
            let empty: Vec<u64> = parents
                .values()
                .copied()
                .filter(|p| self.records.get(p).and_then(|r| r.files) == Some((0, 0)))
                .collect();
            for p in empty {
                self.open_batches.remove(&p);
                self.finish(env, p, Ok(None));
            }
        }
        if batch.len() > 1 {
            self.batches.push(Batch { ids: batch });
        }
        self.ensure_tick(ctx);
        for &conn in conns {
            self.pump(ctx, env, conn);
        }
        Ok(())
    }

    /// Why received files could not be stored, if they could not (checked
    /// at start, so the user hears of it before a file is refused).
    pub fn inbox_problem(&self) -> Option<String> {
        if self.cfg.accept == Policy::No {
            return None;
        }
        recv::inbox_problem(&self.cfg.inbox)
    }

    /// Deletes resumable part files, and the staging folders of folders cut
    /// short, untouched for `--keep-partial`; returns how many part files and
    /// staging folders were deleted.
    pub fn expire_partials(&self) -> usize {
        partial::expire(&self.cfg.inbox, self.cfg.keep_partial)
            + tree::expire_staging(&self.cfg.inbox, self.cfg.keep_partial)
    }

    /// `transfers`: every record kept, to the report.
    ///
    /// The files of a folder batch are listed through it (one line), unless
    /// `expand` names the batch: then its files are listed after it.
    pub fn list(&self, env: &mut Env<'_>, expand: Option<u64>) {
        let all: Vec<Listed<'_>> = self
            .listed(env.names)
            .filter(|l| {
                l.record.parent.is_none() || (expand.is_some() && l.record.parent == expand)
            })
            .filter(|l| expand.is_none_or(|e| l.record.id == e || l.record.parent == Some(e)))
            .collect();
        env.out.transfers(&all, Instant::now());
    }

    /// `cancel N`: stops a transfer on both sides.
    pub fn cancel(
        &mut self,
        ctx: &mut Context<'_>,
        env: &mut Env<'_>,
        id: u64,
    ) -> Result<(), String> {
        let last = self.next_id - 1;
        let pruned = self.pruned;
        let r = self.records.get(&id).ok_or_else(|| match last {
            0 => format!("cannot cancel transfer t{id}: there are no transfers yet"),
            _ if id == 0 || id > last || !pruned => format!(
                "cannot cancel transfer t{id}: no such transfer (the last one is t{last}; see `transfers`)"
            ),
            _ => format!("cannot cancel transfer t{id}: it ended long ago"),
        })?;
        let (conn, sending, phase) = (r.conn, r.sending, r.phase);
        if r.files.is_some() && !phase.is_final() {
            return self.cancel_batch(ctx, env, id);
        }
        match (phase, sending) {
            (Phase::Done, _) => Err(format!(
                "cannot cancel transfer t{id}: it has already finished ({} {} {})",
                quoted_name(&r.name),
                if sending { "sent to" } else { "received from" },
                r.who(peer_name(r, env.names))
            )),
            (Phase::Failed, _) => Err(format!(
                "cannot cancel transfer t{id}: it has already failed ({})",
                r.reason.as_deref().unwrap_or("unknown reason")
            )),
            (Phase::Confirming, _) => Err(format!(
                "cannot cancel transfer t{id}: it is already sent in full and waits for the \
                 receiver to confirm"
            )),
            (Phase::Offered, false) => {
                self.refuse_offer(ctx, env, id, CANCELLED.into());
                Ok(())
            }
            (Phase::Queued, _) => {
                if let Some(q) = self.sends.get_mut(&conn) {
                    q.waiting.retain(|w| w.id != id);
                }
                self.finish(env, id, Err(CANCELLED.into()));
                Ok(())
            }
            (_, true) => {
                let q = self.sends.get_mut(&conn);
                if let Some(a) = q.and_then(|q| q.active.take_if(|a| a.id == id)) {
                    Self::stop_sending(ctx, conn, &a, CANCELLED);
                }
                self.finish(env, id, Err(CANCELLED.into()));
                self.pump(ctx, env, conn);
                Ok(())
            }
            (_, false) => {
                if let Some(RecvState::Receiving(inc)) = self.recvs.get(&conn)
                    && inc.id == id
                {
                    let (name, total) = (inc.name.clone(), inc.total);
                    Self::tell(ctx, conn, &name, total, Role::Receiver, CANCELLED);
                    // Dropping the Incoming removes its part file.
                    self.recvs
                        .insert(conn, RecvState::Discarding { name, total });
                }
                self.finish(env, id, Err(CANCELLED.into()));
                Ok(())
            }
        }
    }

    /// `cancel N` of a folder batch: its file under way is cancelled (which
    /// tells the peer), those queued dropped, and the batch fails.
    fn cancel_batch(
        &mut self,
        ctx: &mut Context<'_>,
        env: &mut Env<'_>,
        id: u64,
    ) -> Result<(), String> {
        let kids: Vec<u64> = self
            .records
            .values()
            .filter(|r| r.parent == Some(id) && !r.phase.is_final())
            .map(|r| r.id)
            .collect();
        // The batch fails first, so its files ending do not end it again.
        self.open_batches.remove(&id);
        self.rbatches.retain(|_, b| b.id != id);
        self.finish(env, id, Err(CANCELLED.into()));
        for k in kids {
            let _ = self.cancel(ctx, env, k);
        }
        Ok(())
    }

    /// Outgoing transfers not yet ended: queued, active, or sent in full and
    /// waiting for the receiver's confirmation (what `quit` waits for).
    pub fn sends_pending(&self) -> usize {
        self.records
            .values()
            .filter(|r| r.sending && !r.phase.is_final())
            .count()
    }

    /// True once a file this filer was asked to send has failed (a `cancel`
    /// does not count): piped mode then exits 1.
    pub fn any_send_failed(&self) -> bool {
        self.send_failures > 0
    }

    /// Stops every transfer at once because this filer is quitting. Each peer
    /// with a file in flight is told with a `TP:cancel` frame (reason
    /// [`wire::SENDER_QUIT`] or [`wire::RECEIVER_QUIT`]), queued before the node
    /// closes, so it reports a clear reason rather than a closed connection;
    /// here they fail as `stopped: quitting`, and files not yet started as
    /// `not sent: quitting`. Files already sent in full are left to finish as
    /// the queues flush.
    pub fn stop_all(&mut self, ctx: &mut Context<'_>, env: &mut Env<'_>) {
        let mut conns: Vec<ConnId> = self.sends.keys().copied().collect();
        conns.sort_unstable();
        for conn in conns {
            let why = [STOPPED_BY_QUIT, "not sent: quitting"];
            self.drop_sends(ctx, env, conn, wire::SENDER_QUIT, why);
        }
        let offered: Vec<u64> = self.offers.keys().copied().collect();
        for id in offered {
            if let Some(p) = self.offers.remove(&id) {
                let h =
                    wire::answer_header(&p.name, p.total, p.their_id, Some(wire::RECEIVER_QUIT));
                let _ = ctx.send(p.conn, &h, &[]);
                self.finish(env, id, Err(STOPPED_BY_QUIT.into()));
            }
        }
        let mut conns: Vec<ConnId> = self.recvs.keys().copied().collect();
        conns.sort_unstable();
        for conn in conns {
            if let Some(RecvState::Receiving(inc)) = self.recvs.get_mut(&conn) {
                let (id, name, total) = (inc.id, inc.name.clone(), inc.total);
                Self::tell(ctx, conn, &name, total, Role::Receiver, wire::RECEIVER_QUIT);
                // A resumable part file is kept for the next run; any other
                // is removed. What still arrives of it is dropped quietly.
                inc.suspend();
                self.recvs
                    .insert(conn, RecvState::Discarding { name, total });
                self.finish(env, id, Err(STOPPED_BY_QUIT.into()));
            }
        }
    }

    // ----------------------------------------------------------------------
    // Sending
    // ----------------------------------------------------------------------

    /// Queues chunks on `conn` while its queue has room; starts the next file
    /// when one ends.
    fn pump(&mut self, ctx: &mut Context<'_>, env: &mut Env<'_>, conn: ConnId) {
        let chunk = self.cfg.chunk_size.max(1);
        let (high, low) = (QUEUE_CHUNKS * chunk, QUEUE_CHUNKS / 2 * chunk);
        if ctx.is_stopping() {
            // Quitting: what was stopped stays stopped while the queues flush.
            return;
        }
        loop {
            match ctx.info(conn).map(|i| i.state) {
                Some(State::Open) => {}
                // Files wait for the dial to finish (`on_connected`); a closing
                // or vanished connection is handled by `on_closed`.
                _ => return,
            }
            let Some(q) = self.sends.get_mut(&conn) else {
                return;
            };
            if q.active.is_none() {
                if q.waiting.is_empty() {
                    break;
                }
                // A sockmod peer (it named itself) is offered each file first;
                // a peer known to be original gets it straight away; any other
                // waits to be known (checked on each tick), for at most
                // IDENTITY_WAIT.
                let info = ctx.info(conn);
                let msgs_in = info.map_or(0, |i| i.msgs_in);
                let waited = info.is_some_and(|i| i.since.elapsed() >= IDENTITY_WAIT);
                let offer = env.identified.contains(&conn);
                if !offer && !env.is_original(conn, msgs_in) && !waited {
                    break;
                }
                if offer {
                    // The small files of folders coming next are read ahead.
                    let mut asked = self.prefetch.pending();
                    for w in q.waiting.iter().take(2 * prefetch::WINDOW) {
                        if asked >= prefetch::WINDOW {
                            break;
                        }
                        let small = w.id != 0 && w.entry.is_some() && w.size <= prefetch::SMALL;
                        if small
                            && !self.prefetch.asked(w.id)
                            && self.prefetch.ask(
                                w.id,
                                w.path.clone(),
                                w.name.clone(),
                                w.entry.clone(),
                                Some(chunk),
                                &ctx.waker(),
                            )
                        {
                            asked += 1;
                        }
                    }
                }
                let Some(w) = q.waiting.pop_front() else {
                    break;
                };
                // A file to offer is opened (and its resume id taken) by the
                // worker, off the loop, when its turn comes (unless read
                // ahead already).
                let ask = |p: &mut prefetch::Prefetch| {
                    p.ask(
                        w.id,
                        w.path.clone(),
                        w.name.clone(),
                        w.entry.clone(),
                        None,
                        &ctx.waker(),
                    )
                };
                if offer && w.id != 0 && (self.prefetch.asked(w.id) || ask(&mut self.prefetch)) {
                    match self.prefetch.take(w.id) {
                        None => {
                            // Its worker wakes the loop once it is read
                            // ([`Transfers::poll_disk`] pumps again).
                            q.waiting.push_front(w);
                            self.starved.insert(conn);
                            break;
                        }
                        Some(Err(reason)) => self.finish(env, w.id, Err(reason)),
                        Some(Ok((mut o, piece))) => {
                            let (id, total) = (o.id, o.total);
                            // A folder the receiver took: the chunk goes
                            // right after the offer (`go:yes`).
                            let go = piece.is_some()
                                && o.entry.as_ref().is_some_and(|e| q.taken.contains(&e.batch));
                            let mut h = wire::offer_header(&o.name, total, id, o.resume.as_deref());
                            if let Some(e) = &o.entry {
                                e.add_to(&mut h);
                            }
                            if go {
                                h.set("go", "yes");
                            }
                            let _ = ctx.send(conn, &h, &[]);
                            if let Some(piece) = piece {
                                o.stash(piece);
                            }
                            o.digests = Some(self.digests.clone());
                            o.cleared = go;
                            q.active = Some(o);
                            self.start(ctx, env, id, total);
                            if let Some(r) = self.records.get_mut(&id) {
                                r.phase = if go { Phase::Active } else { Phase::Offered };
                            }
                        }
                    }
                    continue;
                }
                if w.id == 0 {
                    // An empty folder: told to a sockmod peer only (an
                    // original one flattens folders).
                    if let (true, Some(e)) = (offer, &w.entry) {
                        let _ = ctx.send(conn, &wire::dir_header(&w.name, e), &[]);
                    }
                    continue;
                }
                match Outgoing::open(w.id, w.path, w.name) {
                    Ok(mut o) => {
                        let (id, total) = (o.id, o.total);
                        o.entry = w.entry;
                        if offer {
                            o.offered = true;
                            // No resume id when the file cannot be sampled:
                            // its reading fails soon enough, with its reason.
                            o.resume = o.resume_id().ok();
                            o.digests = Some(self.digests.clone());
                            let mut h = wire::offer_header(&o.name, total, id, o.resume.as_deref());
                            if let Some(e) = &o.entry {
                                e.add_to(&mut h);
                            }
                            let _ = ctx.send(conn, &h, &[]);
                            q.active = Some(o);
                            // Started (the sender's clock runs from the
                            // offer), but no byte moves before the answer.
                            self.start(ctx, env, id, total);
                            if let Some(r) = self.records.get_mut(&id) {
                                r.phase = Phase::Offered;
                            }
                        } else {
                            o.cleared = true;
                            q.active = Some(o);
                            self.start(ctx, env, id, total);
                        }
                    }
                    Err(reason) => self.finish(env, w.id, Err(reason)),
                }
                continue;
            }
            if q.active.as_ref().is_some_and(|a| !a.cleared) {
                // Offered: the chunks wait for the receiver's answer.
                break;
            }
            if ctx.queued(conn) >= high {
                ctx.notify_drained(conn, low);
                return;
            }
            let Some(a) = q.active.as_mut() else {
                continue;
            };
            let id = a.id;
            let piece = match a.take_piece(chunk, &ctx.waker()) {
                send::Taken::Ready(p) => p,
                send::Taken::Later => {
                    // Its reader wakes the loop once a chunk is ready
                    // ([`Transfers::poll_disk`] pumps again).
                    self.starved.insert(conn);
                    break;
                }
            };
            match piece {
                Err(reason) => {
                    if let Some(a) = q.active.take() {
                        Self::stop_sending(ctx, conn, &a, &reason);
                    }
                    self.finish(env, id, Err(reason));
                }
                Ok(piece) => {
                    let sent = a.sent;
                    let last = piece.last;
                    if let Err(e) = ctx.send_owned(conn, &piece.header, piece.body) {
                        q.active = None;
                        self.finish(env, id, Err(format!("cannot send: {e}")));
                        return;
                    }
                    if last && let Some(a) = q.active.take() {
                        let written_at = ctx
                            .info(conn)
                            .map_or(u64::MAX, |i| i.bytes_out + ctx.queued(conn) as u64);
                        q.unconfirmed.push_back(Unconfirmed {
                            id,
                            name: a.name,
                            total: a.total,
                            written_at,
                        });
                        if let Some(r) = self.records.get_mut(&id) {
                            r.phase = Phase::Confirming;
                        }
                    }
                    self.set_bytes(id, sent);
                }
            }
        }
        self.check_written(ctx, env, conn);
        // Bytes still queued: look again once they are written. With none
        // queued, the progress tick looks again (asking here would be answered
        // at once, every turn, until the peer names itself).
        if !env.identified.contains(&conn)
            && ctx.queued(conn) > 0
            && self
                .sends
                .get(&conn)
                .is_some_and(|q| !q.unconfirmed.is_empty())
        {
            ctx.notify_drained(conn, 0);
        }
    }

    /// Completes sends to peers that do not confirm once their bytes are written.
    ///
    /// A peer that named itself (a sockmod filer) confirms each file, so its
    /// sends wait for that (or its refusal, whenever it comes). Only a peer
    /// known to be original ([`Env::is_original`]) has its files completed by
    /// the bytes written; a peer that stays silent is not presumed original,
    /// however long: its files stay `confirming` until it speaks or the
    /// connection closes (then they fail).
    fn check_written(&mut self, ctx: &Context<'_>, env: &mut Env<'_>, conn: ConnId) {
        let Some(i) = ctx.info(conn) else {
            return;
        };
        if !env.is_original(conn, i.msgs_in) {
            return;
        }
        self.complete_written(env, conn, i.bytes_out);
    }

    fn complete_written(&mut self, env: &mut Env<'_>, conn: ConnId, written: u64) {
        let Some(q) = self.sends.get_mut(&conn) else {
            return;
        };
        let mut done = Vec::new();
        q.unconfirmed.retain(|u| {
            let sent = written >= u.written_at;
            if sent {
                done.push(u.id);
            }
            !sent
        });
        if q.is_idle() {
            self.sends.remove(&conn);
        }
        for id in done {
            self.finish(env, id, Ok(None));
        }
    }

    // ----------------------------------------------------------------------
    // Receiving
    // ----------------------------------------------------------------------

    /// Tells the peer on `conn` that this side (in `role`) gave up on `name`.
    fn tell(ctx: &mut Context<'_>, conn: ConnId, name: &str, total: u64, role: Role, reason: &str) {
        let h = wire::cancel_header(name, total, role, reason);
        let _ = ctx.send(conn, &h, &[]);
    }

    /// Tells the receiver that the file `a` stops here, if it has heard of it.
    fn stop_sending(ctx: &mut Context<'_>, conn: ConnId, a: &Outgoing, reason: &str) {
        if a.announced() {
            Self::tell(ctx, conn, &a.name, a.total, Role::Sender, reason);
        }
    }

    /// Gives up receiving transfer `id` (its part file already removed): tells
    /// the sender why, reports the failure, and returns the state that drops the
    /// rest of the file when `rest_follows`.
    fn give_up_recv(
        &mut self,
        ctx: &mut Context<'_>,
        env: &mut Env<'_>,
        conn: ConnId,
        id: u64,
        reason: String,
        rest_follows: bool,
    ) -> Option<RecvState> {
        let (name, total) = self.records.get(&id).map(|r| (r.name.clone(), r.total))?;
        Self::tell(ctx, conn, &name, total, Role::Receiver, &reason);
        self.finish(env, id, Err(reason));
        rest_follows.then_some(RecvState::Discarding { name, total })
    }

    fn on_chunk(
        &mut self,
        ctx: &mut Context<'_>,
        env: &mut Env<'_>,
        conn: ConnId,
        c: Chunk<'_>,
        body: &[u8],
    ) {
        if let Some(id) = self.offer_on(conn) {
            // Chunks before the answer: the offer is refused, the file dropped.
            let why = "refused: the sender sent the file before it was accepted";
            self.refuse_offer(ctx, env, id, why.into());
            if c.index.is_some() {
                let (name, total) = (c.name.to_string(), c.total);
                self.recvs
                    .insert(conn, RecvState::Discarding { name, total });
            }
            return;
        }
        let next = match self.recvs.remove(&conn) {
            None => self.start_recv(ctx, env, conn, &c, body),
            Some(RecvState::Discarding { name, total }) => {
                if c.name == name && c.total == total && c.index != Some(0) {
                    // The rest of a file we gave up on.
                    c.index.map(|_| RecvState::Discarding { name, total })
                } else {
                    self.start_recv(ctx, env, conn, &c, body)
                }
            }
            Some(RecvState::Receiving(mut inc)) => {
                let same = c.name == inc.name && c.total == inc.total;
                if same && (c.index != Some(0) || inc.fresh()) {
                    let step = inc.accept(c.index, c.digest, body);
                    self.after_step(ctx, env, conn, inc, step)
                } else {
                    let reason = if c.index.is_none() || c.index == Some(0) {
                        format!(
                            "a new file ({:?}) started before this one ended",
                            wire::clean_text(c.name)
                        )
                    } else {
                        format!(
                            "a chunk of another file ({:?}) arrived in the middle of this one",
                            wire::clean_text(c.name)
                        )
                    };
                    inc.discard();
                    let new_file = c.index.is_none() || c.index == Some(0);
                    let next = self.give_up_recv(ctx, env, conn, inc.id, reason, !new_file);
                    if new_file {
                        self.start_recv(ctx, env, conn, &c, body)
                    } else {
                        next
                    }
                }
            }
        };
        if let Some(s) = next {
            if let RecvState::Receiving(inc) = &s
                && inc.stall()
            {
                // The writer is behind: nothing more from this peer until it
                // catches up (it wakes the loop then).
                ctx.hold_reads(conn, true);
                self.held.insert(conn);
            }
            self.recvs.insert(conn, s);
        }
    }

    /// Takes what the disk workers reported: reads held for a writer that has
    /// caught up resume, and files whose writer finished end (stored or
    /// failed). Called each time the loop is about to wait, and at least every
    /// few milliseconds while it is busy.
    pub fn poll_disk(&mut self, ctx: &mut Context<'_>, env: &mut Env<'_>) {
        if !self.held.is_empty() {
            let recvs = &self.recvs;
            let ready: Vec<ConnId> = self
                .held
                .iter()
                .copied()
                .filter(|c| match recvs.get(c) {
                    Some(RecvState::Receiving(inc)) => inc.backlog() <= recv::LOW_WATER,
                    _ => true,
                })
                .collect();
            for c in ready {
                self.held.remove(&c);
                ctx.hold_reads(c, false);
            }
        }
        if !self.starved.is_empty() {
            for conn in std::mem::take(&mut self.starved) {
                self.pump(ctx, env, conn);
            }
        }
        let opened = match self.opened.lock() {
            Ok(mut o) => std::mem::take(&mut *o),
            Err(_) => Vec::new(),
        };
        for (id, created, target) in opened {
            match self.offers.remove(&id) {
                Some(p) if p.opening => {
                    let created = created.and_then(KeptPart::take);
                    self.answer_created(ctx, env, id, p, created, target);
                }
                other => {
                    // Cancelled or closed meanwhile: the part file stays
                    // (suspended as the KeptPart drops).
                    if let Some(p) = other {
                        self.offers.insert(id, p);
                    }
                }
            }
        }
        if self.finishing.is_empty() {
            return;
        }
        let done = match self.notify.done.lock() {
            Ok(mut d) => std::mem::take(&mut *d),
            Err(_) => return,
        };
        for (id, result) in done {
            let Some((conn, mut inc)) = self.finishing.remove(&id) else {
                continue;
            };
            inc.finished_by_writer();
            let step = match result {
                Ok(path) => Step::Done(path),
                Err(reason) => Step::Failed {
                    reason,
                    ended: true,
                },
            };
            if let Some(s) = self.after_step(ctx, env, conn, inc, step) {
                // Not expected (the file ended), but kept as before.
                self.recvs.entry(conn).or_insert(s);
            }
        }
    }

    /// The first chunk of a file: checks, then creates the part file.
    fn start_recv(
        &mut self,
        ctx: &mut Context<'_>,
        env: &mut Env<'_>,
        conn: ConnId,
        c: &Chunk<'_>,
        body: &[u8],
    ) -> Option<RecvState> {
        if let Some(k) = c.index
            && k > 0
        {
            let text = format!(
                "ignored chunk {k} of {:?} from {conn}: no such file in progress",
                wire::clean_text(c.name)
            );
            ctx.malformed(conn, "chunk", text);
            return None;
        }
        let id = self.new_recv_record(ctx, conn, c.name, c.total, c.transfer);
        self.start(ctx, env, id, c.total);
        // A file that comes without an offer (from an original peer, which
        // cannot ask) is taken only where no consent is needed.
        let refused = match self.cfg.accept {
            Policy::No => Some(REFUSE_ALL.to_string()),
            Policy::Yes => self.admit(c.total).err(),
            Policy::Known if env.pinned.contains(&conn) => self.admit(c.total).err(),
            Policy::Ask | Policy::Known => Some(NO_OFFER.to_string()),
        };
        let created = match refused {
            Some(r) => Err(r),
            None => {
                self.notify.set_waker(ctx.waker());
                Incoming::create(id, c.name, c.total, &self.cfg.inbox, &self.notify)
            }
        };
        match created {
            Ok(mut inc) => {
                let step = inc.accept(c.index, c.digest, body);
                self.after_step(ctx, env, conn, Box::new(inc), step)
            }
            Err(reason) => self.give_up_recv(ctx, env, conn, id, reason, c.index.is_some()),
        }
    }

    fn after_step(
        &mut self,
        ctx: &mut Context<'_>,
        env: &mut Env<'_>,
        conn: ConnId,
        inc: Box<Incoming>,
        step: Step,
    ) -> Option<RecvState> {
        self.set_bytes(inc.id, inc.received);
        match step {
            Step::More => Some(RecvState::Receiving(inc)),
            Step::Finishing => {
                // The outcome comes from the writer ([`Transfers::poll_disk`]).
                self.finishing.insert(inc.id, (conn, inc));
                None
            }
            Step::Done(path) => {
                let stored = path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let h = wire::received_header(&inc.name, inc.total, &stored);
                let _ = ctx.send(conn, &h, &[]);
                let child = self.rchild.remove(&inc.id);
                self.finish(env, inc.id, Ok(Some(path)));
                if let Some((key, parts)) = child
                    && let Some(b) = self.rbatches.get_mut(&key)
                {
                    b.done += 1;
                    if let Some(r) = &inc.rid {
                        b.note_held(r, &parts.join("/"));
                    }
                    self.try_complete(env, &key);
                }
                None
            }
            Step::Failed { reason, ended } => {
                self.give_up_recv(ctx, env, conn, inc.id, reason, !ended)
            }
        }
    }

    fn on_cancel(
        &mut self,
        ctx: &mut Context<'_>,
        env: &mut Env<'_>,
        conn: ConnId,
        c: Control<'_>,
    ) {
        let reason = wire::clean_text(if c.reason.is_empty() {
            "no reason given"
        } else {
            c.reason
        });
        // The peer stopped sending us a file.
        if c.role != Some(Role::Receiver) {
            match self.recvs.get(&conn) {
                Some(RecvState::Receiving(inc)) if matches(&inc.name, inc.total, &c) => {
                    let id = inc.id;
                    if let Some(RecvState::Receiving(mut inc)) = self.recvs.remove(&conn)
                        && c.reason == wire::SENDER_QUIT
                    {
                        // It may send it again: what came is kept if resumable.
                        inc.suspend();
                    }
                    self.finish(env, id, Err(said_by("sender", &reason)));
                    return;
                }
                Some(RecvState::Discarding { name, total }) if matches(name, *total, &c) => {
                    self.recvs.remove(&conn);
                    return;
                }
                _ => {}
            }
            if let Some(id) = self.offer_on(conn)
                && self
                    .offers
                    .get(&id)
                    .is_some_and(|p| matches(&p.name, p.total, &c))
            {
                self.offers.remove(&id);
                self.finish(env, id, Err(said_by("sender", &reason)));
                return;
            }
            if c.role == Some(Role::Sender) {
                return;
            }
        }
        // The peer stopped receiving a file from us.
        let Some(q) = self.sends.get_mut(&conn) else {
            return;
        };
        if let Some(a) = q.active.take_if(|a| matches(&a.name, a.total, &c)) {
            // Tell it we stopped, so it need not wait for the rest.
            Self::tell(
                ctx,
                conn,
                &a.name,
                a.total,
                Role::Sender,
                "stopped: the receiver gave up",
            );
            self.finish(env, a.id, Err(said_by("receiver", &reason)));
        } else if let Some(id) = self.take_unconfirmed(conn, &c) {
            self.finish(env, id, Err(said_by("receiver", &reason)));
        } else {
            return;
        }
        if c.reason == wire::RECEIVER_QUIT {
            // It is going away: the files after this one cannot go either.
            self.keep_for_retry(env, conn);
            let why = [wire::RECEIVER_QUIT, "not sent: receiver quit"];
            self.drop_sends(ctx, env, conn, wire::SENDER_QUIT, why);
        }
        self.pump(ctx, env, conn);
    }

    /// The file going out on `conn`, if the receiver took it with a resume
    /// id, is kept to be sent again when its peer (by name) is back.
    fn keep_for_retry(&mut self, env: &mut Env<'_>, conn: ConnId) {
        let Some(a) = self.sends.get(&conn).and_then(|q| q.active.as_ref()) else {
            return;
        };
        let Some(peer) = env.names.get(&conn) else {
            return;
        };
        if a.resume.is_none() || !a.cleared {
            return;
        }
        let (id, path) = (a.id, a.path.clone());
        let kept = self
            .retries
            .iter()
            .any(|r| &r.peer == peer && r.file.path == path);
        if !kept {
            self.retries.push(Retry {
                peer: peer.clone(),
                file: Checked {
                    path,
                    name: a.name.clone(),
                    size: a.total,
                    entry: a.entry.clone(),
                },
                until: Instant::now() + self.cfg.transfer_timeout,
                attempt: None,
            });
            env.out.notice(&format!(
                "t{id}: {} resumes by itself once {peer} is in the ipserver's roster \
                 again (for {}, --transfer-timeout), or with `sendfile` again",
                quoted_name(&a.name),
                humantime::format_duration(self.cfg.transfer_timeout)
            ));
        }
    }

    /// The peers that files cut short wait for ([`Transfers::retry_to`]),
    /// among those `reachable` (by name), when no try of theirs is under way.
    /// Forgets the files delivered since and those past their time.
    pub fn due_retries(&mut self, reachable: impl Fn(&str) -> bool) -> Vec<String> {
        let now = Instant::now();
        let records = &self.records;
        let phase = |id: Option<u64>| id.and_then(|id| records.get(&id)).map(|r| r.phase);
        self.retries
            .retain(|r| now < r.until && phase(r.attempt) != Some(Phase::Done));
        let mut due: Vec<String> = self
            .retries
            .iter()
            .filter(|r| phase(r.attempt).is_none_or(|p| p.is_final()) && reachable(&r.peer))
            .map(|r| r.peer.clone())
            .collect();
        due.sort();
        due.dedup();
        due
    }

    /// Sends the files cut short for `peer` again, on `conn` (they resume).
    pub fn retry_to(&mut self, ctx: &mut Context<'_>, env: &mut Env<'_>, peer: &str, conn: ConnId) {
        let records = &self.records;
        let idle = |r: &Retry| {
            r.peer == peer
                && r.attempt
                    .and_then(|id| records.get(&id))
                    .is_none_or(|x| x.phase.is_final())
        };
        let files: Vec<Checked> = self
            .retries
            .iter()
            .filter(|r| idle(r))
            .map(|r| r.file.clone())
            .collect();
        if files.is_empty() {
            return;
        }
        let mut n = self.next_id;
        for r in self.retries.iter_mut().filter(|r| r.peer == peer) {
            if files.iter().any(|f| f.path == r.file.path) {
                r.attempt = Some(n);
                n += 1;
            }
        }
        let _ = self.queue_files(ctx, env, &[conn], &files);
    }

    /// Fails the files on `conn` not yet sent in full: the one going out is
    /// stopped (its receiver told `tell`) and fails with `why[0]`, those
    /// waiting their turn with `why[1]`.
    fn drop_sends(
        &mut self,
        ctx: &mut Context<'_>,
        env: &mut Env<'_>,
        conn: ConnId,
        tell: &str,
        why: [&str; 2],
    ) {
        let Some(q) = self.sends.get_mut(&conn) else {
            return;
        };
        let active = q.active.take();
        let waiting: Vec<u64> = q.waiting.drain(..).map(|w| w.id).collect();
        if let Some(a) = active {
            Self::stop_sending(ctx, conn, &a, tell);
            self.finish(env, a.id, Err(why[0].to_string()));
        }
        for id in waiting {
            self.finish(env, id, Err(why[1].to_string()));
        }
    }

    fn on_received(&mut self, env: &mut Env<'_>, conn: ConnId, c: Control<'_>) {
        if let Some(id) = self.take_unconfirmed(conn, &c) {
            if let (Some(r), Some(s)) = (self.records.get_mut(&id), c.stored) {
                r.stored = Some(wire::clean_text(s));
            }
            self.finish(env, id, Ok(None));
        }
    }

    /// Removes the file sent in full on `conn` that control frame `c` is about;
    /// returns its transfer number.
    fn take_unconfirmed(&mut self, conn: ConnId, c: &Control<'_>) -> Option<u64> {
        let q = self.sends.get_mut(&conn)?;
        let pos = q
            .unconfirmed
            .iter()
            .position(|u| matches(&u.name, u.total, c))?;
        let u = q.unconfirmed.remove(pos)?;
        if q.is_idle() {
            self.sends.remove(&conn);
        }
        Some(u.id)
    }

    // ----------------------------------------------------------------------
    // Consent and disk safety
    // ----------------------------------------------------------------------

    /// The offer waiting for an answer on `conn`, if any.
    fn offer_on(&self, conn: ConnId) -> Option<u64> {
        self.offers
            .iter()
            .find(|(_, p)| p.conn == conn)
            .map(|(&id, _)| id)
    }

    /// Bytes promised to the files being received: what they still expect.
    fn promised(&self) -> u64 {
        self.recvs
            .values()
            .map(|s| match s {
                RecvState::Receiving(inc) => inc.total.saturating_sub(inc.received),
                RecvState::Discarding { .. } => 0,
            })
            .sum()
    }

    /// `Err` (the reason, told to the sender) when a file of `total` bytes may
    /// not come in: over `--max-file-size`, or it would leave less than
    /// `--min-free` on the inbox's disk once the running transfers have their
    /// bytes too.
    fn admit(&self, total: u64) -> Result<(), String> {
        if let Some(max) = self.cfg.max_file_size
            && total > max
        {
            return Err(format!(
                "refused: {} is larger than --max-file-size ({})",
                human_size(total),
                human_size(max)
            ));
        }
        let Some((free, size)) = recv::disk_space(&self.cfg.inbox) else {
            return Ok(());
        };
        let min = self
            .cfg
            .min_free
            .unwrap_or_else(|| DEFAULT_MIN_FREE.min(size / 20));
        let promised = self.promised();
        let need = promised.saturating_add(total);
        if free < need.saturating_add(min) {
            return Err(format!(
                "refused: not enough free space: {} free in {}, {} promised to running \
                 transfers, and --min-free keeps {}",
                human_size(free),
                self.cfg.inbox.display(),
                human_size(promised),
                human_size(min)
            ));
        }
        Ok(())
    }

    /// A sender asks before sending a file: answered at once under
    /// `--accept-files yes` and `no` (and `known` for a pinned peer), else
    /// shown and kept until `accept`, `refuse` or `--offer-timeout`.
    fn on_offer(&mut self, ctx: &mut Context<'_>, env: &mut Env<'_>, conn: ConnId, c: Control<'_>) {
        let (go, name, total) = (c.go, c.name.to_string(), c.total.unwrap_or(0));
        self.take_offer(ctx, env, conn, c);
        if go && !matches!(self.recvs.get(&conn), Some(RecvState::Receiving(_))) {
            // Sent with `go:yes` and not taken (refused, or held already):
            // its chunk, which follows, is dropped.
            self.recvs
                .insert(conn, RecvState::Discarding { name, total });
        }
    }

    /// [`Transfers::on_offer`] but for a chunk that follows (`go:yes`).
    fn take_offer(
        &mut self,
        ctx: &mut Context<'_>,
        env: &mut Env<'_>,
        conn: ConnId,
        c: Control<'_>,
    ) {
        let total = c.total.unwrap_or(0);
        let busy = self.offer_on(conn).is_some()
            || matches!(self.recvs.get(&conn), Some(RecvState::Receiving(_)));
        if busy {
            let why = "refused: one file at a time (another is offered or under way)";
            let h = wire::answer_header(c.name, total, c.transfer, Some(why));
            let _ = ctx.send(conn, &h, &[]);
            return;
        }
        self.recvs.remove(&conn);
        // A file of a folder batch: its path is checked first.
        let entry = match self.batch_entry(ctx, env, conn, &c, false) {
            Ok(e) => e,
            Err(why) => {
                let h = wire::answer_header(c.name, total, c.transfer, Some(&why));
                let _ = ctx.send(conn, &h, &[]);
                env.out
                    .notice(&format!("refused a file from {conn}: {why}"));
                return;
            }
        };
        let id = self.new_recv_record(ctx, conn, c.name, total, c.transfer);
        let parent = entry.as_ref().and_then(|(k, _)| self.rbatches.get(k));
        let (parent, accepted) = (parent.map(|b| b.id), parent.is_some_and(|b| b.accepted));
        if let Some(r) = self.records.get_mut(&id) {
            r.phase = Phase::Offered;
            r.parent = parent;
            if let Some(n) = env.names.get(&conn) {
                r.peer_name = Some(n.clone());
            }
        }
        self.offers.insert(
            id,
            Pending {
                conn,
                name: c.name.to_string(),
                total,
                their_id: c.transfer,
                resume: c
                    .resume
                    .filter(|r| partial::valid_id(r))
                    .map(str::to_string),
                since: Instant::now(),
                entry,
                opening: false,
            },
        );
        if accepted {
            return self.accept_offer(ctx, env, id);
        }
        match self.cfg.accept {
            Policy::No => self.refuse_offer(ctx, env, id, REFUSE_ALL.into()),
            Policy::Yes => self.accept_offer(ctx, env, id),
            Policy::Known if env.pinned.contains(&conn) => self.accept_offer(ctx, env, id),
            Policy::Ask | Policy::Known => {
                // A folder is asked about once, as a whole.
                let shown = match parent {
                    Some(p) => {
                        if let Some(r) = self.records.get_mut(&p) {
                            r.phase = Phase::Offered;
                        }
                        p
                    }
                    None => id,
                };
                self.emit(env, shown, Change::Offered);
                env.out.flush();
                self.ensure_tick(ctx);
            }
        }
    }

    /// The folder-batch part of an offer or a `TP:dir` frame (§5.7): `None`
    /// for a plain file; else the batch (created on its first frame) and the
    /// checked path parts. `Err` for an unsafe or inconsistent path.
    fn batch_entry(
        &mut self,
        ctx: &Context<'_>,
        env: &mut Env<'_>,
        conn: ConnId,
        c: &Control<'_>,
        dir: bool,
    ) -> Result<Option<(BatchKey, Vec<String>)>, String> {
        let (Some(path), Some(b)) = (c.path, c.batch) else {
            return Ok(None);
        };
        if b.len() > 64 || !b.chars().all(|ch| ch.is_ascii_alphanumeric()) {
            return Err("refused: bad batch id".into());
        }
        if path.ends_with('/') != dir {
            return Err(format!(
                "refused: unsafe path {:?}: a folder where a file was expected, or the reverse",
                wire::clean_text(path)
            ));
        }
        let parts: Vec<String> = naming::check_rel_path(path)
            .map_err(|e| format!("refused: {e}"))?
            .into_iter()
            .map(str::to_string)
            .collect();
        if !dir && parts.len() < 2 {
            return Err(format!(
                "refused: unsafe path {:?}: no folder",
                wire::clean_text(path)
            ));
        }
        let key = (conn, b.to_string());
        if let Some(batch) = self.rbatches.get(&key) {
            if batch.top != parts[0] {
                return Err(format!(
                    "refused: {:?} is not in the folder {:?}",
                    wire::clean_text(path),
                    batch.top
                ));
            }
            return Ok(Some((key, parts)));
        }
        let top = parts[0].clone();
        let bytes = c.batch_bytes.unwrap_or(0);
        let id = self.new_recv_record(ctx, conn, &top, bytes, None);
        if let Some(r) = self.records.get_mut(&id) {
            r.files = Some((0, c.files.unwrap_or(0)));
            r.phase = Phase::Active;
            r.started = Some(Instant::now());
            if let Some(n) = env.names.get(&conn) {
                r.peer_name = Some(n.clone());
            }
        }
        let accepted = match self.cfg.accept {
            Policy::Yes => true,
            Policy::Known => env.pinned.contains(&conn),
            Policy::Ask | Policy::No => false,
        };
        if accepted {
            self.emit(env, id, Change::Started);
        }
        let staging = self.cfg.inbox.join(tree::STAGING).join(b);
        let held = read_done_list(&staging);
        if staging.exists() {
            // An earlier try: what it left unverified goes (a part file of a
            // small file is made in its folder, §5.7).
            let mut keep: HashSet<String> = held
                .iter()
                .filter_map(|l| l.split_once('\t').map(|(_, rel)| rel.to_string()))
                .collect();
            keep.insert(DONE_LIST.to_string());
            tree::prune_unlisted(&staging, &keep);
        }
        self.rbatches.insert(
            key.clone(),
            RecvBatch {
                id,
                top,
                staging: staging.clone(),
                files: c.files.unwrap_or(0),
                dirs_total: c.dirs.unwrap_or(0),
                dirs: HashSet::new(),
                done: 0,
                accepted,
                held,
                done_list: None,
                made: HashSet::new(),
            },
        );
        Ok(Some((key, parts)))
    }

    /// An empty folder of a folder batch.
    fn on_dir(&mut self, ctx: &mut Context<'_>, env: &mut Env<'_>, conn: ConnId, c: Control<'_>) {
        match self.batch_entry(ctx, env, conn, &c, true) {
            Ok(Some((key, parts))) => {
                if let Some(b) = self.rbatches.get_mut(&key) {
                    b.dirs.insert(parts);
                }
                self.try_complete(env, &key);
            }
            Ok(None) => ctx.malformed(
                conn,
                "dir",
                format!("ignored folder frame from {conn}: no P or B"),
            ),
            Err(why) => env
                .out
                .notice(&format!("ignored a folder from {conn}: {why}")),
        }
    }

    /// Moves folder batch `key` into the inbox once every file is verified
    /// and every empty folder announced.
    fn try_complete(&mut self, env: &mut Env<'_>, key: &BatchKey) {
        let Some(b) = self.rbatches.get(key) else {
            return;
        };
        if !b.accepted || b.done < b.files || (b.dirs.len() as u64) < b.dirs_total {
            return;
        }
        let Some(b) = self.rbatches.remove(key) else {
            return;
        };
        self.open_batches.remove(&b.id);
        let placed = (|| {
            std::fs::create_dir_all(&b.staging)?;
            naming::make_dirs(&b.staging, &[b.top.as_str()])?;
            for d in &b.dirs {
                let parts: Vec<&str> = d.iter().map(String::as_str).collect();
                naming::make_dirs(&b.staging, &parts)?;
            }
            let path = naming::place_dir(&b.staging.join(&b.top), &self.cfg.inbox, &b.top)?;
            let _ = std::fs::remove_file(b.staging.join(DONE_LIST));
            let _ = std::fs::remove_dir(&b.staging);
            // The staging folder itself, once no other batch is in it.
            if let Some(up) = b.staging.parent() {
                let _ = std::fs::remove_dir(up);
            }
            Ok::<_, std::io::Error>(path)
        })();
        match placed {
            Ok(path) => self.finish(env, b.id, Ok(Some(path))),
            Err(e) => self.finish(
                env,
                b.id,
                Err(format!(
                    "cannot store the folder {:?}: {}",
                    b.top,
                    crate::net::describe(&e)
                )),
            ),
        }
    }

    /// Takes offer `id`: checks it against the limits, creates the part file
    /// and tells the sender to go ahead (or why not).
    fn accept_offer(&mut self, ctx: &mut Context<'_>, env: &mut Env<'_>, id: u64) {
        let Some(p) = self.offers.remove(&id) else {
            return;
        };
        // A resume id already being received (on another connection) gets a
        // part file of its own, not resumable.
        let rid = p.resume.as_deref().filter(|r| {
            !self
                .recvs
                .values()
                .any(|s| matches!(s, RecvState::Receiving(inc) if inc.rid.as_deref() == Some(*r)))
        });
        // A file of a folder batch: the batch is taken as a whole; the file
        // goes to its folder under the staging folder, unless it is there
        // already (the folder sent again).
        let mut target = None;
        let mut small_in = None;
        if let Some((key, parts)) = &p.entry {
            let Some(b) = self.rbatches.get_mut(key) else {
                let h = wire::answer_header(&p.name, p.total, p.their_id, Some(CANCELLED));
                let _ = ctx.send(p.conn, &h, &[]);
                return self.finish(env, id, Err(CANCELLED.into()));
            };
            if !b.accepted {
                b.accepted = true;
                let bid = b.id;
                if let Some(r) = self.records.get_mut(&bid) {
                    r.phase = Phase::Active;
                }
                self.emit(env, bid, Change::Started);
            }
            let Some(b) = self.rbatches.get_mut(key) else {
                return;
            };
            let (file, dirs) = parts
                .split_last()
                .map_or((None, &[][..]), |(f, d)| (Some(f), d));
            let made = b.make_dirs(dirs);
            match (made, file) {
                (Ok(dir), Some(file)) => {
                    let rel = parts.join("/");
                    if let Some(r) = &p.resume
                        && b.holds(&dir.join(file), r, &rel, p.total)
                    {
                        let mut h = wire::answer_header(&p.name, p.total, p.their_id, None);
                        h.set("have", "yes");
                        let _ = ctx.send(p.conn, &h, &[]);
                        let key = key.clone();
                        if let Some(b) = self.rbatches.get_mut(&key) {
                            b.done += 1;
                        }
                        self.finish(env, id, Ok(Some(dir.join(file))));
                        self.try_complete(env, &key);
                        return;
                    }
                    if p.total <= SMALL_FILE {
                        small_in = Some(dir.clone());
                    }
                    target = Some((dir, file.clone()));
                    self.rchild.insert(id, (key.clone(), parts.clone()));
                }
                (Err(e), _) => {
                    let why = format!("cannot create the folder: {}", crate::net::describe(&e));
                    let h = wire::answer_header(&p.name, p.total, p.their_id, Some(&why));
                    let _ = ctx.send(p.conn, &h, &[]);
                    return self.finish(env, id, Err(why));
                }
                (Ok(_), None) => {}
            }
        }
        self.notify.set_waker(ctx.waker());
        if let Some(r) = rid {
            // The same file sent again while its last copy is being stored:
            // that one is let finish first, as they share the part file (a
            // short wait: what its writer still holds).
            for (_, inc) in self.finishing.values_mut() {
                if inc.rid.as_deref() == Some(r) {
                    inc.wait_writer();
                    inc.finished_by_writer();
                }
            }
        }
        if let (None, Some(r)) = (&small_in, rid)
            && partial::needs_reading(&self.cfg.inbox, r, p.total)
        {
            // A part file left by a crash, or touched since: read back and
            // checked on a worker; the answer waits for it.
            if let Err(reason) = self.admit(p.total) {
                let h = wire::answer_header(&p.name, p.total, p.their_id, Some(&reason));
                let _ = ctx.send(p.conn, &h, &[]);
                return self.finish(env, id, Err(reason));
            }
            let (name, total, r) = (p.name.clone(), p.total, r.to_string());
            let (inbox, notify) = (self.cfg.inbox.clone(), self.notify.clone());
            let (opened, waker) = (self.opened.clone(), ctx.waker());
            let started = std::thread::Builder::new()
                .name("sockmod-opener".into())
                .spawn(move || {
                    let got = Incoming::create_resumable(id, &name, total, &inbox, &r, &notify)
                        .map(|inc| KeptPart(Some(inc)));
                    if let Ok(mut o) = opened.lock() {
                        o.push((id, got, target));
                    }
                    let _ = waker.wake();
                });
            if let Err(e) = started {
                let why = format!("cannot start a worker: {}", crate::net::describe(&e));
                let h = wire::answer_header(&p.name, p.total, p.their_id, Some(&why));
                let _ = ctx.send(p.conn, &h, &[]);
                return self.finish(env, id, Err(why));
            }
            self.offers.insert(id, Pending { opening: true, ..p });
            return;
        }
        let notify = &self.notify;
        let created = self
            .admit(p.total)
            .and_then(|()| match (&small_in, &target, rid) {
                // A small file of a folder: its part file beside the folder.
                (Some(part_dir), Some((dir, file)), _) => {
                    let mut inc =
                        Incoming::create_in(id, &p.name, p.total, part_dir, dir, file, notify)?;
                    inc.rid = p.resume.clone();
                    Ok(inc)
                }
                (_, _, Some(r)) => {
                    Incoming::create_resumable(id, &p.name, p.total, &self.cfg.inbox, r, notify)
                }
                _ => Incoming::create(id, &p.name, p.total, &self.cfg.inbox, notify),
            });
        let target = if small_in.is_none() { target } else { None };
        self.answer_created(ctx, env, id, p, created, target);
    }

    /// Answers offer `id` (`p`) once its part file is `created` (or not),
    /// stored in `target` when it is a folder's.
    fn answer_created(
        &mut self,
        ctx: &mut Context<'_>,
        env: &mut Env<'_>,
        id: u64,
        p: Pending,
        created: Result<Incoming, String>,
        target: Option<(PathBuf, String)>,
    ) {
        match created {
            Ok(mut inc) => {
                if let Some((dir, file)) = target {
                    inc.retarget(dir, file);
                }
                let at = inc.resumed_from;
                let h = wire::answer_at(&p.name, p.total, p.their_id, None, at);
                let _ = ctx.send(p.conn, &h, &[]);
                self.recvs
                    .insert(p.conn, RecvState::Receiving(Box::new(inc)));
                if at > 0
                    && let Some(r) = self.records.get_mut(&id)
                {
                    r.resumed_from = Some(at);
                    r.bytes = at;
                    r.emitted = at;
                }
                self.start(ctx, env, id, p.total);
            }
            Err(reason) => {
                let h = wire::answer_header(&p.name, p.total, p.their_id, Some(&reason));
                let _ = ctx.send(p.conn, &h, &[]);
                self.finish(env, id, Err(reason));
            }
        }
    }

    /// Refuses offer `id`, telling the sender `reason`.
    fn refuse_offer(&mut self, ctx: &mut Context<'_>, env: &mut Env<'_>, id: u64, reason: String) {
        let Some(p) = self.offers.remove(&id) else {
            return;
        };
        let h = wire::answer_header(&p.name, p.total, p.their_id, Some(&reason));
        let _ = ctx.send(p.conn, &h, &[]);
        self.finish(env, id, Err(reason));
    }

    /// The receiver answered our offer: the chunks go, or the file fails.
    fn on_answer(
        &mut self,
        ctx: &mut Context<'_>,
        env: &mut Env<'_>,
        conn: ConnId,
        c: Control<'_>,
    ) {
        let Some(q) = self.sends.get_mut(&conn) else {
            return;
        };
        let mine = |id: u64| c.transfer.is_none_or(|t| t == id);
        let Some(a) = q
            .active
            .as_mut()
            .filter(|a| a.offered && !a.cleared && mine(a.id) && matches(&a.name, a.total, &c))
        else {
            // The answer to a file sent with `go:yes` (already sent whole):
            // a refusal or `have:yes` ends it; an acceptance changes nothing
            // (its `TP:received` follows).
            if let Some(t) = c.transfer
                && (!c.ok || c.have)
                && let Some(pos) = q.unconfirmed.iter().position(|u| u.id == t)
            {
                q.unconfirmed.remove(pos);
                let result = if c.ok {
                    Ok(None)
                } else {
                    let why = if c.reason.is_empty() {
                        "refused"
                    } else {
                        c.reason
                    };
                    Err(said_by("receiver", &wire::clean_text(why)))
                };
                self.finish(env, t, result);
                if self.sends.get(&conn).is_some_and(SendQueue::is_idle) {
                    self.sends.remove(&conn);
                }
                self.pump(ctx, env, conn);
            }
            return;
        };
        if c.ok
            && let Some(e) = &a.entry
        {
            // A folder the receiver took: its later small files need not
            // wait for their answers.
            q.taken.insert(e.batch.clone());
        }
        if c.ok && c.have && a.entry.is_some() {
            // A file of a folder sent again that the receiver already holds.
            let id = a.id;
            if let Some(q) = self.sends.get_mut(&conn) {
                q.active = None;
            }
            self.finish(env, id, Ok(None));
            self.pump(ctx, env, conn);
        } else if c.ok {
            a.cleared = true;
            let id = a.id;
            let at = c.at.filter(|&at| at > 0 && a.resume.is_some());
            if let Some(at) = at
                && let Err(reason) = a.resume_at(at)
            {
                if let Some(a) = self.sends.get_mut(&conn).and_then(|q| q.active.take()) {
                    Self::stop_sending(ctx, conn, &a, &reason);
                }
                self.finish(env, id, Err(reason));
                self.pump(ctx, env, conn);
                return;
            }
            if let Some(r) = self.records.get_mut(&id) {
                r.phase = Phase::Active;
                if let Some(at) = at {
                    r.resumed_from = Some(at);
                    r.bytes = at;
                    r.emitted = at;
                }
            }
            self.pump(ctx, env, conn);
        } else {
            let reason = if c.reason.is_empty() {
                "refused"
            } else {
                c.reason
            };
            let ctl = Control {
                role: Some(Role::Receiver),
                reason,
                ..c
            };
            self.on_cancel(ctx, env, conn, ctl);
        }
    }

    /// `accept tN`, or every waiting offer (`accept *`).
    pub fn accept(
        &mut self,
        ctx: &mut Context<'_>,
        env: &mut Env<'_>,
        which: Option<u64>,
    ) -> Result<(), String> {
        let ids: Vec<u64> = match which {
            None if self.offers.values().all(|p| p.opening) => {
                return Err("no offers waiting".into());
            }
            None => self
                .offers
                .iter()
                .filter(|(_, p)| !p.opening)
                .map(|(&id, _)| id)
                .collect(),
            Some(id) if self.offers.get(&id).is_some_and(|p| !p.opening) => vec![id],
            // A folder: the offer of its file waiting.
            Some(id) if let Some(c) = self.child_offer(id) => vec![c],
            Some(id) => return Err(format!("t{id} is not an offer waiting for an answer")),
        };
        for id in ids {
            self.accept_offer(ctx, env, id);
        }
        Ok(())
    }

    /// `refuse tN`.
    pub fn refuse(
        &mut self,
        ctx: &mut Context<'_>,
        env: &mut Env<'_>,
        id: u64,
    ) -> Result<(), String> {
        let id = match self.child_offer(id) {
            Some(c) if !self.offers.contains_key(&id) => c,
            _ => id,
        };
        if self.offers.get(&id).is_none_or(|p| p.opening) {
            return Err(format!("t{id} is not an offer waiting for an answer"));
        }
        self.refuse_offer(ctx, env, id, "refused".into());
        Ok(())
    }

    /// The offer waiting whose file belongs to folder batch `parent`.
    fn child_offer(&self, parent: u64) -> Option<u64> {
        let records = &self.records;
        self.offers
            .iter()
            .filter(|(_, p)| !p.opening)
            .map(|(&c, _)| c)
            .find(|c| records.get(c).is_some_and(|r| r.parent == Some(parent)))
    }

    /// Offers not answered within `--offer-timeout` are refused; incoming
    /// files that moved nothing for `--transfer-timeout` fail (their part file
    /// and descriptor released).
    fn check_timeouts(&mut self, ctx: &mut Context<'_>, env: &mut Env<'_>) {
        let limit = self.cfg.offer_timeout;
        let late: Vec<u64> = self
            .offers
            .iter()
            .filter(|(_, p)| !p.opening && p.since.elapsed() >= limit)
            .map(|(&id, _)| id)
            .collect();
        for id in late {
            let why = format!(
                "refused: not answered within {} (--offer-timeout)",
                humantime::format_duration(limit)
            );
            self.refuse_offer(ctx, env, id, why);
        }
        let limit = self.cfg.transfer_timeout;
        let mut stalled: Vec<ConnId> = self
            .recvs
            .iter()
            .filter(
                |(_, s)| matches!(s, RecvState::Receiving(inc) if inc.touched.elapsed() >= limit),
            )
            .map(|(&c, _)| c)
            .collect();
        stalled.sort_unstable();
        for conn in stalled {
            if let Some(RecvState::Receiving(mut inc)) = self.recvs.remove(&conn) {
                inc.suspend();
                let why = format!(
                    "stalled: nothing received for {} (--transfer-timeout)",
                    humantime::format_duration(limit)
                );
                if let Some(s) = self.give_up_recv(ctx, env, conn, inc.id, why, true) {
                    self.recvs.insert(conn, s);
                }
            }
        }
    }

    // ----------------------------------------------------------------------
    // Hooks from the handler
    // ----------------------------------------------------------------------

    /// `conn`'s peer named itself: files waiting to know it go (offered).
    pub fn on_identified(&mut self, ctx: &mut Context<'_>, env: &mut Env<'_>, conn: ConnId) {
        if self.sends.contains_key(&conn) {
            self.pump(ctx, env, conn);
        }
    }

    /// A frame arrived; returns true when it was a file frame (handled here).
    pub fn on_message(
        &mut self,
        ctx: &mut Context<'_>,
        env: &mut Env<'_>,
        conn: ConnId,
        msg: &Message,
    ) -> bool {
        let Some(parsed) = wire::parse(&msg.header) else {
            return false;
        };
        match parsed {
            Ok(Frame::Chunk(c)) => self.on_chunk(ctx, env, conn, c, &msg.body),
            Ok(Frame::Cancel(c)) => self.on_cancel(ctx, env, conn, c),
            Ok(Frame::Received(c)) => self.on_received(env, conn, c),
            Ok(Frame::Offer(c)) => self.on_offer(ctx, env, conn, c),
            Ok(Frame::Answer(c)) => self.on_answer(ctx, env, conn, c),
            Ok(Frame::Dir(c)) => self.on_dir(ctx, env, conn, c),
            Err(reason) => {
                if let Some(RecvState::Receiving(mut inc)) = self.recvs.remove(&conn) {
                    inc.discard();
                    if let Some(s) = self.give_up_recv(ctx, env, conn, inc.id, reason, true) {
                        self.recvs.insert(conn, s);
                    }
                } else {
                    ctx.malformed(
                        conn,
                        "frame",
                        format!("ignored frame from {conn}: {reason}"),
                    );
                }
            }
        }
        true
    }

    /// A dialled connection is up: files queued meanwhile start.
    pub fn on_connected(&mut self, ctx: &mut Context<'_>, env: &mut Env<'_>, conn: ConnId) {
        if self.sends.contains_key(&conn) {
            self.pump(ctx, env, conn);
        }
    }

    /// `conn`'s queue drained to the mark set by the pump.
    pub fn on_drained(&mut self, ctx: &mut Context<'_>, env: &mut Env<'_>, conn: ConnId) {
        if self.sends.contains_key(&conn) {
            self.pump(ctx, env, conn);
        }
    }

    /// A connection ended: every transfer on it fails, except sends to peers
    /// that do not confirm whose bytes were all written.
    pub fn on_closed(&mut self, env: &mut Env<'_>, info: &ConnInfo, reason: &str) {
        let conn = info.id;
        if let Some(RecvState::Receiving(mut inc)) = self.recvs.remove(&conn) {
            let id = inc.id;
            // A resumable part file stays for the next offer of the file.
            inc.suspend();
            drop(inc);
            self.finish(
                env,
                id,
                Err(format!("connection closed mid-file: {reason}")),
            );
        }
        if let Some(id) = self.offer_on(conn) {
            self.offers.remove(&id);
            self.finish(
                env,
                id,
                Err(format!(
                    "connection closed before the offer was answered: {reason}"
                )),
            );
        }
        if env.is_original(conn, info.msgs_in) {
            // An original peer: what was written in full is all it gets.
            self.complete_written(env, conn, info.bytes_out);
        }
        self.keep_for_retry(env, conn);
        if let Some(q) = self.sends.remove(&conn) {
            let ids = q
                .active
                .iter()
                .map(|a| (a.id, "connection closed mid-file"))
                .chain(
                    q.unconfirmed
                        .iter()
                        .map(|u| (u.id, "connection closed before the receiver confirmed")),
                )
                .chain(
                    q.waiting
                        .iter()
                        .map(|w| (w.id, "connection closed before the file's turn")),
                );
            let ids: Vec<(u64, &str)> = ids.collect();
            for (id, why) in ids {
                self.finish(env, id, Err(format!("{why}: {reason}")));
            }
        }
    }

    /// A dial failed: files queued for it fail without being sent.
    pub fn on_connect_failed(&mut self, env: &mut Env<'_>, conn: ConnId, reason: &str) {
        if let Some(q) = self.sends.remove(&conn) {
            for w in q.waiting {
                self.finish(env, w.id, Err(format!("cannot connect: {reason}")));
            }
        }
    }

    /// True for the progress timer these transfers set.
    pub fn owns_timer(&self, timer: TimerId) -> bool {
        self.tick == Some(timer)
    }

    /// The progress timer fired ([`Transfers::owns_timer`]).
    pub fn on_timer(&mut self, ctx: &mut Context<'_>, env: &mut Env<'_>) {
        self.tick = None;
        let conns: Vec<ConnId> = self.sends.keys().copied().collect();
        for conn in conns {
            self.check_written(ctx, env, conn);
            // Files waiting for their peer to name itself.
            if self.sends.get(&conn).is_some_and(|q| q.active.is_none()) {
                self.pump(ctx, env, conn);
            }
        }
        self.check_timeouts(ctx, env);
        if self.prefetch.pending() > 0 {
            // Read ahead for files since cancelled or failed: dropped.
            let waiting: HashSet<u64> = self
                .sends
                .values()
                .flat_map(|q| q.waiting.iter().map(|w| w.id))
                .collect();
            self.prefetch.forget(|id| waiting.contains(&id));
        }
        let now = Instant::now();
        let progress_events = env.out.wants_progress_events();
        let mut any = false;
        for r in self.records.values_mut() {
            if r.phase.is_final() {
                continue;
            }
            any = true;
            if matches!(r.phase, Phase::Queued | Phase::Offered) {
                continue;
            }
            r.sample(now);
            if progress_events
                && r.phase == Phase::Active
                && r.bytes != r.emitted
                && r.parent.is_none()
            {
                r.emitted = r.bytes;
                let name = peer_name(r, env.names);
                env.out.transfer(r, Change::Progress, name, now);
            }
        }
        self.refresh_status(env);
        env.out.flush();
        if any && self.tick.is_none() {
            self.tick = Some(ctx.set_timer(TICK));
        }
    }

    /// Redraws the progress block (terminal only).
    fn refresh_status(&self, env: &mut Env<'_>) {
        if !env.out.shows_progress() {
            return;
        }
        let active: Vec<Listed<'_>> = self
            .listed(env.names)
            .filter(|l| matches!(l.record.phase, Phase::Active | Phase::Confirming))
            .filter(|l| l.record.parent.is_none())
            .collect();
        env.out.progress(&active);
    }
}
