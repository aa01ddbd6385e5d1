//! Start the workers, handle signals, reload, stop gracefully, print the report.
//!
//! The main thread binds every listener (one SO_REUSEPORT socket per worker,
//! so a bad address fails before anything runs), starts a *generation* of
//! worker threads (one per core) serving the configuration, then sleeps on a
//! channel that carries signals (from a signal-hook thread) and worker exits:
//!
//! * SIGUSR1: print the statistics report and go on.
//!
//! With `--admin ADDR`, the admin listener ([`crate::admin`]) is bound
//! before the first generation starts (banner `ferry: admin on ADDR`) and
//! serves the same figures over HTTP from threads of its own.
//! * SIGHUP: read the configuration file again. If it is invalid, log every
//!   problem and keep serving as before. If it is valid, start a new
//!   generation on it, then retire the old one: the old workers stop
//!   accepting and finish the connections they hold, with their settings,
//!   while the new workers accept from the same listening sockets (the main
//!   thread keeps a duplicate of each, so a socket that stays in the
//!   configuration is never closed and no queued connection is lost).
//!   Listening sockets no longer configured are closed once the old workers
//!   let go of them.
//! * SIGINT/SIGTERM: tell every generation to stop accepting and finish
//!   its pairs within --grace; once all have exited, print the report, exit
//!   0. A second such signal exits at once.
//!
//! The process-wide figures (the connection gate, reload counts, counters of
//! generations that ended) live in [`Process`], which the report and the
//! admin listener read.

use crate::config::{Config, Mode};
use crate::forward::resolver::{self, Dns};
use crate::http::access_log::AccessLog;
use crate::net::{self, listener::BindError};
use crate::stats::{self, Figures, Global, Snapshot, WorkerCounters};
use crate::upstream::{self, BackendState};
use crate::worker::{Listener, Shared, Worker};
use mio::{Poll, Waker};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1};
use std::collections::hash_map::{Entry, HashMap};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Instant;

/// Access-log records that may wait for the logger before new ones are dropped.
const ACCESS_LOG_QUEUE: usize = 16 * 1024;

/// Why the server could not start.
#[derive(Debug)]
pub enum StartError {
    Bind(BindError),
    Io(String),
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::Bind(e) => e.fmt(f),
            StartError::Io(e) => f.write_str(e),
        }
    }
}

/// Makes the configuration again on SIGHUP: every problem, or the new one.
pub type Reload = Box<dyn FnMut() -> Result<Config, Vec<String>> + Send>;

enum Message {
    Signal(i32),
    WorkerExited {
        generation: usize,
        id: usize,
        result: Result<(), String>,
    },
}

/// What outlives a generation: the connection gate, reload outcomes, the
/// counters of generations that ended, and the ones serving now.
pub struct Process {
    pub global: Arc<Global>,
    pub started: Instant,
    pub reloads_ok: AtomicU64,
    pub reloads_failed: AtomicU64,
    /// Generations with workers still running (serving or draining).
    pub generations: Mutex<Vec<Arc<Shared>>>,
    /// The figures of generations that ended, summed (by listener name and
    /// backend). Locked before `generations` whenever both are, so a
    /// generation moves from one to the other atomically for readers.
    pub retired: Mutex<Figures>,
}

impl Process {
    pub fn new(global: Arc<Global>) -> Process {
        Process {
            global,
            started: Instant::now(),
            reloads_ok: AtomicU64::new(0),
            reloads_failed: AtomicU64::new(0),
            generations: Mutex::new(Vec::new()),
            retired: Mutex::new(Figures::default()),
        }
    }

