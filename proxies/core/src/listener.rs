//! The proxy's listener: at most `max_connections` connections at once, so one client opening
//! connections cannot exhaust the process's file descriptors; at the cap a new client is let in
//! by evicting the idlest connection (see [`crate::idle`]), so idle connections cannot lock
//! active clients out; and the open-files limit raised to what the system allows at start.

use std::{
    io,
    path::{Path, PathBuf},
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream, UnixListener, UnixStream},
    sync::{OwnedSemaphorePermit, Semaphore},
};

/// File descriptors kept free beside the connections: backend connections, the embedded
/// stores' files, logs.
const RESERVED_FDS: u64 = 256;

/// Raises the soft open-files limit to the hard limit (the usual soft 1024 is about 1 000
/// idle connections) and returns the soft limit now in force.
pub fn raise_open_files_limit() -> u64 {
    // SAFETY: getrlimit/setrlimit only read and write the struct passed to them.
    unsafe {
        let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 1024;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit { rlim_cur: limit.rlim_max, rlim_max: limit.rlim_max };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit.rlim_cur = limit.rlim_max;
            }
        }
        limit.rlim_cur
    }
}

/// The connection cap: the configured one, or less when the open-files limit is lower.
pub fn connection_cap(configured: usize, open_files: u64) -> usize {
    let fds = open_files.saturating_sub(RESERVED_FDS).max(16);
    configured.min(usize::try_from(fds).unwrap_or(usize::MAX)).max(1)
}

/// The connection slots one proxy's listeners share: its TCP port and its Unix socket count
/// against the same cap.
#[derive(Debug, Clone)]
pub struct Slots {
    free: Arc<Semaphore>,
    cap: usize,
    open: Arc<crate::idle::Registry>,
}

impl Slots {
    /// `cap` connections at once.
    pub fn new(cap: usize) -> Self {
        Self { free: Arc::new(Semaphore::new(cap)), cap, open: Arc::default() }
    }

    /// A slot for a connection just accepted: a free one, else one freed by evicting the idlest
    /// connection; only when every connection has a request in flight does this wait for one
    /// to close.
    async fn take(&self) -> OwnedSemaphorePermit {
        let mut warned = false;
        loop {
            if let Ok(permit) = self.free.clone().try_acquire_owned() {
                return permit;
            }
            if self.open.evict_idlest() {
                // The evicted connection's task closes it at once; its slot comes back then.
                if let Ok(Ok(permit)) =
                    tokio::time::timeout(EVICTION_WAIT, self.free.clone().acquire_owned()).await
                {
                    return permit;
                }
                continue;
            }
            if !warned {
                tracing::warn!(
                    cap = self.cap,
                    "connection cap reached with a request in flight on every connection: new \
                     connections wait until one closes (server.max-connections)"
                );
                warned = true;
            }
            // Wait for a connection to close or to fall idle, then look again.
            if let Ok(Ok(permit)) = tokio::time::timeout(BUSY_WAIT, self.free.clone().acquire_owned()).await {
                tracing::info!(cap = self.cap, "below the connection cap again");
                return permit;
            }
        }
    }
}

/// How long a new connection waits for an evicted one's slot before evicting another.
const EVICTION_WAIT: Duration = Duration::from_millis(50);
/// How often a new connection looks for an idle one to evict while every one is busy.
const BUSY_WAIT: Duration = Duration::from_millis(100);

/// A socket the proxy accepts connections on (TCP or Unix), each connection set up for small
/// request/response exchanges as it is accepted.
pub trait Socket: Send + 'static {
    /// An accepted connection.
    type Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    /// The peer's address.
    type Addr: Send + std::fmt::Debug;
    /// The next connection.
    fn accept_one(
        &mut self,
    ) -> impl std::future::Future<Output = io::Result<(Self::Stream, Self::Addr)>> + Send;
    /// The address it listens on.
    fn local(&self) -> io::Result<Self::Addr>;
}

impl Socket for TcpListener {
    type Stream = TcpStream;
    type Addr = std::net::SocketAddr;

    async fn accept_one(&mut self) -> io::Result<(TcpStream, std::net::SocketAddr)> {
        let (stream, addr) = self.accept().await?;
        // Without TCP_NODELAY small gRPC responses wait on delayed ACKs (~40 ms a call).
        if let Err(err) = stream.set_nodelay(true) {
            tracing::debug!(error = %err, "cannot set TCP_NODELAY");
        }
        Ok((stream, addr))
    }

    fn local(&self) -> io::Result<std::net::SocketAddr> {
        self.local_addr()
    }
}

