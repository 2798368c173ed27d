//! A minimal Prometheus endpoint: `GET /metrics` answers the text exposition format.
//!
//! Hand-rolled on a TCP listener rather than pulling an HTTP framework in for one route.

use std::{future::Future, sync::Arc};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

/// Something that can write its metrics in the Prometheus text format.
pub trait Render: Send + Sync + 'static {
    /// Appends `# TYPE` lines and samples to `out`.
    fn render(&self, out: &mut String);
}

/// Two sets of metrics on one endpoint (a server's own, and its connections').
impl<A: Render, B: Render> Render for (A, B) {
    fn render(&self, out: &mut String) {
        self.0.render(out);
        self.1.render(out);
    }
}

impl<R: Render + ?Sized> Render for Arc<R> {
    fn render(&self, out: &mut String) {
        (**self).render(out);
    }
}

/// Stops the metrics endpoint when dropped.
pub struct MetricsHandle(Option<tokio::sync::oneshot::Sender<()>>);

impl Drop for MetricsHandle {
    fn drop(&mut self) {
        if let Some(stop) = self.0.take() {
            let _ = stop.send(());
        }
    }
}

/// Binds `addr` (if set) and serves `metrics` there in the background until the returned
/// handle is dropped.
pub async fn spawn(
    addr: Option<std::net::SocketAddr>,
    metrics: Arc<dyn Render>,
) -> anyhow::Result<MetricsHandle> {
    let Some(addr) = addr else {
        return Ok(MetricsHandle(None));
    };
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen for metrics on {addr}: {e}"))?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(serve(listener, metrics, async move {
        let _ = stopped.await;
    }));
    Ok(MetricsHandle(Some(stop)))
}

/// Serves `GET /metrics` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<dyn Render>,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let metrics = metrics.clone();
                    tokio::spawn(async move {
                        if let Err(error) = answer(stream, metrics.as_ref()).await {
                            tracing::debug!(%error, "metrics request failed");
                        }
                    });
                }
                Err(error) => tracing::warn!(%error, "metrics accept failed"),
            },
        }
    }
}

async fn answer(mut stream: TcpStream, metrics: &dyn Render) -> std::io::Result<()> {
    // Requests are a line and a few headers; 8 KiB is far more than a scraper sends.
    let mut buf = vec![0u8; 8192];
    let mut len = 0;
    while !buf[..len].windows(4).any(|w| w == b"\r\n\r\n") && len < buf.len() {
        let n = stream.read(&mut buf[len..]).await?;
        if n == 0 {
            break;
        }
        len += n;
    }
    let (status, body) = if buf[..len].starts_with(b"GET /metrics ") {
        let mut body = String::new();
        metrics.render(&mut body);
        ("200 OK", body)
    } else {
        ("404 Not Found", "try GET /metrics\n".to_string())
    };
    let head = format!(
        "HTTP/1.1 {status}\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}