    /// Every counter summed over every generation, live or ended, by
    /// listener name; gauges (connections active, buffers in use) and the
    /// backends' up state come from the live workers only.
    pub fn figures(&self) -> Figures {
        let retired = self.retired.lock().unwrap_or_else(|e| e.into_inner());
        let mut sum = retired.clone();
        for g in self
            .generations
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            sum.add(&g.figures());
        }
        sum
    }

    /// The figures with the process's own: uptime, peak, reloads.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            figures: self.figures(),
            uptime: self.started.elapsed(),
            max_concurrent: self.global.max_active.load(Ordering::Relaxed) as u64,
            reloads_ok: self.reloads_ok.load(Ordering::Relaxed),
            reloads_failed: self.reloads_failed.load(Ordering::Relaxed),
        }
    }

    /// The SIGUSR1 and exit report (`stats::render_report` says its lines).
    pub fn report(&self) -> String {
        stats::render_report(&self.snapshot())
    }

    /// Fold an ended generation's figures into the retired ones and forget it.
    fn retire(&self, shared: &Arc<Shared>) {
        let mut retired = self.retired.lock().unwrap_or_else(|e| e.into_inner());
        let mut generations = self.generations.lock().unwrap_or_else(|e| e.into_inner());
        let mut figures = shared.figures();
        // Levels of workers that are gone are zero, not their last reading.
        figures.clear_gauges();
        retired.add(&figures);
        generations.retain(|g| !Arc::ptr_eq(g, shared));
    }
}

/// The listening sockets the main thread holds, by configured address: one
/// per worker (SO_REUSEPORT shards). Workers serve duplicates of them.
struct Bound {
    addr: SocketAddr,
    shards: Vec<std::net::TcpListener>,
    /// The listen backlog the shards have now.
    backlog: i32,
}

/// One generation of workers and what it needs to be stopped or retired.
struct Generation {
    shared: Arc<Shared>,
    wakers: Vec<Arc<Waker>>,
    live: usize,
}

impl Generation {
    fn wake(&self) {
        for waker in &self.wakers {
            let _ = waker.wake();
        }
    }
}