/// A listener (TCP or Unix) handing out at most its [`Slots`]' cap of connections at once.
/// At the cap a connection just accepted takes the slot of the idlest open one (evicted); when
/// every open connection is busy it waits, and further clients wait in the kernel's backlog.
pub struct CappedListener<L = TcpListener> {
    listener: L,
    slots: Slots,
    write_stall: Duration,
}

impl<L> CappedListener<L> {
    /// Caps `listener` by `slots`, each connection closed when a write waits `write_stall` for
    /// its client.
    pub fn new(listener: L, slots: Slots, write_stall: Duration) -> Self {
        Self { listener, slots, write_stall }
    }
}

impl<L: Socket> axum::serve::Listener for CappedListener<L> {
    type Io = CountedStream<L::Stream>;
    type Addr = L::Addr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.listener.accept_one().await {
                Ok((stream, addr)) => {
                    // One connection past the cap may be held here while a slot is freed: the
                    // open-files limit keeps room for it (RESERVED_FDS).
                    let permit = self.slots.take().await;
                    let stall = crate::stalls::WriteStall::new(self.write_stall);
                    let registration = self.slots.open.open();
                    return (CountedStream { stream, stall, registration, _permit: permit }, addr);
                }
                Err(err) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::error!(error = %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.listener.local()
    }
}

/// A connection holding one of the listener's slots until it closes, whose writes fail once
/// they wait too long for the client, and whose reads and writes fail once it is evicted.
pub struct CountedStream<S = TcpStream> {
    stream: S,
    stall: crate::stalls::WriteStall,
    registration: crate::idle::Registration,
    _permit: OwnedSemaphorePermit,
}

fn evicted() -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionAborted,
        "idle connection closed to admit another (connection cap)",
    )
}

