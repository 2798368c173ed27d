//! A TCP proxy that adds latency: every chunk, in both directions, is delivered a configurable
//! delay after it arrived. Put between session-svc and store-svc, it makes a slow store (or a
//! slow network) without touching either server.
//!
//! The delay is latency, not a bandwidth cap: chunks are timestamped on arrival and released
//! in order at arrival + delay, so many in flight do not add up. The delay can change at run
//! time; chunks already waiting keep the delay they arrived with.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use anyhow::Context;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{
        TcpListener, TcpStream,
        tcp::{OwnedReadHalf, OwnedWriteHalf},
    },
    sync::mpsc,
    task::JoinSet,
    time::Instant,
};

/// Chunks that may wait in one direction of one connection before reading pauses.
const CHUNKS_IN_FLIGHT: usize = 1024;

/// Largest chunk read at once.
const CHUNK_BYTES: usize = 64 * 1024;

/// A running proxy; dropping it closes the listener and every connection.
#[derive(Debug)]
pub struct DelayProxy {
    /// Where clients connect.
    addr: SocketAddr,
    /// The current delay in microseconds, shared with every connection.
    delay_micros: Arc<AtomicU64>,
    /// The accept loop and, through it, every connection's tasks.
    tasks: JoinSet<()>,
}

impl DelayProxy {
    /// Listens on `127.0.0.1:0` and forwards every connection to `target`, each chunk `delay`
    /// late.
    pub async fn start(target: SocketAddr, delay: Duration) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding the proxy")?;
        let addr = listener.local_addr()?;
        let delay_micros = Arc::new(AtomicU64::new(micros(delay)));
        let mut tasks = JoinSet::new();
        tasks.spawn(accept_loop(listener, target, Arc::clone(&delay_micros)));
        Ok(Self {
            addr,
            delay_micros,
            tasks,
        })
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The `http://ADDR` URI of the proxy.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Changes the delay of chunks arriving from now on.
    pub fn set_delay(&self, delay: Duration) {
        self.delay_micros.store(micros(delay), Ordering::SeqCst);
    }

    /// The current delay.
    pub fn delay(&self) -> Duration {
        Duration::from_micros(self.delay_micros.load(Ordering::SeqCst))
    }
}

impl Drop for DelayProxy {
    fn drop(&mut self) {
        self.tasks.abort_all();
    }
}

fn micros(delay: Duration) -> u64 {
    u64::try_from(delay.as_micros()).unwrap_or(u64::MAX)
}

async fn accept_loop(listener: TcpListener, target: SocketAddr, delay: Arc<AtomicU64>) {
    // Owned here, so aborting the accept loop aborts every connection too.
    let mut connections = JoinSet::new();
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        let delay = Arc::clone(&delay);
        connections.spawn(async move {
            let Ok(server) = TcpStream::connect(target).await else {
                return; // dropping `client` tells the caller the target is down
            };
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            let (client_read, client_write) = client.into_split();
            let (server_read, server_write) = server.into_split();
            tokio::join!(
                pipe(client_read, server_write, Arc::clone(&delay)),
                pipe(server_read, client_write, delay),
            );
        });
        // Reap finished connections so a long test does not accumulate them.
        while connections.try_join_next().is_some() {}
    }
}

/// Copies one direction, each chunk released `delay` after it was read.
async fn pipe(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, delay: Arc<AtomicU64>) {
    let (chunks, mut delayed) = mpsc::channel::<(Instant, Vec<u8>)>(CHUNKS_IN_FLIGHT);
    let reader = async move {
        let mut buffer = vec![0; CHUNK_BYTES];
        while let Ok(read) = from.read(&mut buffer).await {
            if read == 0 {
                break;
            }
            let due = Instant::now() + Duration::from_micros(delay.load(Ordering::SeqCst));
            if chunks.send((due, buffer[..read].to_vec())).await.is_err() {
                break;
            }
        }
        // Dropping `chunks` ends the writer once it has delivered what was read.
    };
    let writer = async move {
        while let Some((due, chunk)) = delayed.recv().await {
            tokio::time::sleep_until(due).await;
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(reader, writer);
}
