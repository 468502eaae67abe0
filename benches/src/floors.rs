//! Physical floors measured in the same run as the proxy figures, so every figure can be given
//! as a ratio to what the machine can do at that moment (absolute latencies on a VM swing
//! several-fold with CPU wake-up latency).
//!
//! - [`tcp_round_trips`]: a raw TCP loopback round trip of the body size — a blocking echo
//!   server on its own thread and a blocking client, `TCP_NODELAY`, as a C ping-pong would be;
//! - [`unix_round_trips`]: the same over a Unix socket pair (what `--unix` calls through);
//! - [`tonic_round_trips`]: a bare tonic unary echo of the body size (HTTP/2 + gRPC framing, no
//!   protobuf, no proxy logic), its server on its own thread and runtime, as a proxy would be;
//!   [`echo_round_trips_via`] calls the same echo through hyper's HTTP/2 client directly;
//! - [`loopback_bandwidth`]: what one loopback TCP connection carries, writer to reader.

use std::{
    convert::Infallible,
    io::{Read as _, Write as _},
    net::{TcpListener, TcpStream},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use bytes::{Buf as _, BufMut as _};

use crate::Samples;

/// `count` round trips of `body` bytes over one loopback TCP connection to an echo thread.
pub fn tcp_round_trips(body: usize, count: usize) -> anyhow::Result<Samples> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let client = TcpStream::connect(listener.local_addr()?)?;
    let (server, _) = listener.accept()?;
    client.set_nodelay(true)?;
    server.set_nodelay(true)?;
    echo_round_trips(client, server, body, count)
}

/// The same over a Unix socket pair: the floor of a proxy reached at `unix:` (no TCP stack).
pub fn unix_round_trips(body: usize, count: usize) -> anyhow::Result<Samples> {
    let (client, server) = std::os::unix::net::UnixStream::pair()?;
    echo_round_trips(client, server, body, count)
}

/// `count` round trips of `body` bytes from `client` to an echo thread serving `server`.
fn echo_round_trips<S>(mut client: S, mut server: S, body: usize, count: usize) -> anyhow::Result<Samples>
where
    S: std::io::Read + std::io::Write + Send + 'static,
{
    let echo = std::thread::spawn(move || -> std::io::Result<()> {
        let mut buffer = vec![0u8; body.max(1)];
        loop {
            if server.read_exact(&mut buffer).is_err() {
                return Ok(()); // the client is done
            }
            server.write_all(&buffer)?;
        }
    });
    let message = vec![b'x'; body.max(1)];
    let mut answer = vec![0u8; body.max(1)];
    let mut samples = Samples::default();
    for i in 0..count + count / 10 {
        let started = Instant::now();
        client.write_all(&message)?;
        client.read_exact(&mut answer)?;
        // The first tenth warms up.
        if i >= count / 10 {
            samples.0.push(started.elapsed());
        }
    }
    drop(client);
    echo.join().map_err(|_| anyhow::anyhow!("echo thread panicked"))??;
    Ok(samples)
}

/// Bytes in, the same bytes out: a gRPC codec without protobuf.
#[derive(Clone, Copy, Default)]
struct RawCodec;

impl tonic::codec::Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;
    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }
    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl tonic::codec::Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(&mut self, item: Vec<u8>, dst: &mut tonic::codec::EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn decode(&mut self, src: &mut tonic::codec::DecodeBuf<'_>) -> Result<Option<Vec<u8>>, tonic::Status> {
        let n = src.remaining();
        Ok(Some(src.copy_to_bytes(n).to_vec()))
    }
}

/// The echo method.
struct Echo;

impl tonic::server::UnaryService<Vec<u8>> for Echo {
    type Response = Vec<u8>;
    type Future = std::future::Ready<Result<tonic::Response<Vec<u8>>, tonic::Status>>;
    fn call(&mut self, request: tonic::Request<Vec<u8>>) -> Self::Future {
        std::future::ready(Ok(tonic::Response::new(request.into_inner())))
    }
}

/// A tonic server whose every method echoes.
#[derive(Clone)]
struct EchoServer;

impl tonic::server::NamedService for EchoServer {
    const NAME: &'static str = "exo.bench.Echo";
}

impl tower::Service<http::Request<tonic::body::Body>> for EchoServer {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = futures::future::BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Infallible>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        Box::pin(async move { Ok(tonic::server::Grpc::new(RawCodec).unary(Echo, request).await) })
    }
}

/// Which HTTP/2 client a bare echo is called through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EchoClient {
    /// tonic's `Channel` (a `tower::buffer` worker in front of hyper's client) as the SDK uses
    /// it: through `exo_sdk::ProxyChannel`, so a request ends on its DATA frame as the SDK's do.
    TonicChannel,
    /// hyper's HTTP/2 `SendRequest` on one connection, called directly.
    HyperConnection,
}

/// `count` unary calls of `body` bytes to a bare tonic echo server on its own thread.
pub async fn tonic_round_trips(body: usize, count: usize) -> anyhow::Result<Samples> {
    echo_round_trips_via(EchoClient::TonicChannel, body, count).await
}

