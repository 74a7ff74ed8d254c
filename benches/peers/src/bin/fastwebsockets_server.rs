//! `/echo` and `/broadcast` on fastwebsockets + hyper, a current-thread tokio runtime (the
//! setup of fastwebsockets' own echo example, its recommended fast path).
//!
//! usage: fastwebsockets_server [ADDR [CERT KEY]]   (default 127.0.0.1:9101; with a PEM
//! certificate and key: `wss://` through tokio-rustls)

use fastwebsockets::{FragmentCollector, FragmentCollectorRead, Frame, OpCode, Payload, WebSocketError, upgrade};
use http_body_util::Empty;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::broadcast;

type Fanout = broadcast::Sender<(OpCode, Bytes)>;

async fn echo(fut: upgrade::UpgradeFut) -> Result<(), WebSocketError> {
    let mut ws = FragmentCollector::new(fut.await?);
    loop {
        let frame = ws.read_frame().await?;
        match frame.opcode {
            OpCode::Close => break,
            OpCode::Text | OpCode::Binary => ws.write_frame(frame).await?,
            _ => {}
        }
    }
    Ok(())
}

async fn member(fut: upgrade::UpgradeFut, fanout: Fanout) -> Result<(), WebSocketError> {
    let ws = fut.await?;
    let (rx, mut tx) = ws.split(tokio::io::split);
    let mut rx = FragmentCollectorRead::new(rx);
    let mut feed = fanout.subscribe();
    // Writes happen in this task; the read half only forwards what it reads to the channel.
    let reader = tokio::spawn(async move {
        // Pongs and close replies are not written back from here (the write half belongs to
        // the other task); the load tool does not ping.
        let mut ignore = |_: Frame<'_>| async { Ok::<_, WebSocketError>(()) };
        loop {
            let frame = rx.read_frame(&mut ignore).await?;
            match frame.opcode {
                OpCode::Close => return Ok::<_, WebSocketError>(()),
                OpCode::Text | OpCode::Binary => {
                    let _ = fanout.send((frame.opcode, Bytes::copy_from_slice(&frame.payload)));
                }
                _ => {}
            }
        }
    });
    loop {
        match feed.recv().await {
            Ok((opcode, payload)) => {
                let frame = Frame::new(true, opcode, None, Payload::Borrowed(&payload));
                if tx.write_frame(frame).await.is_err() {
                    break;
                }
            }
            Err(broadcast::error::RecvError::Lagged(_)) => continue,
            Err(broadcast::error::RecvError::Closed) => break,
        }
        if reader.is_finished() {
            break;
        }
    }
    reader.abort();
    Ok(())
}

async fn route(mut req: Request<Incoming>, fanout: Fanout) -> Result<Response<Empty<Bytes>>, WebSocketError> {
    let path = req.uri().path().to_owned();
    if !upgrade::is_upgrade_request(&req) || (path != "/echo" && path != "/broadcast") {
        let mut response = Response::new(Empty::new());
        *response.status_mut() = StatusCode::NOT_FOUND;
        return Ok(response);
    }
    let (response, fut) = upgrade::upgrade(&mut req)?;
    tokio::task::spawn(async move {
        let result = if path == "/echo" {
            tokio::task::unconstrained(echo(fut)).await
        } else {
            tokio::task::unconstrained(member(fut, fanout)).await
        };
        if let Err(e) = result {
            let _ = e;
        }
    });
    Ok(response)
}

async fn serve<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(stream: S, fanout: Fanout) {
    let io = hyper_util::rt::TokioIo::new(stream);
    let service = service_fn(move |req| route(req, fanout.clone()));
    let _ = http1::Builder::new().serve_connection(io, service).with_upgrades().await;
}

fn main() -> std::io::Result<()> {
    let (addr, tls) = hibiki_peers::tls::args("127.0.0.1:9101")?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_io().build()?;
    runtime.block_on(async move {
        let listener = TcpListener::bind(addr).await?;
        eprintln!("fastwebsockets server on {addr}{}", if tls.is_some() { " (TLS)" } else { "" });
        let (fanout, _) = broadcast::channel(4096);
        loop {
            let (stream, _) = listener.accept().await?;
            let _ = stream.set_nodelay(true);
            let fanout = fanout.clone();
            let tls = tls.clone();
            tokio::spawn(async move {
                match tls {
                    Some(acceptor) => {
                        if let Ok(stream) = acceptor.accept(stream).await {
                            serve(stream, fanout).await;
                        }
                    }
                    None => serve(stream, fanout).await,
                }
            });
        }
    })
}
