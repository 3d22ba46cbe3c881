//! A fault-injecting TCP proxy for the replication tests (issue 5) and the chaos runs (issue 8).
//!
//! Replication has to survive links that are slow, stalled, cut or refused, and none of that
//! can be produced reliably by killing processes alone: a killed primary closes its sockets
//! cleanly, while a real network partition leaves them open and silent. So a test puts a
//! [`FaultProxy`] between a replica and its primary, both on 127.0.0.1, points the replica at
//! [`FaultProxy::local_addr`] instead of the primary, and steers the link from the test:
//!
//! ```no_run
//! # fn primary_addr() -> std::net::SocketAddr { unimplemented!() }
//! use std::time::Duration;
//! use wasmkv_tests::proxy::FaultProxy;
//!
//! let proxy = FaultProxy::start(primary_addr())?;
//! // start the replica with `proxy.local_addr()` as its primary, write to the primary ...
//! proxy.blackhole(); // the link stalls: nothing moves, nothing closes
//! // ... assert the replica notices the stall (heartbeat timeout) ...
//! proxy.pass(); // the same connections carry on where they stopped
//! proxy.drop_all(); // every connection is reset; the replica must reconnect
//! proxy.delay(Duration::from_millis(50)); // a slow link, for existing and new connections
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! The proxy runs on its own thread with its own single-threaded tokio runtime, so it works
//! the same from synchronous `#[test]` code that spawns real processes. Every control method
//! takes effect immediately, on the connections already open and on new ones; `drop_all`
//! returns only once the connections it cut are closed. Dropping the proxy closes the listener
//! and every connection and joins its thread. I/O errors never panic: a peer that goes away
//! just ends that connection, and the proxy closes the other side of it abruptly (RST), as a
//! broken link would.

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{ReadHalf, WriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

/// Most bytes read from a socket in one go; one read is one chunk for `delay`.
const CHUNK: usize = 16 * 1024;
/// Chunks read but not yet forwarded, per direction, before the proxy stops reading.
const CHUNKS_IN_FLIGHT: usize = 64;
/// How long `drop_all` waits for the connections it cut to close before it gives up.
const DROP_ALL_TIMEOUT: Duration = Duration::from_secs(10);

/// What the proxy does with the bytes of every connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Pass,
    Delay(Duration),
    Blackhole,
    Refuse,
    /// Bytes per second, per direction and connection; never zero.
    Bandwidth(u64),
}

/// A snapshot of the proxy's counters, from [`FaultProxy::stats`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProxyStats {
    /// TCP connections accepted since the start, including those closed at once by
    /// [`FaultProxy::refuse`] and those whose upstream connect failed.
    pub accepted: u64,
    /// Connections being forwarded now (or waiting for their upstream connect).
    pub open: usize,
    /// Bytes written to the upstream, from all clients.
    pub bytes_to_upstream: u64,
    /// Bytes written back to clients, from the upstream.
    pub bytes_to_client: u64,
}

/// State shared by the controlling `FaultProxy` and the tasks on the proxy's runtime.
struct Control {
    mode: watch::Sender<Mode>,
    /// The `drop_all` generation: bumping it cuts every connection registered under an older one.
    generation: watch::Sender<u64>,
    /// Open connections per generation; entries are removed when they reach zero.
    live: Mutex<BTreeMap<u64, usize>>,
    /// Signalled whenever a connection closes.
    closed: Condvar,
    accepted: AtomicU64,
    bytes_to_upstream: AtomicU64,
    bytes_to_client: AtomicU64,
}

impl Control {
    fn live(&self) -> MutexGuard<'_, BTreeMap<u64, usize>> {
        self.live.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Count a new connection under the current generation, and give it the receiver that
    /// tells it when `drop_all` cuts that generation. Both happen under the `live` lock, the
    /// same lock `drop_all` bumps the generation under, so no connection slips between them.
    fn register(self: &Arc<Self>) -> (Live, watch::Receiver<u64>) {
        let mut live = self.live();
        let cut = self.generation.subscribe();
        let generation = *cut.borrow();
        *live.entry(generation).or_insert(0) += 1;
        let live = Live {
            control: Arc::clone(self),
            generation,
        };
        (live, cut)
    }
}

