//! A connection's two waiting timers, which hyper does not keep apart: how long a
//! keep-alive connection may sit idle between requests (`idle_timeout`), and how long a
//! request's head may take once its first byte is in (`header_read_timeout`, against
//! slowloris). hyper starts its own header timer as soon as a connection waits for the next
//! request, so an idle timeout longer than the header timeout (as balancers need: a backend
//! should keep connections open longer than the balancer does) cannot be had from it.
//!
//! [`Watched`] wraps the socket: while no request is in flight, a read that stays pending
//! past the current deadline ends the connection (an idle one as a clean close, a half-read
//! head as a timeout error). [`Activity`] is told by the service when a request starts and
//! ends.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// No head is being read.
const NONE: u64 = u64::MAX;

/// What a connection is doing, shared by its socket and its service.
#[derive(Debug)]
pub struct Activity {
    opened: Instant,
    in_flight: AtomicUsize,
    /// Milliseconds after `opened` when the connection last became idle.
    idle_since: AtomicU64,
    /// Milliseconds after `opened` when the first byte of the next head came, or `NONE`.
    head_since: AtomicU64,
    /// Whether a request has begun (before, the first-byte timeout applies).
    served: std::sync::atomic::AtomicBool,
}

impl Activity {
    pub fn new() -> Arc<Activity> {
        Arc::new(Activity {
            opened: Instant::now(),
            in_flight: AtomicUsize::new(0),
            idle_since: AtomicU64::new(0),
            head_since: AtomicU64::new(NONE),
            served: std::sync::atomic::AtomicBool::new(false),
        })
    }

    fn now_ms(&self) -> u64 {
        self.opened.elapsed().as_millis() as u64
    }

    /// A request's head is in and the service runs; the guard ends it.
    pub fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.head_since.store(NONE, Ordering::Release);
        self.served.store(true, Ordering::Release);
        InFlight(self.clone())
    }

    /// When the connection must make progress by, if it waits at all.
    fn deadline(&self, idle: Duration, head: Duration, first: Duration) -> Option<Instant> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        let ms = |v: u64| self.opened + Duration::from_millis(v);
        Some(match self.head_since.load(Ordering::Acquire) {
            // A new connection that has sent nothing yet: it has the first-byte timeout.
            NONE if !self.served.load(Ordering::Acquire) => self.opened + first,
            NONE => ms(self.idle_since.load(Ordering::Acquire)) + idle,
            at => ms(at) + head,
        })
    }

    /// Bytes arrived: if the connection was idle, they start a head.
    fn bytes_read(&self) {
        if self.in_flight.load(Ordering::Acquire) == 0 {
            let _ = self.head_since.compare_exchange(
                NONE,
                self.now_ms(),
                Ordering::AcqRel,
                Ordering::Acquire,
            );
        }
    }
}

/// A request in flight; dropping it (the response is ready) makes the connection idle.
#[derive(Debug)]
pub struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle_since.store(self.0.now_ms(), Ordering::Release);
        }
    }
}

/// A socket that ends itself when it waits too long between requests or within a head.
pub struct Watched<T> {
    inner: T,
    activity: Arc<Activity>,
    idle: Duration,
    head: Duration,
    /// How long a new connection may take to send its first byte.
    first: Duration,
    timer: Pin<Box<Sleep>>,
}

impl<T> Watched<T> {
    pub fn new(inner: T, activity: Arc<Activity>, idle: Duration, head: Duration) -> Watched<T> {
        let first = Instant::now() + idle;
        Watched {
            inner,
            activity,
            idle,
            head,
            first: idle,
            timer: Box::pin(tokio::time::sleep_until(first)),
        }
    }