/// `count` unary calls of `body` bytes to a bare tonic echo server on its own thread, through
/// `client`.
pub async fn echo_round_trips_via(client: EchoClient, body: usize, count: usize) -> anyhow::Result<Samples> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    listener.set_nonblocking(true)?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    // Its own thread and single-threaded runtime: a separate process's worker, as the proxy's.
    let server = std::thread::spawn(move || -> anyhow::Result<()> {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        runtime.block_on(async move {
            // Accepted sockets get TCP_NODELAY here: the builder's setting covers only sockets
            // it accepts itself (else each answer waits ~40 ms for a delayed ACK).
            let accepted =
                tokio_stream::wrappers::TcpListenerStream::new(tokio::net::TcpListener::from_std(listener)?);
            let incoming = futures::StreamExt::map(accepted, |socket| {
                socket.and_then(|s| s.set_nodelay(true).map(|()| s))
            });
            tonic::transport::Server::builder()
                .add_service(EchoServer)
                .serve_with_incoming_shutdown(incoming, async {
                    let _ = stopped.await;
                })
                .await
                .context("echo server")
        })
    });
    let samples = match client {
        EchoClient::TonicChannel => {
            let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
                .tcp_nodelay(true)
                .connect()
                .await?;
            echo_calls(tonic::client::Grpc::new(exo_sdk::ProxyChannel::new(channel)), body, count).await?
        }
        EchoClient::HyperConnection => {
            let (send, driver) = hyper_connection(addr, None).await?;
            let grpc = tonic::client::Grpc::with_origin(send, HyperSend::ORIGIN.parse()?);
            let samples = echo_calls(grpc, body, count).await?;
            driver.abort();
            samples
        }
    };
    // Graceful shutdown waits for open connections: close ours first (dropped above), and
    // wait without blocking this runtime (it drives our side of the connection to its close).
    let _ = stop.send(());
    tokio::task::spawn_blocking(move || server.join())
        .await?
        .map_err(|_| anyhow::anyhow!("echo server thread panicked"))??;
    Ok(samples)
}

async fn echo_calls<T>(mut grpc: tonic::client::Grpc<T>, body: usize, count: usize) -> anyhow::Result<Samples>
where
    T: tonic::client::GrpcService<tonic::body::Body>,
    T::ResponseBody: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    <T::ResponseBody as http_body::Body>::Error: Into<tonic::codegen::StdError>,
    T::Error: Into<tonic::codegen::StdError>,
{
    let path = http::uri::PathAndQuery::from_static("/exo.bench.Echo/Echo");
    let message = vec![b'x'; body];
    let mut samples = Samples::default();
    for i in 0..count + count / 10 {
        let started = Instant::now();
        grpc.ready().await.map_err(|e| anyhow::anyhow!("not ready: {}", e.into()))?;
        let answer = grpc.unary(tonic::Request::new(message.clone()), path.clone(), RawCodec).await?;
        anyhow::ensure!(answer.get_ref().len() == body, "the echo answered {} bytes", answer.get_ref().len());
        if i >= count / 10 {
            samples.0.push(started.elapsed());
        }
    }
    Ok(samples)
}

/// One HTTP/2 connection to `addr` through hyper's client, accepting DATA frames of up to
/// `max_frame` bytes (HTTP/2's 16 KiB default when `None`), and the task driving it.
pub async fn hyper_connection(
    addr: std::net::SocketAddr,
    max_frame: Option<u32>,
) -> anyhow::Result<(HyperSend, tokio::task::JoinHandle<Result<(), hyper::Error>>)> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let mut builder = hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new());
    builder
        .max_frame_size(max_frame)
        .initial_stream_window_size(2 << 20)
        .initial_connection_window_size(4 << 20);
    let (send, connection) = builder.handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    Ok((HyperSend(send), tokio::spawn(connection)))
}

/// hyper's HTTP/2 request sender as a tower service. A tonic client over it needs its origin
/// ([`HyperSend::ORIGIN`] via `with_origin`): tonic leaves scheme and authority to its channel.
#[derive(Clone)]
pub struct HyperSend(hyper::client::conn::http2::SendRequest<tonic::body::Body>);

impl HyperSend {
    /// What `:scheme` and `:authority` say on the connection (the server ignores the host).
    pub const ORIGIN: &str = "http://localhost";
}

impl tower::Service<http::Request<tonic::body::Body>> for HyperSend {
    type Response = http::Response<hyper::body::Incoming>;
    type Error = hyper::Error;
    type Future =
        std::pin::Pin<Box<dyn std::future::Future<Output = Result<Self::Response, hyper::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), hyper::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        Box::pin(self.0.send_request(request))
    }
}

/// Bytes per second one loopback TCP connection carries: `total` bytes written in 1 MiB
/// writes, read by another thread into a 1 MiB buffer.
pub fn loopback_bandwidth(total: u64) -> anyhow::Result<f64> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let reader = std::thread::spawn(move || -> std::io::Result<(u64, Duration)> {
        let (mut socket, _) = listener.accept()?;
        let mut buffer = vec![0u8; 1 << 20];
        let mut read = 0u64;
        let mut started = None;
        loop {
            let n = socket.read(&mut buffer)?;
            if n == 0 {
                break;
            }
            started.get_or_insert_with(Instant::now);
            read += n as u64;
        }
        Ok((read, started.map(|s| s.elapsed()).unwrap_or_default()))
    });
    let mut socket = TcpStream::connect(addr)?;
    let chunk = vec![b'x'; 1 << 20];
    let mut written = 0u64;
    while written < total {
        let n = (total - written).min(chunk.len() as u64) as usize;
        socket.write_all(&chunk[..n])?;
        written += n as u64;
    }
    drop(socket);
    let (read, took) = reader.join().map_err(|_| anyhow::anyhow!("reader thread panicked"))??;
    anyhow::ensure!(read == total, "read {read} of {total} bytes");
    Ok(read as f64 / took.as_secs_f64().max(1e-9))
}