/// One open connection in `Control::live`; dropping it (after the sockets) unregisters it.
struct Live {
    control: Arc<Control>,
    generation: u64,
}

impl Drop for Live {
    fn drop(&mut self) {
        let mut live = self.control.live();
        if let Some(count) = live.get_mut(&self.generation) {
            *count -= 1;
            if *count == 0 {
                live.remove(&self.generation);
            }
        }
        self.control.closed.notify_all();
    }
}

/// A TCP proxy on 127.0.0.1 in front of one upstream address, whose link can be slowed,
/// stalled, cut and refused at runtime. See the [module documentation](self).
pub struct FaultProxy {
    local_addr: SocketAddr,
    control: Arc<Control>,
    /// Dropping it stops the accept loop; the runtime is then dropped with every connection.
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl FaultProxy {
    /// Listen on a free port of 127.0.0.1 and forward every accepted connection to
    /// `upstream`, in both directions, starting in pass mode. The upstream is connected to
    /// per client connection, when that connection is accepted; if that connect fails, the
    /// client's connection is reset, as if the upstream had refused it.
    pub fn start(upstream: SocketAddr) -> io::Result<FaultProxy> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        let local_addr = listener.local_addr()?;
        listener.set_nonblocking(true)?;
        let listener = {
            let _entered = runtime.enter();
            TcpListener::from_std(listener)?
        };
        let control = Arc::new(Control {
            mode: watch::Sender::new(Mode::Pass),
            generation: watch::Sender::new(0),
            live: Mutex::new(BTreeMap::new()),
            closed: Condvar::new(),
            accepted: AtomicU64::new(0),
            bytes_to_upstream: AtomicU64::new(0),
            bytes_to_client: AtomicU64::new(0),
        });
        let (stop, stopped) = oneshot::channel();
        let thread = std::thread::Builder::new()
            .name(format!("fault-proxy-{}", local_addr.port()))
            .spawn({
                let control = Arc::clone(&control);
                move || {
                    runtime.block_on(accept_loop(listener, upstream, control, stopped));
                    // Dropping the runtime drops every connection task, closing its sockets.
                    drop(runtime);
                }
            })?;
        Ok(FaultProxy {
            local_addr,
            control,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// The address clients connect to instead of the upstream.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Forward everything as it comes. Bytes held back by another mode go out at once.
    pub fn pass(&self) {
        self.control.mode.send_replace(Mode::Pass);
    }

    /// Forward each chunk read from one side `by` after it was read, in order, separately in
    /// each direction: a latency of `by` each way, without limiting throughput. Chunks
    /// already waiting are held until their own arrival plus `by`.
    pub fn delay(&self, by: Duration) {
        self.control.mode.send_replace(Mode::Delay(by));
    }

    /// Stall every connection: read nothing, forward nothing, close nothing, in either
    /// direction, so senders see their buffers fill up and readers see silence, as in a
    /// network partition. New connections are accepted and stall too. Bytes already read
    /// are kept; [`pass`](Self::pass) resumes the same connections where they stopped.
    pub fn blackhole(&self) {
        self.control.mode.send_replace(Mode::Blackhole);
    }

    /// Close new connections right after accepting them, with a reset, as a host whose
    /// server is down does. Connections already open keep being forwarded as in pass mode;
    /// call [`drop_all`](Self::drop_all) as well to cut them.
    pub fn refuse(&self) {
        self.control.mode.send_replace(Mode::Refuse);
    }

    /// Forward at most `bytes_per_sec` bytes per second in each direction of each
    /// connection, in pieces of about a twentieth of a second's worth.
    ///
    /// # Panics
    /// If `bytes_per_sec` is zero; use [`blackhole`](Self::blackhole) for a link that moves
    /// nothing.
    pub fn bandwidth(&self, bytes_per_sec: u64) {
        assert!(bytes_per_sec > 0, "a bandwidth of zero is a blackhole");
        self.control
            .mode
            .send_replace(Mode::Bandwidth(bytes_per_sec));
    }

    /// Cut every open connection abruptly: both of its sockets, the client's and the
    /// upstream's, are closed with SO_LINGER 0, so both peers see a reset (or at least an
    /// end of stream). Returns once they are closed. The mode stays as it is, and new
    /// connections keep being accepted in it.
    ///
    /// # Panics
    /// If the cut connections are not closed within 10 seconds, which would be a bug.
    pub fn drop_all(&self) {
        let mut live = self.control.live();
        let mut current = 0;
        self.control.generation.send_modify(|generation| {
            *generation += 1;
            current = *generation;
        });
        let deadline = std::time::Instant::now() + DROP_ALL_TIMEOUT;
        while live.range(..current).next().is_some() {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            assert!(
                !left.is_zero(),
                "fault proxy: connections still open {DROP_ALL_TIMEOUT:?} after drop_all"
            );
            live = self
                .control
                .closed
                .wait_timeout(live, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// The counters as they are now.
    pub fn stats(&self) -> ProxyStats {
        ProxyStats {
            accepted: self.control.accepted.load(Ordering::Relaxed),
            open: self.control.live().values().sum(),
            bytes_to_upstream: self.control.bytes_to_upstream.load(Ordering::Relaxed),
            bytes_to_client: self.control.bytes_to_client.load(Ordering::Relaxed),
        }
    }
}

impl Drop for FaultProxy {
    /// Stop accepting, close every connection and join the proxy's thread.
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Accept connections until `stopped` resolves, which it does when its sender is dropped.
async fn accept_loop(
    listener: TcpListener,
    upstream: SocketAddr,
    control: Arc<Control>,
    mut stopped: oneshot::Receiver<()>,
) {
    loop {
        let accepted = tokio::select! {
            biased;
            _ = &mut stopped => return,
            accepted = listener.accept() => accepted,
        };
        let client = match accepted {
            Ok((client, _)) => client,
            Err(_) => {
                // Out of file descriptors, or a client gone before it was accepted: back off
                // a little instead of spinning, and keep serving.
                tokio::select! {
                    biased;
                    _ = &mut stopped => return,
                    () = tokio::time::sleep(Duration::from_millis(10)) => continue,
                }
            }
        };
        control.accepted.fetch_add(1, Ordering::Relaxed);
        if *control.mode.borrow() == Mode::Refuse {
            reset(client);
            continue;
        }
        let (live, cut) = control.register();
        tokio::spawn(serve(client, upstream, Arc::clone(&control), live, cut));
    }
}

/// Close `stream` with SO_LINGER 0, so the peer gets a reset instead of an end of stream.
fn reset(stream: TcpStream) {
    let _ = stream.set_zero_linger();
    drop(stream);
}

/// Resolves when `drop_all` cuts the generation `cut` was subscribed under; never otherwise.
async fn cut_off(mut cut: watch::Receiver<u64>) {
    if cut.changed().await.is_err() {
        // The proxy is going away; its runtime drops this task anyway.
        std::future::pending::<()>().await;
    }
}

/// Forward one client connection until both directions end, an I/O error ends it, or
/// `drop_all` cuts it. `live` is dropped last, once both sockets are closed.
async fn serve(
    client: TcpStream,
    upstream: SocketAddr,
    control: Arc<Control>,
    live: Live,
    cut: watch::Receiver<u64>,
) {
    let cut = cut_off(cut);
    tokio::pin!(cut);
    let connected = tokio::select! {
        biased;
        () = &mut cut => None,
        connected = TcpStream::connect(upstream) => connected.ok(),
    };
    let Some(upstream) = connected else {
        reset(client);
        drop(live);
        return;
    };
    let (mut client, mut upstream) = (client, upstream);
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let finished = tokio::select! {
        biased;
        () = &mut cut => Err(io::ErrorKind::ConnectionAborted.into()),
        finished = forward(&mut client, &mut upstream, &control) => finished,
    };
    if finished.is_err() {
        // Cut, or one side failed: pass the failure on to both sides as a reset.
        reset(client);
        reset(upstream);
    } else {
        // Both sides finished sending and both ends were shut down: a clean close.
        drop(client);
        drop(upstream);
    }
    drop(live);
}

/// Both directions of one connection; the first error ends both.
async fn forward(
    client: &mut TcpStream,
    upstream: &mut TcpStream,
    control: &Control,
) -> io::Result<()> {
    let (client_read, client_write) = client.split();
    let (upstream_read, upstream_write) = upstream.split();
    tokio::try_join!(
        pipe(
            client_read,
            upstream_write,
            control.mode.subscribe(),
            &control.bytes_to_upstream,
        ),
        pipe(
            upstream_read,
            client_write,
            control.mode.subscribe(),
            &control.bytes_to_client,
        ),
    )?;
    Ok(())
}

/// One chunk read from one side, with when it was read.
struct Chunk {
    data: Bytes,
    arrived: Instant,
}

/// One direction: a reader and a writer joined by a bounded queue, so a delay holds each
/// chunk from its own arrival instead of adding up, and a full queue stops the reading.
/// Ends after forwarding the reader's end of stream as a write shutdown.
async fn pipe(
    from: ReadHalf<'_>,
    to: WriteHalf<'_>,
    mode: watch::Receiver<Mode>,
    forwarded: &AtomicU64,
) -> io::Result<()> {
    let (queue, queued) = mpsc::channel(CHUNKS_IN_FLIGHT);
    tokio::try_join!(
        read_side(from, queue, mode.clone()),
        write_side(to, queued, mode, forwarded),
    )?;
    Ok(())
}

async fn read_side(
    mut from: ReadHalf<'_>,
    queue: mpsc::Sender<Chunk>,
    mut mode: watch::Receiver<Mode>,
) -> io::Result<()> {
    let mut buf = BytesMut::new();
    loop {
        // A blackhole reads nothing, so the sender's buffers fill up as on a stalled link.
        if mode
            .wait_for(|mode| *mode != Mode::Blackhole)
            .await
            .is_err()
        {
            return Ok(());
        }
        buf.reserve(CHUNK);
        if from.read_buf(&mut buf).await? == 0 {
            return Ok(()); // dropping `queue` tells the writer to shut down
        }
        let chunk = Chunk {
            data: buf.split().freeze(),
            arrived: Instant::now(),
        };
        if queue.send(chunk).await.is_err() {
            return Ok(()); // the writer failed, and try_join has its error
        }
    }
}

async fn write_side(
    mut to: WriteHalf<'_>,
    mut queued: mpsc::Receiver<Chunk>,
    mut mode: watch::Receiver<Mode>,
    forwarded: &AtomicU64,
) -> io::Result<()> {
    // In bandwidth mode, when the next piece may go out.
    let mut next_send = Instant::now();
    while let Some(chunk) = queued.recv().await {
        let mut data = &chunk.data[..];
        while !data.is_empty() {
            let Some(grant) = allowance(&mut mode, chunk.arrived, data.len(), next_send).await
            else {
                return Ok(());
            };
            let sent = Instant::now();
            to.write_all(&data[..grant.len]).await?;
            forwarded.fetch_add(grant.len as u64, Ordering::Relaxed);
            if let Some(cost) = grant.cost {
                next_send = next_send.max(sent) + cost;
            }
            data = &data[grant.len..];
        }
    }
    to.shutdown().await
}

/// How much of a chunk may be written now.
struct Grant {
    len: usize,
    /// In bandwidth mode, the time those bytes take on the link.
    cost: Option<Duration>,
}

/// Wait until the mode lets (part of) a chunk read at `arrived`, with `pending` bytes left,
/// go out. Re-evaluated whenever the mode changes. `None` if the proxy is going away.
async fn allowance(
    mode: &mut watch::Receiver<Mode>,
    arrived: Instant,
    pending: usize,
    next_send: Instant,
) -> Option<Grant> {
    loop {
        let current = *mode.borrow_and_update();
        let (ready_at, grant) = match current {
            Mode::Pass | Mode::Refuse => {
                return Some(Grant {
                    len: pending,
                    cost: None,
                });
            }
            Mode::Delay(by) => (
                Some(arrived + by),
                Grant {
                    len: pending,
                    cost: None,
                },
            ),
            Mode::Bandwidth(bytes_per_sec) => {
                let len = pending.min(piece(bytes_per_sec));
                let cost = Duration::from_secs_f64(len as f64 / bytes_per_sec as f64);
                (
                    Some(next_send),
                    Grant {
                        len,
                        cost: Some(cost),
                    },
                )
            }
            Mode::Blackhole => (None, Grant { len: 0, cost: None }),
        };
        match ready_at {
            Some(at) if at <= Instant::now() => return Some(grant),
            Some(at) => {
                tokio::select! {
                    () = tokio::time::sleep_until(at) => return Some(grant),
                    changed = mode.changed() => changed.ok()?,
                }
            }
            None => mode.changed().await.ok()?,
        }
    }
}

/// The bytes written at once in bandwidth mode: a twentieth of a second's worth.
fn piece(bytes_per_sec: u64) -> usize {
    usize::try_from(bytes_per_sec / 20)
        .unwrap_or(CHUNK)
        .clamp(1, CHUNK)
}

#[cfg(test)]
mod tests {
    use std::io::{ErrorKind, Read, Write};
    use std::net::TcpStream;
    use std::time::Instant;

    use super::*;
    use crate::wait_for;

    /// Long enough for anything that should happen on 127.0.0.1 to have happened.
    const PATIENCE: Duration = Duration::from_secs(10);
    /// How long a read waits before a stalled link counts as stalled.
    const SILENCE: Duration = Duration::from_millis(200);

    /// An echo server on its own runtime; dropping it stops the runtime and its threads.
    struct Echo {
        addr: SocketAddr,
        _runtime: tokio::runtime::Runtime,
    }

    fn echo() -> Echo {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = runtime.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
        let addr = listener.local_addr().unwrap();
        runtime.spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (mut read, mut write) = stream.split();
                    let _ = tokio::io::copy(&mut read, &mut write).await;
                });
            }
        });
        Echo {
            addr,
            _runtime: runtime,
        }
    }

    fn connect(proxy: &FaultProxy) -> TcpStream {
        let stream = TcpStream::connect(proxy.local_addr()).unwrap();
        stream.set_nodelay(true).unwrap();
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        stream
    }

    /// Send `message` and read the echo of it back.
    fn round_trip(stream: &mut TcpStream, message: &[u8]) {
        stream.write_all(message).unwrap();
        let mut echoed = vec![0; message.len()];
        stream.read_exact(&mut echoed).unwrap();
        assert_eq!(echoed, message);
    }

    /// Whether the peer closed `stream` (end of stream or reset) within `PATIENCE`.
    fn closed(stream: &mut TcpStream) -> bool {
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        match stream.read(&mut [0; 64]) {
            Ok(0) => true,
            Ok(_) => false,
            Err(error) => matches!(
                error.kind(),
                ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted | ErrorKind::BrokenPipe
            ),
        }
    }

    /// Whether nothing arrives on `stream` for `SILENCE`.
    fn silent(stream: &mut TcpStream) -> bool {
        stream.set_read_timeout(Some(SILENCE)).unwrap();
        let silent = match stream.read(&mut [0; 64]) {
            Ok(_) => false,
            Err(error) => matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
        };
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        silent
    }

    #[test]
    fn pass_forwards_both_ways_and_counts() {
        let echo = echo();
        let proxy = FaultProxy::start(echo.addr).unwrap();
        let mut client = connect(&proxy);
        let message: Vec<u8> = (0..100_000u32).map(|i| i as u8).collect();
        let writer = {
            let mut client = client.try_clone().unwrap();
            let message = message.clone();
            std::thread::spawn(move || client.write_all(&message).unwrap())
        };
        let mut echoed = vec![0; message.len()];
        client.read_exact(&mut echoed).unwrap();
        writer.join().unwrap();
        assert!(echoed == message, "the echo differs from what was sent");
        wait_for("the counters to see every byte", PATIENCE, || {
            proxy.stats()
                == ProxyStats {
                    accepted: 1,
                    open: 1,
                    bytes_to_upstream: 100_000,
                    bytes_to_client: 100_000,
                }
        });
        // A clean close by the client ends the connection cleanly on both sides.
        client.shutdown(std::net::Shutdown::Write).unwrap();
        assert!(closed(&mut client));
        wait_for("the connection to close", PATIENCE, || {
            proxy.stats().open == 0
        });
    }

    #[test]
    fn delay_holds_each_chunk_in_order() {
        let echo = echo();
        let proxy = FaultProxy::start(echo.addr).unwrap();
        let mut client = connect(&proxy);
        round_trip(&mut client, b"warm");
        let by = Duration::from_millis(100);
        proxy.delay(by);
        let started = Instant::now();
        for piece in [&b"one "[..], b"two ", b"three"] {
            client.write_all(piece).unwrap();
        }
        let mut echoed = [0; 13];
        client.read_exact(&mut echoed).unwrap();
        assert_eq!(&echoed, b"one two three");
        // Delayed on the way to the echo server and again on the way back.
        let took = started.elapsed();
        assert!(took >= 2 * by, "the echo came back after {took:?}");
        proxy.pass();
        round_trip(&mut client, b"fast again");
    }

    #[test]
    fn blackhole_stalls_and_pass_resumes_the_same_connection() {
        let echo = echo();
        let proxy = FaultProxy::start(echo.addr).unwrap();
        let mut client = connect(&proxy);
        round_trip(&mut client, b"before");
        proxy.blackhole();
        client.write_all(b"during").unwrap();
        assert!(silent(&mut client), "bytes came through a blackhole");
        // A connection made during the blackhole stalls too, but stays open.
        let mut late = connect(&proxy);
        late.write_all(b"late").unwrap();
        assert!(silent(&mut late), "bytes came through a blackhole");
        proxy.pass();
        let mut held = [0; 6];
        client.read_exact(&mut held).unwrap();
        assert_eq!(&held, b"during");
        round_trip(&mut client, b"after");
        let mut held = [0; 4];
        late.read_exact(&mut held).unwrap();
        assert_eq!(&held, b"late");
    }

    #[test]
    fn drop_all_cuts_open_connections_and_keeps_accepting() {
        let echo = echo();
        let proxy = FaultProxy::start(echo.addr).unwrap();
        let mut first = connect(&proxy);
        let mut second = connect(&proxy);
        round_trip(&mut first, b"one");
        round_trip(&mut second, b"two");
        proxy.drop_all();
        assert_eq!(proxy.stats().open, 0);
        assert!(closed(&mut first));
        assert!(closed(&mut second));
        let mut again = connect(&proxy);
        round_trip(&mut again, b"again");
        // The mode survives a drop_all, for the connections made after it as well.
        proxy.blackhole();
        proxy.drop_all();
        assert!(closed(&mut again));
        let mut stalled = connect(&proxy);
        stalled.write_all(b"stalled").unwrap();
        assert!(silent(&mut stalled));
        proxy.pass();
        let mut held = [0; 7];
        stalled.read_exact(&mut held).unwrap();
        assert_eq!(&held, b"stalled");
        assert_eq!(proxy.stats().accepted, 4);
    }

    #[test]
    fn refuse_closes_new_connections_only() {
        let echo = echo();
        let proxy = FaultProxy::start(echo.addr).unwrap();
        let mut open = connect(&proxy);
        round_trip(&mut open, b"open");
        proxy.refuse();
        let mut refused = connect(&proxy);
        assert!(closed(&mut refused));
        assert_eq!(proxy.stats().accepted, 2);
        round_trip(&mut open, b"still open");
        proxy.pass();
        let mut accepted = connect(&proxy);
        round_trip(&mut accepted, b"accepted");
    }

    #[test]
    fn bandwidth_paces_each_direction() {
        let echo = echo();
        let proxy = FaultProxy::start(echo.addr).unwrap();
        let mut client = connect(&proxy);
        round_trip(&mut client, b"warm");
        let bytes_per_sec = 20_000;
        proxy.bandwidth(bytes_per_sec);
        let message = vec![7; 10_000];
        let started = Instant::now();
        round_trip(&mut client, &message);
        // The first piece goes out at once, every later one waits for its predecessors'
        // share of the second.
        let paced = message.len() - piece(bytes_per_sec);
        let at_least = Duration::from_secs_f64(paced as f64 / bytes_per_sec as f64);
        let took = started.elapsed();
        assert!(took >= at_least, "{} bytes took {took:?}", message.len());
    }

    #[test]
    fn unreachable_upstream_resets_the_client() {
        let upstream = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = upstream.local_addr().unwrap();
        drop(upstream);
        let proxy = FaultProxy::start(addr).unwrap();
        let mut client = connect(&proxy);
        assert!(closed(&mut client));
        assert_eq!(proxy.stats().accepted, 1);
    }

    #[test]
    fn dropping_the_proxy_closes_its_connections() {
        let echo = echo();
        let proxy = FaultProxy::start(echo.addr).unwrap();
        let mut client = connect(&proxy);
        round_trip(&mut client, b"hello");
        drop(proxy);
        assert!(closed(&mut client));
    }
}
