//! `/echo` and `/broadcast` on tokio-tungstenite, a current-thread tokio runtime.
//!
//! usage: tungstenite_server [ADDR [CERT KEY]]   (default 127.0.0.1:9102; with a PEM
//! certificate and key: `wss://` through tokio-rustls)

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::broadcast;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};

async fn serve<S: AsyncRead + AsyncWrite + Unpin>(stream: S, fanout: broadcast::Sender<Message>) {
    let mut path = String::new();
    let callback = |req: &Request, resp: Response| -> Result<Response, ErrorResponse> {
        path = req.uri().path().to_owned();
        Ok(resp)
    };
    let Ok(ws) = tokio_tungstenite::accept_hdr_async(stream, callback).await else { return };
    let (mut write, mut read) = ws.split();
    if path == "/broadcast" {
        let mut feed = fanout.subscribe();
        loop {
            tokio::select! {
                incoming = read.next() => match incoming {
                    Some(Ok(m)) if m.is_text() || m.is_binary() => { let _ = fanout.send(m); }
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                    Some(Ok(_)) => {}
                },
                outgoing = feed.recv() => match outgoing {
                    Ok(m) => if write.send(m).await.is_err() { break },
                    Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => break,
                },
            }
        }
    } else {
        while let Some(Ok(message)) = read.next().await {
            if message.is_text() || message.is_binary() {
                if write.send(message).await.is_err() {
                    break;
                }
            } else if message.is_close() {
                break;
            }
        }
    }
}

fn main() -> std::io::Result<()> {
    let (addr, tls) = hibiki_peers::tls::args("127.0.0.1:9102")?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async move {
        let listener = TcpListener::bind(addr).await?;
        eprintln!("tokio-tungstenite server on {addr}{}", if tls.is_some() { " (TLS)" } else { "" });
        let (fanout, _) = broadcast::channel(4096);
        loop {
            let (stream, _) = listener.accept().await?;
            let _ = stream.set_nodelay(true);
            let fanout = fanout.clone();
            match tls.clone() {
                Some(acceptor) => {
                    tokio::spawn(async move {
                        if let Ok(stream) = acceptor.accept(stream).await {
                            serve(stream, fanout).await;
                        }
                    });
                }
                None => {
                    tokio::spawn(serve(stream, fanout));
                }
            }
        }
    })
}