/// Run the proxy until it is stopped by a signal. `reload` makes the new
/// configuration on SIGHUP (None: started without a file; SIGHUP is logged
/// and ignored).
pub fn run(config: Config, mut reload: Option<Reload>) -> Result<(), StartError> {
    let fd_limit = net::sys::raise_fd_limit();
    if fd_limit < config.fds_needed() {
        eprintln!(
            "ferry: warning: --max-conns {} may need {} file descriptors but the limit is {}; \
             accepting pauses when descriptors run out",
            config.max_conns,
            config.fds_needed(),
            fd_limit
        );
    }
    // Room for --max-conns client addresses if a listener limits them (a
    // reload that adds a limit later grows the table as it fills).
    let limited = config
        .listeners
        .iter()
        .any(|l| l.max_conns_per_client.is_some());
    let global = Global {
        clients: crate::clients::ClientTable::new(if limited { config.max_conns } else { 0 }),
        ..Global::default()
    };
    let process = Arc::new(Process::new(Arc::new(global)));
    let (tx, rx) = mpsc::channel();
    let mut sockets: HashMap<SocketAddr, Bound> = HashMap::new();
    let mut generations: HashMap<usize, Generation> = HashMap::new();
    // Signals first: the banner tells scripts they may signal us.
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGUSR1, SIGHUP])
        .map_err(|e| StartError::Io(format!("cannot install signal handlers: {e}")))?;
    let signal_tx = tx.clone();
    std::thread::Builder::new()
        .name("ferry-signals".into())
        .spawn(move || {
            for signal in signals.forever() {
                if signal_tx.send(Message::Signal(signal)).is_err() {
                    break;
                }
            }
        })
        .map_err(|e| StartError::Io(format!("cannot start signal thread: {e}")))?;

    // The admin listener reads the process's figures from its own threads;
    // it is up before any worker, and its address cannot change on reload.
    if let Some(addr) = config.admin {
        let bound = crate::admin::start(addr, config.admin_token.clone(), process.clone())
            .map_err(|e| StartError::Io(format!("admin listener {addr}: {e}")))?;
        eprintln!("ferry: admin on {bound}");
    }
    let first = start_generation(config, 0, &mut sockets, &process, &tx)?;
    generations.insert(0, first);
    let mut next_generation = 1;

    let mut stopping = false;
    let mut failed = false;
    let mut current = 0;
    while let Ok(message) = rx.recv() {
        match message {
            Message::Signal(SIGUSR1) => eprint!("{}", process.report()),
            Message::Signal(SIGHUP) if stopping => {}
            Message::Signal(SIGHUP) => {
                let Some(make) = reload.as_mut() else {
                    eprintln!("ferry: SIGHUP: started without -c FILE; nothing to reload");
                    continue;
                };
                let running = generations[&current].shared.config.clone();
                match make()
                    .map_err(|errors| errors.join("\n"))
                    .and_then(|config| {
                        let config = keep_fixed_settings(config, &running);
                        start_generation(config, next_generation, &mut sockets, &process, &tx)
                            .map_err(|e| e.to_string())
                    }) {
                    Ok(generation) => {
                        let old = &generations[&current];
                        // The new configuration says how long the old one's
                        // connections may take to finish.
                        let within = generation
                            .shared
                            .config
                            .reload_grace
                            .map_or(0, |d| (d.as_micros() as u64).max(1));
                        old.shared.retire_within_us.store(within, Ordering::SeqCst);
                        old.shared.retiring.store(true, Ordering::SeqCst);
                        old.wake();
                        let kept: Vec<SocketAddr> = generation
                            .shared
                            .config
                            .listeners
                            .iter()
                            .map(|l| l.listen)
                            .collect();
                        // The old workers hold their own duplicates until they let go.
                        sockets.retain(|addr, _| kept.contains(addr));
                        current = next_generation;
                        generations.insert(next_generation, generation);
                        next_generation += 1;
                        process.reloads_ok.fetch_add(1, Ordering::Relaxed);
                        eprintln!("ferry: reloaded the configuration (generation {current})");
                    }
                    Err(problems) => {
                        process.reloads_failed.fetch_add(1, Ordering::Relaxed);
                        for line in problems.lines() {
                            eprintln!("ferry: reload: {line}");
                        }
                        eprintln!("ferry: reload failed; still serving the previous configuration");
                    }
                }
            }
            Message::Signal(_) if stopping => {
                eprintln!("ferry: second signal, exiting now");
                std::process::exit(1);
            }
            Message::Signal(_) => {
                eprintln!(
                    "ferry: stopping; live connections have {:?} to finish",
                    generations[&current].shared.config.grace
                );
                stopping = true;
                stop_all(&generations);
                // Refuse new connections: close the main thread's duplicates too.
                sockets.clear();
            }
            Message::WorkerExited {
                generation,
                id,
                result,
            } => {
                if let Err(e) = result {
                    eprintln!("ferry: worker {id} failed: {e}; stopping");
                    failed = true;
                    stopping = true;
                    stop_all(&generations);
                    sockets.clear();
                }
                let ended = generations.get_mut(&generation).is_some_and(|g| {
                    g.live -= 1;
                    g.live == 0
                });
                if ended {
                    let g = generations.remove(&generation).expect("present");
                    process.retire(&g.shared);
                }
                if generations.is_empty() {
                    break;
                }
            }
        }
    }
    eprint!("{}", process.report());
    if failed {
        std::process::exit(1);
    }
    Ok(())
}

fn stop_all(generations: &HashMap<usize, Generation>) {
    for g in generations.values() {
        g.shared.stopping.store(true, Ordering::SeqCst);
        g.wake();
    }
}

/// Settings a running process cannot change (the listening sockets are
/// sharded per worker): a reload keeps the running values and says so.
fn keep_fixed_settings(mut config: Config, running: &Config) -> Config {
    if config.workers != running.workers {
        eprintln!(
            "ferry: reload: workers stays {} (changing it needs a restart)",
            running.workers
        );
        config.workers = running.workers;
    }
    if config.admin != running.admin || config.admin_token != running.admin_token {
        eprintln!("ferry: reload: the admin listener and its token stay as they are (changing them needs a restart)");
        config.admin = running.admin;
        config.admin_token = running.admin_token.clone();
    }
    config
}