impl<S> crate::idle::Tracked for CountedStream<S> {
    fn activity(&self) -> &Arc<crate::idle::Activity> {
        self.registration.activity()
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for CountedStream<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let activity = this.registration.activity();
        if activity.is_evicted() {
            return Poll::Ready(Err(evicted()));
        }
        match Pin::new(&mut this.stream).poll_read(cx, buf) {
            // Waiting for the client: be woken as well if the connection is evicted meanwhile.
            Poll::Pending if activity.evicted(cx) => Poll::Ready(Err(evicted())),
            polled => polled,
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for CountedStream<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.registration.activity().is_evicted() {
            return Poll::Ready(Err(evicted()));
        }
        let polled = Pin::new(&mut this.stream).poll_write(cx, buf);
        this.stall.check(cx, polled)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.registration.activity().is_evicted() {
            return Poll::Ready(Err(evicted()));
        }
        let polled = Pin::new(&mut this.stream).poll_flush(cx);
        this.stall.check(cx, polled)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.registration.activity().is_evicted() {
            return Poll::Ready(Err(evicted()));
        }
        let polled = Pin::new(&mut this.stream).poll_write_vectored(cx, bufs);
        this.stall.check(cx, polled)
    }
    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// A Unix domain socket a proxy serves beside its TCP port. Dropping it closes the listener
/// and removes the file together — when the proxy stops accepting, at the start of its drain,
/// not after it — so a proxy started while this one drains finds no file, binds its own, and
/// nothing of this one's removes it later.
#[derive(Debug)]
pub struct UnixSocket {
    listener: UnixListener,
    path: PathBuf,
}

impl Drop for UnixSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Socket for UnixSocket {
    type Stream = UnixStream;
    type Addr = tokio::net::unix::SocketAddr;

    async fn accept_one(&mut self) -> io::Result<(UnixStream, tokio::net::unix::SocketAddr)> {
        self.listener.accept().await
    }

    fn local(&self) -> io::Result<tokio::net::unix::SocketAddr> {
        self.listener.local_addr()
    }
}

/// Why a Unix socket could not be served.
#[derive(Debug, thiserror::Error)]
pub enum UnixSocketError {
    /// Another process answers on the socket.
    #[error("{0}: another process is serving on this socket")]
    InUse(PathBuf),
    /// Something other than a socket is at the path: it is not ours to replace.
    #[error("{0}: exists and is not a socket; remove it or choose another server.unix-socket")]
    NotASocket(PathBuf),
    /// Binding or setting its permissions failed.
    #[error("cannot listen on {path}: {source}")]
    Io {
        /// The socket's path.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
}

impl UnixSocket {
    /// Listens on `path` with permissions `mode`. A socket file nobody answers on (left by a
    /// proxy that was killed) is replaced; a live one, or a file that is not a socket, is
    /// refused.
    pub fn bind(path: &Path, mode: u32) -> Result<Self, UnixSocketError> {
        use std::os::unix::fs::{FileTypeExt as _, PermissionsExt as _};
        let failed = |source| UnixSocketError::Io { path: path.to_owned(), source };
        match std::fs::symlink_metadata(path) {
            Ok(meta) if meta.file_type().is_socket() => match std::os::unix::net::UnixStream::connect(path) {
                Ok(_) => return Err(UnixSocketError::InUse(path.to_owned())),
                // Only a refused connection says nobody listens; any other failure (permission
                // denied: another user's socket) leaves the file alone.
                Err(err) if err.kind() == io::ErrorKind::ConnectionRefused => {
                    tracing::info!(path = %path.display(), "replacing a stale socket file");
                    std::fs::remove_file(path).or_else(ignore_not_found).map_err(failed)?;
                }
                Err(err) => return Err(failed(err)),
            },
            Ok(_) => return Err(UnixSocketError::NotASocket(path.to_owned())),
            Err(err) if err.kind() == io::ErrorKind::NotFound => {}
            Err(err) => return Err(failed(err)),
        }
        let socket = Self { listener: UnixListener::bind(path).map_err(failed)?, path: path.to_owned() };
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(failed)?;
        Ok(socket)
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn ignore_not_found(err: io::Error) -> io::Result<()> {
    if err.kind() == io::ErrorKind::NotFound { Ok(()) } else { Err(err) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_leaves_room_for_other_files() {
        assert_eq!(connection_cap(4096, 1_048_576), 4096);
        assert_eq!(connection_cap(4096, 1024), 768);
        assert_eq!(connection_cap(4096, 100), 16);
    }

    #[tokio::test]
    async fn beyond_the_cap_busy_connections_make_new_ones_wait_and_idle_ones_make_room() {
        use axum::serve::Listener as _;
        use tokio::io::AsyncReadExt as _;

        use crate::idle::Tracked as _;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut capped = CappedListener::new(listener, Slots::new(2), Duration::from_secs(60));
        // Six clients: the accept that times out below has taken (and dropped) one of them.
        let clients: Vec<TcpStream> = futures::future::join_all((0..6).map(|_| TcpStream::connect(addr)))
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
        // Each accepted connection served as the connection loop serves it: read until the
        // client or an eviction ends it, then closed (its slot freed).
        let mut accept = async || {
            let (mut stream, _) = capped.accept().await;
            let activity = stream.activity().clone();
            let reading = tokio::spawn(async move { stream.read(&mut [0; 8]).await.map_err(|e| e.kind()) });
            (activity, reading)
        };
        let (first, first_reading) = accept().await;
        let (second, _) = accept().await;
        // Both busy (a request in flight on each): the third waits.
        let busy = (first.request(), second.request());
        assert!(
            tokio::time::timeout(Duration::from_millis(300), accept()).await.is_err(),
            "a third connection was accepted over the cap"
        );
        first_reading.abort();
        let (third, third_reading) = tokio::time::timeout(Duration::from_secs(2), accept())
            .await
            .expect("a slot freed by a closed connection is reused");
        // Idle connections make room: the second's request ends, the third never sent one.
        drop(busy);
        let fourth = tokio::time::timeout(Duration::from_secs(2), accept()).await;
        let (fourth, _) = fourth.expect("a new client waited although an idle connection held a slot");
        let _busy = fourth.request();
        assert!(third.is_evicted() && !second.is_evicted(), "the never-served connection goes first");
        let read = tokio::time::timeout(Duration::from_secs(2), third_reading).await.unwrap().unwrap();
        assert_eq!(read.unwrap_err(), io::ErrorKind::ConnectionAborted, "a read waiting on it fails");
        let fifth = tokio::time::timeout(Duration::from_secs(2), accept()).await;
        assert!(fifth.is_ok() && second.is_evicted(), "the idle served connection was not evicted");
        drop(clients);
    }

    #[tokio::test]
    async fn a_stale_socket_is_replaced_a_live_one_refused_and_the_file_removed_on_drop() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("eqs.sock");
        // A socket file nobody listens on, as a killed proxy leaves it.
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        assert!(path.exists());
        let socket = UnixSocket::bind(&path, 0o600).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let err = UnixSocket::bind(&path, 0o600).unwrap_err();
        assert!(matches!(err, UnixSocketError::InUse(_)), "{err}");
        drop(socket);
        assert!(!path.exists(), "the socket file outlived its listener");

        let file = dir.path().join("not-a-socket");
        std::fs::write(&file, b"keep me").unwrap();
        let err = UnixSocket::bind(&file, 0o600).unwrap_err();
        assert!(matches!(err, UnixSocketError::NotASocket(_)), "{err}");
        assert_eq!(std::fs::read(&file).unwrap(), b"keep me");
    }
}
