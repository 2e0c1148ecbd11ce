//! A TCP proxy in front of a real nats-server that reads the client's side of the NATS
//! protocol, so a test can break an append at an exact point: drop the next publish to a
//! subject (an append lost on the wire, its ack never comes), or cut every connection for good
//! (an intake that died). Everything else passes through byte for byte.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

#[derive(Default)]
struct State {
    /// The subject prefix whose next publish is dropped, and who to tell.
    swallow: Mutex<Option<(String, oneshot::Sender<String>)>>,
    cut: CancellationToken,
}

impl State {
    fn swallows(&self, subject: &str) -> bool {
        let mut swallow = self.swallow.lock().expect("swallow lock");
        if swallow
            .as_ref()
            .is_some_and(|(prefix, _)| subject.starts_with(prefix.as_str()))
        {
            let (_, told) = swallow.take().expect("armed");
            let _ = told.send(subject.to_owned());
            return true;
        }
        false
    }
}

/// The proxy; stops (cutting every connection) when dropped.
pub struct NatsProxy {
    addr: SocketAddr,
    state: Arc<State>,
}

impl NatsProxy {
    /// A proxy to the nats-server at `server_url` (`nats://127.0.0.1:port`).
    pub async fn start(server_url: &str) -> anyhow::Result<NatsProxy> {
        let upstream: SocketAddr = server_url.trim_start_matches("nats://").parse()?;
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State::default());
        let accepting = state.clone();
        tokio::spawn(async move {
            loop {
                let client = tokio::select! {
                    () = accepting.cut.cancelled() => return,
                    accepted = listener.accept() => match accepted {
                        Ok((client, _)) => client,
                        Err(_) => return,
                    },
                };
                let state = accepting.clone();
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    let (client_read, client_write) = client.into_split();
                    let (mut server_read, mut server_write) = server.into_split();
                    let mut client_write = client_write;
                    tokio::select! {
                        () = state.cut.cancelled() => {}
                        _ = tokio::io::copy(&mut server_read, &mut client_write) => {}
                        _ = forward(BufReader::new(client_read), &mut server_write, &state) => {}
                    }
                });
            }
        });
        Ok(NatsProxy { addr, state })
    }

    /// The URL to connect through it.
    pub fn url(&self) -> String {
        format!("nats://{}", self.addr)
    }

    /// Drops the next publish whose subject starts with `prefix` (it never reaches the
    /// server); the receiver gets its subject once it was dropped.
    pub fn swallow_next(&self, prefix: &str) -> oneshot::Receiver<String> {
        let (told, told_rx) = oneshot::channel();
        *self.state.swallow.lock().expect("swallow lock") = Some((prefix.to_owned(), told));
        told_rx
    }

    /// Closes every connection and accepts no more: the clients behind it lose NATS for good.
    pub fn cut(&self) {
        self.state.cut.cancel();
    }
}

impl Drop for NatsProxy {
    fn drop(&mut self) {
        self.cut();
    }
}

/// Copies the client's protocol lines to the server, frame by frame, dropping the publish the
/// state says to swallow.
async fn forward(
    mut client: BufReader<OwnedReadHalf>,
    server: &mut OwnedWriteHalf,
    state: &State,
) -> anyhow::Result<()> {
    let mut line = Vec::new();
    loop {
        line.clear();
        if client.read_until(b'\n', &mut line).await? == 0 {
            return Ok(());
        }
        let text = String::from_utf8_lossy(&line).into_owned();
        let words: Vec<&str> = text.split_whitespace().collect();
        let publish = words
            .first()
            .is_some_and(|op| op.eq_ignore_ascii_case("PUB") || op.eq_ignore_ascii_case("HPUB"));
        if !publish {
            server.write_all(&line).await?;
            continue;
        }
        // PUB <subject> [reply] <size> / HPUB <subject> [reply] <header size> <total size>
        let size: usize = words.last().expect("a size").parse()?;
        let mut payload = vec![0; size + 2];
        client.read_exact(&mut payload).await?;
        if state.swallows(words[1]) {
            continue;
        }
        server.write_all(&line).await?;
        server.write_all(&payload).await?;
    }
}