/// Listening sockets for `addr`: the ones already bound (duplicated), or
/// new ones.
fn shards_for(
    addr: SocketAddr,
    config: &Config,
    sockets: &mut HashMap<SocketAddr, Bound>,
    fresh: &mut Vec<SocketAddr>,
) -> Result<(SocketAddr, Vec<mio::net::TcpListener>), StartError> {
    let held: Vec<SocketAddr> = sockets.values().map(|b| b.addr).collect();
    let b = match sockets.entry(addr) {
        Entry::Occupied(e) => e.into_mut(),
        Entry::Vacant(e) => {
            // A port this process listens on already (a reload moving a
            // listener between addresses that overlap) is not someone else's.
            if !held.iter().any(|h| h.port() == addr.port()) {
                net::listener::check_free(addr).map_err(StartError::Bind)?;
            }
            let (bound, shards) = net::listener::bind_shards(addr, config.workers, config.backlog)
                .map_err(StartError::Bind)?;
            fresh.push(addr);
            e.insert(Bound {
                addr: bound,
                shards,
                backlog: config.backlog,
            })
        }
    };
    let mut out = Vec::with_capacity(b.shards.len());
    for s in &b.shards {
        let dup = s.try_clone().map_err(|e| {
            StartError::Io(format!("cannot duplicate the socket of {}: {e}", b.addr))
        })?;
        out.push(mio::net::TcpListener::from_std(dup));
    }
    Ok((b.addr, out))
}

/// Bind what is new and start a generation of workers on `config`. On
/// failure, sockets bound for it are closed again and nothing runs.
fn start_generation(
    config: Config,
    generation: usize,
    sockets: &mut HashMap<SocketAddr, Bound>,
    process: &Arc<Process>,
    tx: &mpsc::Sender<Message>,
) -> Result<Generation, StartError> {
    let mut fresh = Vec::new();
    let result = build_generation(config, generation, sockets, &mut fresh, process, tx);
    match &result {
        Ok(g) => set_backlogs(&g.shared.config, sockets),
        Err(_) => {
            for addr in fresh {
                sockets.remove(&addr);
            }
        }
    }
    result
}

/// Give the sockets a generation kept the backlog it asks for (a new one
/// was bound with it): listen(2) again on a listening socket only sets its
/// backlog, and its queue stays. Done once the generation runs, so that a
/// reload that fails changes nothing.
fn set_backlogs(config: &Config, sockets: &mut HashMap<SocketAddr, Bound>) {
    for l in &config.listeners {
        let Some(b) = sockets.get_mut(&l.listen) else {
            continue;
        };
        if b.backlog == config.backlog {
            continue;
        }
        for s in &b.shards {
            // SAFETY: listen(2) on a descriptor this Bound owns and keeps open.
            if unsafe { libc::listen(s.as_raw_fd(), config.backlog) } != 0 {
                let e = std::io::Error::last_os_error();
                eprintln!(
                    "ferry: cannot set the backlog of {} to {}: {e}",
                    b.addr, config.backlog
                );
            }
        }
        b.backlog = config.backlog;
    }
}