    /// A new connection must send its first byte within `first` (a connection that is
    /// opened and then says nothing holds a descriptor for free otherwise).
    pub fn first_byte_within(mut self, first: Duration) -> Watched<T> {
        self.first = first;
        let deadline = self.activity.opened + first;
        self.timer.as_mut().reset(deadline);
        self
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    this.activity.bytes_read();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                let Some(deadline) = this.activity.deadline(this.idle, this.head, this.first)
                else {
                    return Poll::Pending;
                };
                // Deadlines mostly move later (each request restarts the idle clock): the
                // timer is moved only when the deadline comes earlier, and re-armed when it
                // fires before the current deadline. Resetting it on every request would
                // cost a timer-wheel update per request.
                if deadline < this.timer.deadline() {
                    this.timer.as_mut().reset(deadline);
                }
                loop {
                    if this.timer.as_mut().poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                    if Instant::now() >= deadline {
                        break;
                    }
                    this.timer.as_mut().reset(deadline);
                }
                if this.activity.head_since.load(Ordering::Acquire) == NONE {
                    // Idle too long: a clean end of the connection.
                    Poll::Ready(Ok(()))
                } else {
                    Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the request head did not arrive within the header read timeout",
                    )))
                }
            }
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    const IDLE: Duration = Duration::from_secs(60);
    const HEAD: Duration = Duration::from_secs(10);

    #[tokio::test(start_paused = true)]
    async fn an_idle_connection_ends_cleanly_after_the_idle_timeout() {
        let (client, server) = tokio::io::duplex(64);
        let activity = Activity::new();
        let mut watched = Watched::new(server, activity, IDLE, HEAD);
        let started = Instant::now();
        let mut buf = [0u8; 8];
        let n = watched.read(&mut buf).await.unwrap();
        assert_eq!(n, 0, "a clean end");
        assert_eq!(started.elapsed(), IDLE);
        drop(client);
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_connection_that_says_nothing_ends_after_the_first_byte_timeout() {
        let (mut client, server) = tokio::io::duplex(64);
        let activity = Activity::new();
        let first = Duration::from_secs(2);
        let mut silent = Watched::new(server, activity, IDLE, HEAD).first_byte_within(first);
        let started = Instant::now();
        let mut buf = [0u8; 64];
        assert_eq!(silent.read(&mut buf).await.unwrap(), 0);
        assert_eq!(started.elapsed(), first);
        // Once a request has been served, the idle timeout applies.
        let (mut client2, server2) = tokio::io::duplex(64);
        let activity = Activity::new();
        let mut talking =
            Watched::new(server2, activity.clone(), IDLE, HEAD).first_byte_within(first);
        client2.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        assert!(talking.read(&mut buf).await.unwrap() > 0);
        drop(activity.begin());
        let idle_from = Instant::now();
        assert_eq!(talking.read(&mut buf).await.unwrap(), 0);
        assert_eq!(idle_from.elapsed(), IDLE);
        client.shutdown().await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_head_that_trickles_in_is_cut_off_after_the_header_timeout() {
        let (mut client, server) = tokio::io::duplex(64);
        let activity = Activity::new();
        let mut watched = Watched::new(server, activity, IDLE, HEAD);
        tokio::time::sleep(Duration::from_secs(30)).await; // idle, within the idle timeout
        client.write_all(b"POST / HTTP/1.1\r\n").await.unwrap();
        let mut buf = [0u8; 64];
        let n = watched.read(&mut buf).await.unwrap();
        assert!(n > 0);
        let head_started = Instant::now();
        let err = watched.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(head_started.elapsed(), HEAD);
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_in_flight_has_no_deadline_and_its_end_restarts_the_idle_clock() {
        let (mut client, server) = tokio::io::duplex(64);
        let activity = Activity::new();
        let mut watched = Watched::new(server, activity.clone(), IDLE, HEAD);
        client.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        let mut buf = [0u8; 64];
        assert!(watched.read(&mut buf).await.unwrap() > 0);
        let request = activity.begin();
        // A slow upstream: the connection waits far past both timeouts.
        let read = tokio::time::timeout(Duration::from_secs(600), watched.read(&mut buf)).await;
        assert!(read.is_err(), "no deadline while a request is in flight");
        drop(request);
        let idle_from = Instant::now();
        assert_eq!(watched.read(&mut buf).await.unwrap(), 0);
        assert_eq!(idle_from.elapsed(), IDLE);
    }
}
