//! Submitting commands to the loop from other threads.

use mio::Waker;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};

/// A handle other threads use to hand commands to the loop; cheap to clone.
///
/// The channel is bounded, so a fast producer (a piped stdin) waits for the loop
/// instead of growing memory.
pub struct Remote<C> {
    pub(crate) tx: SyncSender<C>,
    pub(crate) waker: Arc<Waker>,
    /// Set by [`Remote::interrupt`], taken by the loop.
    pub(crate) interrupted: Arc<AtomicBool>,
}

impl<C> Clone for Remote<C> {
    fn clone(&self) -> Self {
        Remote {
            tx: self.tx.clone(),
            waker: self.waker.clone(),
            interrupted: self.interrupted.clone(),
        }
    }
}

impl<C> Remote<C> {
    /// Asks the loop to call [`Handler::on_interrupt`](super::Handler::on_interrupt)
    /// (a signal arrived). Never blocks: it bypasses the command channel, so an
    /// interrupt is not stuck behind a full one.
    pub fn interrupt(&self) {
        self.interrupted.store(true, Ordering::Release);
        let _ = self.waker.wake();
    }
}

impl<C> Remote<C> {
    /// Wakes the loop for one more turn (it re-checks whatever state another
    /// thread changed, such as output that drained). Never blocks.
    pub fn wake(&self) {
        let _ = self.waker.wake();
    }
}

impl<C: Send> Remote<C> {
    /// Sends a command and wakes the loop; `Err` gives it back if the loop is gone.
    pub fn send(&self, cmd: C) -> Result<(), C> {
        self.send_batched(cmd, false)
    }

    /// Sends a command; with `more_coming` the loop is not woken yet, because the
    /// caller is about to send another (whose send wakes it). A reader of piped
    /// input passes true while whole lines are still buffered, so a burst of
    /// commands costs one wake-up and the loop takes them in one turn.
    pub fn send_batched(&self, cmd: C, more_coming: bool) -> Result<(), C> {
        let cmd = match self.tx.try_send(cmd) {
            Ok(()) => {
                if !more_coming {
                    let _ = self.waker.wake();
                }
                return Ok(());
            }
            Err(TrySendError::Disconnected(c)) => return Err(c),
            Err(TrySendError::Full(c)) => c,
        };
        // Full: make sure the loop is awake, then wait for room.
        let _ = self.waker.wake();
        match self.tx.send(cmd) {
            Ok(()) => {
                let _ = self.waker.wake();
                Ok(())
            }
            Err(e) => Err(e.0),
        }
    }
}
