//! Connection threads: each client connection lives its whole life on one thread, as an
//! nginx worker's do. A thread runs its own single-threaded tokio runtime, so a connection's
//! task, its upstream lane and its timers are never handed between threads: no work
//! stealing, no cross-thread wake-ups, no shared run queue. Measured on 2 cores: 10–17 % more
//! forwarded requests per second than on the work-stealing runtime (BENCHMARKS.md).
//!
//! Nothing on a connection thread may block it: work that can take long (SAML signature
//! checks, password hashes) runs on the blocking pool.

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::net::TcpStream;
use tokio::runtime::Handle;

thread_local! {
    static INDEX: Cell<Option<usize>> = const { Cell::new(None) };
}

/// Which connection thread this is (0-based), `None` on any other thread. Lets a stage keep
/// one of something per thread, e.g. the upstream pool, so its tasks stay on that thread.
pub fn current() -> Option<usize> {
    INDEX.with(Cell::get)
}

/// The connection threads of one running instance; they stop when it is dropped.
pub struct Threads {
    threads: Box<[Thread]>,
}

/// One connection thread, as the acceptor sees it.
struct Thread {
    handle: Handle,
    /// Connections on this thread now: a new one goes to the least busy thread.
    live: Arc<AtomicUsize>,
    /// Dropped with `Threads`: the thread's runtime stops and its thread ends.
    _stop: tokio::sync::oneshot::Sender<()>,
}

/// Could not start a connection thread.
#[derive(Debug, thiserror::Error)]
#[error("could not start connection thread {index}: {source}")]
pub struct StartError {
    index: usize,
    source: std::io::Error,
}

/// Counts a connection on its thread until dropped.
struct Live(Arc<AtomicUsize>);

impl Drop for Live {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Threads {
    /// Starts `count` threads (at least one), each with its own runtime.
    pub fn start(count: usize) -> Result<Self, StartError> {
        let threads = (0..count.max(1))
            .map(|index| {
                let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
                let (ready, handle) = std::sync::mpsc::channel();
                std::thread::Builder::new()
                    .name(format!("sidegate-conn-{index}"))
                    .spawn(move || {
                        INDEX.with(|i| i.set(Some(index)));
                        let rt = tokio::runtime::Builder::new_current_thread()
                            .enable_all()
                            .build();
                        let rt = match rt {
                            Ok(rt) => rt,
                            Err(e) => {
                                let _ = ready.send(Err(e));
                                return;
                            }
                        };
                        let _ = ready.send(Ok(rt.handle().clone()));
                        // Runs this thread's connections until `Threads` is dropped.
                        let _ = rt.block_on(stopped);
                    })
                    .map_err(|source| StartError { index, source })?;
                let handle = handle
                    .recv()
                    .map_err(|_| std::io::Error::other("the thread ended at start"))
                    .and_then(|r| r)
                    .map_err(|source| StartError { index, source })?;
                Ok(Thread {
                    handle,
                    live: Arc::new(AtomicUsize::new(0)),
                    _stop: stop,
                })
            })
            .collect::<Result<Vec<_>, StartError>>()?;
        Ok(Threads {
            threads: threads.into_boxed_slice(),
        })
    }

    /// Tasks alive on the connection threads (for the `tasks` metric).
    pub fn alive_tasks(&self) -> usize {
        self.threads
            .iter()
            .map(|t| t.handle.metrics().num_alive_tasks())
            .sum()
    }

    /// Runs `serve(stream)` on the thread with the fewest connections. The stream moves
    /// to that thread's runtime, so its readiness is reported there.
    pub fn spawn<F, Fut>(&self, stream: TcpStream, serve: F)
    where
        F: FnOnce(TcpStream) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let Some(thread) = self
            .threads
            .iter()
            .min_by_key(|t| t.live.load(Ordering::Relaxed))
        else {
            return;
        };
        let std = match stream.into_std() {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(error = %e, "connection dropped: could not move it to its thread");
                return;
            }
        };
        thread.live.fetch_add(1, Ordering::Relaxed);
        let live = Live(thread.live.clone());
        thread.handle.spawn(async move {
            let _live = live;
            match TcpStream::from_std(std) {
                Ok(stream) => serve(stream).await,
                Err(e) => tracing::debug!(error = %e, "connection dropped: could not register it"),
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Connections go to the least busy thread, stay there, and are counted until they end.
    #[tokio::test]
    async fn connections_go_to_the_least_busy_thread_and_are_counted_until_they_end() {
        let threads = Threads::start(2).expect("threads");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (seen_tx, mut seen) = tokio::sync::mpsc::unbounded_channel();
        let mut clients = Vec::new();
        let mut release = Vec::new();
        for _ in 0..4 {
            clients.push(tokio::net::TcpStream::connect(addr).await.unwrap());
            let (stream, _) = listener.accept().await.unwrap();
            let (done, wait) = tokio::sync::oneshot::channel::<()>();
            release.push(done);
            let seen_tx = seen_tx.clone();
            threads.spawn(stream, move |_stream| async move {
                let name = std::thread::current().name().map(str::to_owned);
                let _ = seen_tx.send(name);
                let _ = wait.await;
            });
        }
        let mut names = Vec::new();
        for _ in 0..4 {
            let name = tokio::time::timeout(Duration::from_secs(5), seen.recv())
                .await
                .expect("every connection runs")
                .expect("a thread name");
            names.push(name.expect("connection threads are named"));
        }
        names.sort();
        assert_eq!(
            names,
            [
                "sidegate-conn-0",
                "sidegate-conn-0",
                "sidegate-conn-1",
                "sidegate-conn-1"
            ],
            "two connections on each thread"
        );
        let live = |t: &Threads| {
            t.threads
                .iter()
                .map(|t| t.live.load(Ordering::Relaxed))
                .collect::<Vec<_>>()
        };
        assert_eq!(live(&threads), [2, 2]);
        // The first connection ends: the next one goes to the thread it left.
        drop(release.remove(0));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while live(&threads).iter().sum::<usize>() != 3 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "an ended connection is uncounted"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let freed = live(&threads)
            .iter()
            .position(|&n| n == 1)
            .expect("one thread has one");
        clients.push(tokio::net::TcpStream::connect(addr).await.unwrap());
        let (stream, _) = listener.accept().await.unwrap();
        let seen_tx = seen_tx.clone();
        threads.spawn(stream, move |_stream| async move {
            let _ = seen_tx.send(std::thread::current().name().map(str::to_owned));
        });
        let name = tokio::time::timeout(Duration::from_secs(5), seen.recv())
            .await
            .expect("the fifth connection runs")
            .expect("a thread name");
        assert_eq!(
            name.as_deref(),
            Some(format!("sidegate-conn-{freed}").as_str())
        );
        assert!(
            threads.alive_tasks() >= 3,
            "the held connections are alive tasks"
        );
    }
}
