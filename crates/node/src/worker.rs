//! Background work under one supervisor: every long-running job of the server (expiry sweep,
//! exchange retention, bridge, relay, IntelMQ transports, configuration reload) is a
//! [`Worker`] started by one [`Supervisor`] and stopped by it, in one way, with a deadline.
//!
//! The shape follows Garage's `background` module: a worker is a value that runs until it is
//! told to stop ([`Stop`]), then returns after it has released what it holds. Stopping is
//! cooperative and bounded: [`Supervisor::shutdown`] signals every worker, waits up to its
//! deadline for all of them, then aborts whatever is still running and says which ones (a
//! worker that ignores its stop signal is a bug, never a hung shutdown). A worker that ends on
//! its own before the stop, or panics, is logged with its name; the others go on.
//!
//! Blocking work (a sweep of the store) runs on tokio's blocking pool and is awaited, never
//! detached: when a periodic worker is stopped in the middle of a sweep, it returns after the
//! sweep, so the stores are not closed under it ([`Periodic`]).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinSet;

/// A worker's future.
pub type WorkerFuture = Pin<Box<dyn Future<Output = Result<(), WorkerError>> + Send>>;

/// Why a worker ended with an error (logged by the supervisor, with the worker's name).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct WorkerError(pub String);

impl WorkerError {
    /// From any displayable error.
    pub fn from_display(e: impl std::fmt::Display) -> Self {
        Self(e.to_string())
    }
}

/// One background job.
pub trait Worker: Send + 'static {
    /// Its name in logs and in the shutdown report.
    fn name(&self) -> String;
    /// Runs until `stop` fires (or the job is over), then returns once it has released what
    /// it holds.
    fn run(self: Box<Self>, stop: Stop) -> WorkerFuture;
}

/// The stop signal a worker watches. Cheap to clone.
#[derive(Clone)]
pub struct Stop(watch::Receiver<bool>);

impl Stop {
    /// Resolves once the supervisor asks the workers to stop (at once if it already has).
    pub async fn stopped(&mut self) {
        // An error means the supervisor is gone: stop too.
        let _ = self.0.wait_for(|s| *s).await;
    }

    /// True once the stop was asked for.
    pub fn is_stopped(&self) -> bool {
        *self.0.borrow()
    }

    /// The underlying channel, for subsystems that take a `watch::Receiver<bool>` as their
    /// shutdown signal.
    pub fn receiver(&self) -> watch::Receiver<bool> {
        self.0.clone()
    }
}

/// What [`Supervisor::shutdown`] found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Workers that returned within the deadline.
    pub stopped: Vec<String>,
    /// Workers still running at the deadline, aborted.
    pub aborted: Vec<String>,
}

/// Starts workers and stops them all.
pub struct Supervisor {
    stop: watch::Sender<bool>,
    tasks: JoinSet<(String, Result<(), WorkerError>)>,
    names: Vec<(tokio::task::Id, String)>,
}

impl Default for Supervisor {
    fn default() -> Self {
        Self::new()
    }
}

impl Supervisor {
    /// No workers yet. Must be used inside a tokio runtime.
    pub fn new() -> Self {
        Self {
            stop: watch::channel(false).0,
            tasks: JoinSet::new(),
            names: Vec::new(),
        }
    }

    /// Starts `worker` on the runtime.
    pub fn spawn(&mut self, worker: Box<dyn Worker>) {
        let name = worker.name();
        let fut = worker.run(Stop(self.stop.subscribe()));
        let label = name.clone();
        let handle = self.tasks.spawn(async move {
            let r = fut.await;
            match &r {
                Ok(()) => tracing::debug!(worker = %label, "worker ended"),
                Err(e) => tracing::warn!(worker = %label, error = %e, "worker ended with an error"),
            }
            (label, r)
        });
        self.names.push((handle.id(), name));
    }

    /// The stop signal of this supervisor's workers, for a subsystem started outside a
    /// worker that must stop with them.
    pub fn stop_signal(&self) -> Stop {
        Stop(self.stop.subscribe())
    }

    /// How many workers were started.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// True when no worker was started.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// Asks every worker to stop and waits up to `deadline` for all of them; whatever is
    /// still running then is aborted and named in the report (and in the log, as an error).
    pub async fn shutdown(mut self, deadline: Duration) -> ShutdownReport {
        let _ = self.stop.send(true);
        let mut finished = Vec::new();
        let waited = tokio::time::timeout(deadline, async {
            while let Some(done) = self.tasks.join_next_with_id().await {
                let id = match done {
                    Ok((id, _)) => id,
                    Err(e) => {
                        if e.is_panic() {
                            tracing::error!(worker = %self.name_of(e.id()), "worker panicked");
                        }
                        e.id()
                    }
                };
                finished.push(id);
            }
        })
        .await;
        if waited.is_err() {
            self.tasks.abort_all();
            while self.tasks.join_next().await.is_some() {}
        }
        let mut report = ShutdownReport::default();
        for (id, name) in &self.names {
            if finished.contains(id) {
                report.stopped.push(name.clone());
            } else {
                tracing::error!(worker = %name, ?deadline, "worker did not stop in time; aborted");
                report.aborted.push(name.clone());
            }
        }
        report
    }

    fn name_of(&self, id: tokio::task::Id) -> String {
        self.names
            .iter()
            .find(|(i, _)| *i == id)
            .map_or_else(|| "?".to_owned(), |(_, n)| n.clone())
    }
}

