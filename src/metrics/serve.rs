//! The metrics listener on the event loop: one short task per connection reads one request
//! head (at most `METRICS_HEAD_BYTES_MAX`, within `METRICS_REQUEST_TIMEOUT_MS`), writes the
//! whole reply and closes. At most `METRICS_CONNECTIONS_MAX` are served at once; past that a
//! connection is closed unanswered, so a flood of scrapers costs bounded memory and the loop
//! spends its time on clients.

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use super::http::{self, Refusal, Request};
use super::Site;
use crate::limits::{METRICS_CONNECTIONS_MAX, METRICS_HEAD_BYTES_MAX, METRICS_REQUEST_TIMEOUT_MS};
use crate::runtime::{TcpListener, TcpStream};

/// Serves `listener` until the loop ends.
pub async fn run(listener: TcpListener, site: Rc<dyn Site>) {
    let open = Rc::new(Cell::new(0usize));
    loop {
        match listener.accept().await {
            Ok((stream, _)) if open.get() >= METRICS_CONNECTIONS_MAX => drop(stream),
            Ok((stream, _)) => {
                open.set(open.get() + 1);
                let (site, open) = (site.clone(), open.clone());
                crate::runtime::spawn(async move {
                    let timeout = Duration::from_millis(METRICS_REQUEST_TIMEOUT_MS);
                    let _ = tokio::time::timeout(timeout, answer(&stream, &*site)).await;
                    open.set(open.get() - 1);
                });
            }
            Err(error) => {
                tracing::warn!(%error, "accepting a metrics connection failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn answer(stream: &TcpStream, site: &dyn Site) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(1024);
    let request = loop {
        if let Some(end) = http::head_end(&head) {
            break http::parse(&head[..end]);
        }
        if head.len() >= METRICS_HEAD_BYTES_MAX {
            break Request::Refuse(Refusal::HeadTooLarge);
        }
        let (read, chunk) = stream.read(vec![0u8; 2048]).await;
        match read? {
            0 => return Ok(()),
            n => head.extend_from_slice(&chunk[..n]),
        }
    };
    let bytes = match request {
        Request::Get {
            endpoint,
            head_only,
        } => site.answer(endpoint).encode(head_only),
        Request::Refuse(refusal) => http::Reply::refusal(refusal).encode(false),
    };
    let (written, _) = stream.write_all(bytes).await;
    written?;
    stream.shutdown(std::net::Shutdown::Write)
}
