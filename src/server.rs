//! Start the workers, handle signals, stop gracefully, print the report.
//!
//! The main thread binds every listener (one SO_REUSEPORT socket per worker,
//! so a bad address fails before anything runs), starts one worker thread
//! per core, then sleeps on a channel that carries signals (from a
//! signal-hook thread) and worker exits:
//!
//! * SIGUSR1: print the statistics report and go on.
//! * SIGINT/SIGTERM: tell the workers to stop accepting and finish their
//!   pairs within --grace; once all have exited, print the report, exit 0.
//!   A second such signal exits at once.

use crate::config::{Config, Mode};
use crate::forward::resolver::{self, Dns};
use crate::http::access_log::AccessLog;
use crate::net::{self, listener::BindError};
use crate::stats::{self, Global, SharedCounters};
use crate::upstream::{self, BackendState};

/// Access-log records that may wait for the logger before new ones are dropped.
const ACCESS_LOG_QUEUE: usize = 16 * 1024;
use crate::worker::{Listener, Shared, Worker};
use mio::{Poll, Waker};
use signal_hook::consts::{SIGINT, SIGTERM, SIGUSR1};
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};
use std::time::Instant;

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

enum Message {
    Signal(i32),
    WorkerExited(usize, Result<(), String>),
}

/// Run the proxy until it is stopped by a signal.
pub fn run(config: Config) -> Result<(), StartError> {
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
    let workers = config.workers;
    // Bind everything first: listeners[worker][listener]. Every listener's
    // backends get one shared health state, and a range in each worker's list.
    let mut per_worker: Vec<Vec<Listener>> = (0..workers).map(|_| Vec::new()).collect();
    let mut backends: Vec<Arc<BackendState>> = Vec::new();
    let mut banners = Vec::new();
    for lc in &config.listeners {
        let (bound, shards) = net::listener::bind_shards(lc.listen, workers, config.backlog)
            .map_err(StartError::Bind)?;
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
                    .map_err(|e| StartError::Io(format!("--access-log {path}: {e}")))?,
            ),
            _ => None,
        };
        let first = backends.len();
        backends.extend(
            lc.backends
                .iter()
                .map(|&addr| Arc::new(BackendState::new(addr))),
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
            let checked = backends[first..].to_vec();
            let health = lc.health.clone();
            std::thread::Builder::new()
                .name("ferry-health".into())
                .spawn(move || upstream::health::run(checked, health))
                .map_err(|e| StartError::Io(format!("cannot start the health checker: {e}")))?;
        }
    }
    let shared = Arc::new(Shared {
        config,
        global: Global::default(),
        counters: (0..workers).map(|_| SharedCounters::default()).collect(),
        stopping: Default::default(),
        started: Instant::now(),
    });
    let (tx, rx) = mpsc::channel();
    let mut wakers = Vec::with_capacity(workers);
    let mut polls = Vec::with_capacity(workers);
    for _ in 0..workers {
        let poll = Poll::new().map_err(|e| StartError::Io(format!("epoll_create failed: {e}")))?;
        let waker = Waker::new(poll.registry(), crate::token::WAKER)
            .map_err(|e| StartError::Io(format!("eventfd failed: {e}")))?;
        wakers.push(Arc::new(waker));
        polls.push(poll);
    }
    // Forward mode resolves names on threads of their own, never on a worker.
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
                let _ = tx.send(Message::WorkerExited(id, result));
            })
            .map_err(|e| StartError::Io(format!("cannot start worker thread: {e}")))?;
    }
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGUSR1])
        .map_err(|e| StartError::Io(format!("cannot install signal handlers: {e}")))?;
    std::thread::Builder::new()
        .name("ferry-signals".into())
        .spawn(move || {
            for signal in signals.forever() {
                if tx.send(Message::Signal(signal)).is_err() {
                    break;
                }
            }
        })
        .map_err(|e| StartError::Io(format!("cannot start signal thread: {e}")))?;
    for banner in banners {
        eprintln!("{banner}");
    }

    let report = || {
        let totals = stats::total(&shared.counters);
        eprint!(
            "{}",
            stats::render_report(&totals, &shared.global, shared.started.elapsed())
        );
    };
    let stop = || {
        shared.stopping.store(true, Ordering::SeqCst);
        for waker in &wakers {
            let _ = waker.wake();
        }
    };
    let mut exited = 0;
    let mut failed = false;
    while let Ok(message) = rx.recv() {
        match message {
            Message::Signal(SIGUSR1) => report(),
            Message::Signal(_) if shared.stopping.load(Ordering::SeqCst) => {
                eprintln!("ferry: second signal, exiting now");
                std::process::exit(1);
            }
            Message::Signal(_) => {
                eprintln!(
                    "ferry: stopping; live connections have {:?} to finish",
                    shared.config.grace
                );
                stop();
            }
            Message::WorkerExited(id, result) => {
                exited += 1;
                if let Err(e) = result {
                    eprintln!("ferry: worker {id} failed: {e}; stopping");
                    failed = true;
                    stop();
                }
                if exited == workers {
                    break;
                }
            }
        }
    }
    report();
    if failed {
        std::process::exit(1);
    }
    Ok(())
}