/// A blocking job run every `every` (first run after one interval), on the blocking pool;
/// the stop waits for a run in progress to finish. A failed run is logged and the next one
/// happens on time.
pub struct Periodic {
    name: String,
    every: Duration,
    job: Arc<dyn Fn() -> Result<(), WorkerError> + Send + Sync>,
}

impl Periodic {
    /// `job` every `every` (at least one second apart).
    pub fn new(
        name: impl Into<String>,
        every: Duration,
        job: impl Fn() -> Result<(), WorkerError> + Send + Sync + 'static,
    ) -> Self {
        Self {
            name: name.into(),
            every: every.max(Duration::from_secs(1)),
            job: Arc::new(job),
        }
    }
}

impl Worker for Periodic {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn run(self: Box<Self>, mut stop: Stop) -> WorkerFuture {
        Box::pin(async move {
            let mut tick =
                tokio::time::interval_at(tokio::time::Instant::now() + self.every, self.every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = stop.stopped() => return Ok(()),
                    _ = tick.tick() => {}
                }
                let job = Arc::clone(&self.job);
                // Awaited, not detached: a stop during the run waits for it.
                match tokio::task::spawn_blocking(move || job()).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::warn!(worker = %self.name, error = %e, "run failed"),
                    Err(e) => tracing::error!(worker = %self.name, error = %e, "run panicked"),
                }
            }
        })
    }
}

/// A worker made of an async function of the stop signal (the adapters of the subsystems
/// that own their tasks: relay, IntelMQ transports, bridge, reload).
pub struct Task<F> {
    name: String,
    run: F,
}

impl<F, Fut> Task<F>
where
    F: FnOnce(Stop) -> Fut + Send + 'static,
    Fut: Future<Output = Result<(), WorkerError>> + Send + 'static,
{
    /// A worker named `name` running `run(stop)`.
    pub fn new(name: impl Into<String>, run: F) -> Self {
        Self {
            name: name.into(),
            run,
        }
    }
}

impl<F, Fut> Worker for Task<F>
where
    F: FnOnce(Stop) -> Fut + Send + 'static,
    Fut: Future<Output = Result<(), WorkerError>> + Send + 'static,
{
    fn name(&self) -> String {
        self.name.clone()
    }

    fn run(self: Box<Self>, stop: Stop) -> WorkerFuture {
        Box::pin((self.run)(stop))
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn every_worker_is_stopped_and_named() {
        let mut sup = Supervisor::new();
        for n in ["a", "b"] {
            sup.spawn(Box::new(Task::new(n, |mut stop: Stop| async move {
                stop.stopped().await;
                Ok(())
            })));
        }
        assert_eq!(sup.len(), 2);
        let mut r = sup.shutdown(Duration::from_secs(5)).await;
        r.stopped.sort();
        assert_eq!(r.stopped, vec!["a".to_owned(), "b".to_owned()]);
        assert!(r.aborted.is_empty());
    }

    #[tokio::test]
    async fn a_worker_ignoring_the_stop_is_aborted_at_the_deadline() {
        let mut sup = Supervisor::new();
        sup.spawn(Box::new(Task::new("good", |mut stop: Stop| async move {
            stop.stopped().await;
            Ok(())
        })));
        sup.spawn(Box::new(Task::new("stuck", |_stop: Stop| async move {
            std::future::pending::<()>().await;
            Ok(())
        })));
        let r = sup.shutdown(Duration::from_millis(200)).await;
        assert_eq!(r.stopped, vec!["good".to_owned()]);
        assert_eq!(r.aborted, vec!["stuck".to_owned()]);
    }

    #[tokio::test]
    async fn a_failing_or_panicking_worker_does_not_stop_the_others() {
        let mut sup = Supervisor::new();
        sup.spawn(Box::new(Task::new("fails", |_stop: Stop| async move {
            Err(WorkerError("no".into()))
        })));
        sup.spawn(Box::new(Task::new("panics", |_stop: Stop| async move {
            panic!("worker bug")
        })));
        let alive = Arc::new(AtomicUsize::new(0));
        let a = Arc::clone(&alive);
        sup.spawn(Box::new(Task::new(
            "lives",
            move |mut stop: Stop| async move {
                stop.stopped().await;
                a.fetch_add(1, Ordering::SeqCst);
                Ok(())
            },
        )));
        tokio::time::sleep(Duration::from_millis(50)).await;
        let r = sup.shutdown(Duration::from_secs(5)).await;
        assert_eq!(
            alive.load(Ordering::SeqCst),
            1,
            "the live worker saw its stop"
        );
        assert_eq!(r.stopped.len(), 3);
        assert!(r.aborted.is_empty());
    }

    #[tokio::test]
    async fn a_stop_during_a_periodic_run_waits_for_the_run() {
        let runs = Arc::new(AtomicUsize::new(0));
        let finished = Arc::new(AtomicUsize::new(0));
        let (r, f) = (Arc::clone(&runs), Arc::clone(&finished));
        let mut sup = Supervisor::new();
        sup.spawn(Box::new(Periodic::new(
            "slow",
            Duration::from_secs(1),
            move || {
                r.fetch_add(1, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(600));
                f.fetch_add(1, Ordering::SeqCst);
                Ok(())
            },
        )));
        // The first run starts after one interval; stop in the middle of it.
        tokio::time::sleep(Duration::from_millis(1_300)).await;
        assert_eq!(runs.load(Ordering::SeqCst), 1, "one run started");
        let report = sup.shutdown(Duration::from_secs(10)).await;
        assert_eq!(report.stopped, vec!["slow".to_owned()]);
        assert_eq!(
            finished.load(Ordering::SeqCst),
            1,
            "shutdown returned only after the run in progress finished"
        );
    }
}
