//! Connection threads: each client connection lives its whole life on one thread, as an
//! nginx worker's do. A thread runs its own single-threaded tokio runtime, so a connection's
//! task, its upstream lane and its timers are never handed between threads: no work
//! stealing, no cross-thread wake-ups, no shared run queue. Measured on 2 cores: 10–17 % more
//! forwarded requests per second than on the work-stealing runtime (BENCHMARKS.md).
//!
//! Nothing on a connection thread may block it: work that can take long (SAML signature
//! checks, password hashes) runs on the blocking pool.
//!
//! With `server.cpu_affinity = "auto"` and a CPU per thread, each thread keeps to its CPU,
//! as nginx's `worker_cpu_affinity` does: two always-busy threads the scheduler stacks on one
//! core take turns a whole tick each (4 ms here), and each one's connections wait with it.
//! The blocking pool's threads are not pinned: they may use every CPU sidegate may. On by
//! default; `"off"` leaves placement to the kernel.

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::net::TcpStream;
use tokio::runtime::Handle;

use crate::config::CpuAffinity;

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

/// Which CPU each of `count` threads keeps to, if they are pinned: with `Auto`, only when
/// the process may use exactly `count` CPUs, so each thread has one of its own.
fn plan(mode: CpuAffinity, allowed: &[usize], count: usize) -> Option<Vec<usize>> {
    match mode {
        CpuAffinity::Auto if count > 0 && allowed.len() == count => Some(allowed.to_vec()),
        CpuAffinity::Auto | CpuAffinity::Off => None,
    }
}

impl Threads {
    /// Starts `count` threads (at least one), each with its own runtime, pinned to CPUs as
    /// `affinity` says.
    pub fn start(count: usize, affinity: CpuAffinity) -> Result<Self, StartError> {
        let count = count.max(1);
        let allowed = cpu::allowed();
        let cpus = plan(affinity, &allowed, count);
        match &cpus {
            Some(cpus) => tracing::info!(
                ?cpus,
                "connection threads pinned, one per CPU (server.cpu_affinity = \"auto\")"
            ),
            None if affinity == CpuAffinity::Auto => tracing::debug!(
                cpus = allowed.len(),
                threads = count,
                "connection threads not pinned: not one CPU per thread"
            ),
            None => {}
        }
        Self::start_on(count, cpus, Arc::new(allowed))
    }

    /// Starts `count` threads; thread i keeps to `cpus[i]` if given, and its runtime's
    /// blocking threads get `allowed` back.
    fn start_on(
        count: usize,
        cpus: Option<Vec<usize>>,
        allowed: Arc<Vec<usize>>,
    ) -> Result<Self, StartError> {
        let threads = (0..count)
            .map(|index| {
                let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
                let (ready, handle) = std::sync::mpsc::channel();
                let cpu = cpus.as_ref().and_then(|c| c.get(index).copied());
                let allowed = allowed.clone();
                std::thread::Builder::new()
                    .name(format!("sidegate-conn-{index}"))
                    .spawn(move || {
                        INDEX.with(|i| i.set(Some(index)));
                        let mut rt = tokio::runtime::Builder::new_current_thread();
                        rt.enable_all();
                        if let Some(cpu) = cpu {
                            if let Err(e) = cpu::keep_to(&[cpu]) {
                                tracing::warn!(thread = index, cpu, error = %e, "could not pin a connection thread; it runs unpinned");
                            }
                            // Threads inherit their creator's mask: the blocking pool's
                            // (password hashes, SAML checks) must not crowd this CPU.
                            rt.on_thread_start(move || {
                                let _ = cpu::keep_to(&allowed);
                            });
                        }
                        let rt = rt.build();
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

/// The process's CPU affinity, per thread (Linux; elsewhere nothing is pinned).
mod cpu {
    /// The CPUs the calling thread may run on, in order; empty if unknown.
    #[cfg(target_os = "linux")]
    pub fn allowed() -> Vec<usize> {
        // SAFETY: cpu_set_t is plain bits; the kernel writes at most its size into it.
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        let size = std::mem::size_of::<libc::cpu_set_t>();
        if unsafe { libc::sched_getaffinity(0, size, &mut set) } != 0 {
            return Vec::new();
        }
        (0..libc::CPU_SETSIZE as usize)
            // SAFETY: every index is below CPU_SETSIZE, the set's size in bits.
            .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) })
            .collect()
    }

    /// Lets the calling thread run only on `cpus`.
    #[cfg(target_os = "linux")]
    pub fn keep_to(cpus: &[usize]) -> std::io::Result<()> {
        // SAFETY: as in `allowed`; CPUs past CPU_SETSIZE are refused before CPU_SET.
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        for &c in cpus {
            if c >= libc::CPU_SETSIZE as usize {
                return Err(std::io::Error::other(format!("CPU {c} is out of range")));
            }
            unsafe { libc::CPU_SET(c, &mut set) };
        }
        let size = std::mem::size_of::<libc::cpu_set_t>();
        match unsafe { libc::sched_setaffinity(0, size, &set) } {
            0 => Ok(()),
            _ => Err(std::io::Error::last_os_error()),
        }
    }

    #[cfg(not(target_os = "linux"))]
    pub fn allowed() -> Vec<usize> {
        Vec::new()
    }

    #[cfg(not(target_os = "linux"))]
    pub fn keep_to(_cpus: &[usize]) -> std::io::Result<()> {
        Err(std::io::Error::other("CPU affinity is only set on Linux"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Connections go to the least busy thread, stay there, and are counted until they end.
    #[tokio::test]
    async fn connections_go_to_the_least_busy_thread_and_are_counted_until_they_end() {
        let threads = Threads::start(2, CpuAffinity::Off).expect("threads");
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

    #[test]
    fn auto_pins_only_with_one_cpu_per_thread() {
        use CpuAffinity::{Auto, Off};
        assert_eq!(plan(Auto, &[0, 1], 2), Some(vec![0, 1]));
        assert_eq!(
            plan(Auto, &[4, 6], 2),
            Some(vec![4, 6]),
            "a cpuset's own CPUs"
        );
        assert_eq!(
            plan(Auto, &[0, 1, 2, 3], 2),
            None,
            "a quota on a bigger node"
        );
        assert_eq!(plan(Auto, &[0, 1], 3), None, "more threads than CPUs");
        assert_eq!(plan(Auto, &[], 2), None, "affinity unknown");
        assert_eq!(plan(Off, &[0, 1], 2), None);
    }

    /// A pinned thread runs on its CPU only; blocking work it starts (password hashes, SAML
    /// checks) may use every CPU. Run on 2+ CPUs, the blocking half fails if the pool's
    /// threads keep the mask they inherit.
    #[tokio::test]
    async fn a_pinned_thread_keeps_to_its_cpu_and_its_blocking_work_does_not() {
        let allowed = cpu::allowed();
        let first = *allowed.first().expect("this process may run somewhere");
        let threads =
            Threads::start_on(1, Some(vec![first]), Arc::new(allowed.clone())).expect("threads");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let _client = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (stream, _) = listener.accept().await.unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel();
        threads.spawn(stream, move |_stream| async move {
            let own = cpu::allowed();
            let blocking = tokio::task::spawn_blocking(cpu::allowed).await.ok();
            let _ = tx.send((own, blocking));
        });
        let (own, blocking) = tokio::time::timeout(Duration::from_secs(5), rx)
            .await
            .expect("the connection runs")
            .expect("an answer");
        assert_eq!(own, vec![first], "the connection thread keeps to its CPU");
        assert_eq!(
            blocking,
            Some(allowed),
            "blocking work may use every CPU sidegate may"
        );
    }
}