fn build_generation(
    config: Config,
    generation: usize,
    sockets: &mut HashMap<SocketAddr, Bound>,
    fresh: &mut Vec<SocketAddr>,
    process: &Arc<Process>,
    tx: &mpsc::Sender<Message>,
) -> Result<Generation, StartError> {
    crate::worker::Reserve::of(&config)
        .check(&config)
        .map_err(StartError::Io)?;
    let workers = config.workers;
    // listeners[worker][listener]. Every listener's backends get one shared
    // health state, and a range in each worker's list.
    let mut per_worker: Vec<Vec<Listener>> = (0..workers).map(|_| Vec::new()).collect();
    let mut backends: Vec<Arc<BackendState>> = Vec::new();
    // The listener (index) of each backend.
    let mut listener_of: Vec<usize> = Vec::new();
    let listener_count = config.listeners.len();
    let mut banners = Vec::new();
    let mut health = Vec::new();
    for (listener_of_index, lc) in config.listeners.iter().enumerate() {
        let (bound, shards) = shards_for(lc.listen, &config, sockets, fresh)?;
        let mut targets: Vec<String> = lc.backends.iter().map(|b| b.to_string()).collect();
        if lc.mode == Mode::Forward {
            targets.push("the origin each request names".into());
        }
        banners.push(format!(
            "ferry: listening on {bound} -> {} ({}, {} workers)",
            targets.join(", "),
            lc.mode,
            workers
        ));
        let access_log = match &lc.http.access_log {
            Some(path) if lc.mode != Mode::Tcp => Some(
                AccessLog::start(path, ACCESS_LOG_QUEUE)
                    .map_err(|e| StartError::Io(format!(
                        "listener {}: cannot open the access log (--access-log, access_log) {path}: {e}",
                        lc.name
                    )))?,
            ),
            _ => None,
        };
        let first = backends.len();
        listener_of.extend(std::iter::repeat_n(listener_of_index, lc.backends.len()));
        backends.extend(
            lc.backends
                .iter()
                .map(|&addr| Arc::new(BackendState::new(addr, workers))),
        );
        for (w, socket) in shards.into_iter().enumerate() {
            let mut listener = Listener::new(
                socket,
                lc.mode,
                first,
                lc.backends.len(),
                lc.balance,
                lc.http.clone(),
            );
            listener.access_log = access_log.clone();
            listener.forward = lc.forward.clone();
            per_worker[w].push(listener);
        }
        if lc.mode == Mode::Http {
            health.push((backends[first..].to_vec(), lc.health.clone()));
        }
    }
    let shared = Arc::new(Shared {
        config,
        global: process.global.clone(),
        counters: (0..workers)
            .map(|_| WorkerCounters::new(listener_count))
            .collect(),
        backends: listener_of
            .into_iter()
            .zip(backends.iter().cloned())
            .collect(),
        stopping: AtomicBool::new(false),
        retiring: AtomicBool::new(false),
        retire_within_us: AtomicU64::new(0),
        started: Instant::now(),
    });
    let mut wakers = Vec::with_capacity(workers);
    let mut polls = Vec::with_capacity(workers);
    for _ in 0..workers {
        let poll = Poll::new().map_err(|e| StartError::Io(format!("epoll_create failed: {e}")))?;
        let waker = Waker::new(poll.registry(), crate::token::WAKER)
            .map_err(|e| StartError::Io(format!("eventfd failed: {e}")))?;
        wakers.push(Arc::new(waker));
        polls.push(poll);
    }
    // Forward mode resolves names on threads of their own, never on a
    // worker; they end when the generation's workers drop their handles.
    let forward = shared
        .config
        .listeners
        .iter()
        .any(|l| l.mode == Mode::Forward);
    let mut inboxes = Vec::new();
    let mut resolver = None;
    if forward {
        let (handle, receivers) = resolver::start(wakers.clone())
            .map_err(|e| StartError::Io(format!("cannot start the resolver threads: {e}")))?;
        resolver = Some(handle);
        inboxes = receivers;
    }
    // Health checkers end once no worker holds their backends any more.
    for (checked, config) in health {
        std::thread::Builder::new()
            .name("ferry-health".into())
            .spawn(move || upstream::health::run(checked, config))
            .map_err(|e| StartError::Io(format!("cannot start the health checker: {e}")))?;
    }
    process
        .generations
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(shared.clone());
    let mut inboxes = inboxes.into_iter();
    for (id, (listeners, poll)) in per_worker.into_iter().zip(polls).enumerate() {
        let dns = resolver
            .as_ref()
            .zip(inboxes.next())
            .map(|(r, inbox)| Dns::new(id, r.clone(), inbox));
        let worker = Worker::new(id, poll, shared.clone(), listeners, backends.clone(), dns);
        let tx = tx.clone();
        std::thread::Builder::new()
            .name(format!("ferry-worker-{id}"))
            .spawn(move || {
                let result = worker.run().map_err(|e| e.to_string());
                let _ = tx.send(Message::WorkerExited {
                    generation,
                    id,
                    result,
                });
            })
            .map_err(|e| StartError::Io(format!("cannot start worker thread: {e}")))?;
    }
    for banner in banners {
        eprintln!("{banner}");
    }
    Ok(Generation {
        shared,
        wakers,
        live: workers,
    })
}
