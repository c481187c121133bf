//! The threads that render `/metrics`, `/` and `/events` (`oomwatch-render`), apart from the
//! HTTP thread and below the event loop's priority.
//!
//! A scrape of a big node costs milliseconds of CPU. Rendered on the HTTP thread, it would hold
//! `/healthz` and new connections behind it; rendered at the event loop's nice value, it would
//! take a CPU from the loop for a whole scheduler slice when a kill arrives during a scrape
//! flood. These threads run [`NICE_BELOW_LOOP`] nice levels below the process (raising one's
//! own nice value needs no privilege), set in their prelude before the seccomp filter, which
//! does not allow `setpriority`. Jobs wait in a bounded queue; a full queue is answered
//! at once with an error (the handler's 503), never by waiting.

use std::{
    io,
    sync::{mpsc, Arc, Mutex},
};

use tokio::sync::oneshot;

use crate::sys::{caps, thread};

/// How far below the event loop the renderers run (the agent's `--nice` -10 puts them at 0,
/// the nice value of ordinary processes).
pub const NICE_BELOW_LOOP: i32 = 10;
/// Jobs that may wait for a renderer; beyond it a request is refused at once.
pub const QUEUE: usize = 32;

type Job = Box<dyn FnOnce() + Send>;

/// Why a job was not rendered.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RenderError {
    #[error("every renderer is busy and {QUEUE} requests wait: try again")]
    Busy,
    #[error("the renderer stopped")]
    Stopped,
}

/// The renderer threads and their queue.
#[derive(Debug)]
pub struct Renderer {
    jobs: mpsc::SyncSender<Job>,
}

impl Renderer {
    /// Starts `threads` renderers at nice `own_nice + NICE_BELOW_LOOP` (at most 19), each with
    /// its capabilities dropped; returns once every one of them is running.
    pub fn start(threads: usize, own_nice: i32) -> io::Result<Arc<Renderer>> {
        let (tx, rx) = mpsc::sync_channel::<Job>(QUEUE);
        let rx = Arc::new(Mutex::new(rx));
        let nice = own_nice.saturating_add(NICE_BELOW_LOOP).min(19);
        for i in 0..threads.max(1) {
            let rx = Arc::clone(&rx);
            let prelude = move || {
                caps::drop_this_thread()?;
                caps::set_own_nice(nice)
            };
            thread::spawn_after(&format!("oomwatch-render-{i}"), prelude, move || work(&rx))?;
        }
        Ok(Arc::new(Renderer { jobs: tx }))
    }

    /// Runs `f` on a renderer and returns its result.
    pub async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, RenderError> {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = tx.send(f());
        });
        self.jobs.try_send(job).map_err(|e| match e {
            mpsc::TrySendError::Full(_) => RenderError::Busy,
            mpsc::TrySendError::Disconnected(_) => RenderError::Stopped,
        })?;
        rx.await.map_err(|_| RenderError::Stopped)
    }
}

/// One renderer: takes jobs until the queue's sender is gone.
fn work(rx: &Mutex<mpsc::Receiver<Job>>) {
    loop {
        // The lock is held only while waiting for the next job, never while rendering.
        let job = match rx.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        match job {
            Ok(job) => job(),
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::sys::thread::own_nice;

    #[tokio::test]
    async fn jobs_run_on_renderers_below_the_loops_priority() {
        let base = own_nice();
        let r = Renderer::start(2, base).unwrap();
        let (name, nice) = r
            .run(|| {
                let name = std::thread::current().name().map(str::to_string);
                (name, own_nice())
            })
            .await
            .unwrap();
        assert!(name.unwrap().starts_with("oomwatch-render-"));
        assert_eq!(nice, (base + NICE_BELOW_LOOP).min(19));
        assert_eq!(
            own_nice(),
            base,
            "the starting thread keeps its own nice value"
        );
        assert_eq!(r.run(|| 6 * 7).await, Ok(42));
    }

    #[tokio::test]
    async fn a_full_queue_is_refused_at_once() {
        let r = Renderer::start(1, own_nice()).unwrap();
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let (started_tx, started_rx) = oneshot::channel::<()>();
        // The one renderer is held by a job that waits for the test.
        let held = {
            let r = Arc::clone(&r);
            tokio::spawn(async move {
                r.run(move || {
                    let _ = started_tx.send(());
                    let _ = release_rx.recv();
                })
                .await
            })
        };
        started_rx.await.unwrap();
        // QUEUE jobs wait (each polled once: queued, then its answer no longer awaited); the
        // next one is refused at once.
        let zero = std::time::Duration::ZERO;
        for i in 0..QUEUE {
            let queued = tokio::time::timeout(zero, r.run(move || i)).await;
            assert!(queued.is_err(), "job {i} was not queued: {queued:?}");
        }
        let refused = tokio::time::timeout(zero, r.run(|| ())).await;
        assert_eq!(refused, Ok(Err(RenderError::Busy)));
        release_tx.send(()).unwrap();
        held.await.unwrap().unwrap();
        // The queue drains (the renderer works through the 32 waiting jobs): a new job runs.
        let mut after = r.run(|| 7).await;
        for _ in 0..2000 {
            if after != Err(RenderError::Busy) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            after = r.run(|| 7).await;
        }
        assert_eq!(after, Ok(7));
    }
}
