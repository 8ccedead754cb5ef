//! Accepts connections (vsock in a guest, Unix in host tests; one code path, generic over the
//! listener) and serves each on its own thread. Every request runs on a thread of its own and
//! its reply is written when done, tagged with the request's id.

use std::io::{self, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use condo_protocol::{
    decode, read_frame, write_message, Envelope, ErrorKind, ErrorReply, FrameError, Request,
    Response,
};

use super::{log, Agent, ContainerBackend};

/// A byte stream to one client.
pub trait Connection: Read + Write + Send + Sized + 'static {
    /// A second handle on the same stream (replies are written through it).
    fn try_clone(&self) -> io::Result<Self>;
    /// Ends the stream both ways.
    fn shutdown(&self);
}

pub trait Listener {
    type Conn: Connection;
    fn accept(&self) -> io::Result<Self::Conn>;
}

impl Connection for UnixStream {
    fn try_clone(&self) -> io::Result<Self> {
        UnixStream::try_clone(self)
    }
    fn shutdown(&self) {
        let _ = UnixStream::shutdown(self, std::net::Shutdown::Both);
    }
}

impl Listener for UnixListener {
    type Conn = UnixStream;
    fn accept(&self) -> io::Result<UnixStream> {
        UnixListener::accept(self).map(|(stream, _)| stream)
    }
}

impl Connection for vsock::VsockStream {
    fn try_clone(&self) -> io::Result<Self> {
        vsock::VsockStream::try_clone(self)
    }
    fn shutdown(&self) {
        let _ = vsock::VsockStream::shutdown(self, std::net::Shutdown::Both);
    }
}

impl Listener for vsock::VsockListener {
    type Conn = vsock::VsockStream;
    fn accept(&self) -> io::Result<vsock::VsockStream> {
        vsock::VsockListener::accept(self).map(|(stream, _)| stream)
    }
}

/// Bounds on what clients may hold of the agent.
#[derive(Debug, Clone, Copy)]
pub struct ServerLimits {
    pub max_connections: usize,
    /// Requests in flight on one connection.
    pub max_in_flight: usize,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            max_connections: 256,
            max_in_flight: 64,
        }
    }
}

/// Accepts and serves connections until accepting fails persistently; returns that error.
pub fn serve<L, B>(listener: L, agent: Arc<Agent<B>>, limits: ServerLimits) -> io::Error
where
    L: Listener,
    B: ContainerBackend,
{
    let connections = Arc::new(AtomicUsize::new(0));
    let mut failures_in_a_row = 0u32;
    loop {
        let conn = match listener.accept() {
            Ok(conn) => conn,
            Err(err) => {
                // ECONNABORTED, EMFILE and the like pass; a listener that only fails is dead.
                failures_in_a_row += 1;
                log(format_args!(
                    "accept failed ({failures_in_a_row} in a row): {err}"
                ));
                if failures_in_a_row >= 100 {
                    return err;
                }
                continue;
            }
        };
        failures_in_a_row = 0;
        if connections.fetch_add(1, Ordering::AcqRel) >= limits.max_connections {
            connections.fetch_sub(1, Ordering::AcqRel);
            refuse(conn, limits.max_connections);
            continue;
        }
        let agent = Arc::clone(&agent);
        let count = Arc::clone(&connections);
        let spawned = std::thread::Builder::new()
            .name("connection".into())
            .spawn(move || {
                serve_connection(conn, &agent, limits);
                count.fetch_sub(1, Ordering::AcqRel);
            });
        if let Err(err) = spawned {
            connections.fetch_sub(1, Ordering::AcqRel);
            log(format_args!("cannot start a connection thread: {err}"));
        }
    }
}

fn refuse<C: Connection>(mut conn: C, max: usize) {
    let error = ErrorReply::new(
        ErrorKind::Busy,
        format!("agent is at its limit of {max} connections"),
    );
    let _ = write_message(&mut conn, &Envelope::new(0, Response::Error(error)));
    conn.shutdown();
}

type SharedWriter<C> = Arc<Mutex<C>>;

fn send<C: Connection>(writer: &SharedWriter<C>, id: u64, response: Response) {
    let Ok(mut conn) = writer.lock() else {
        return;
    };
    let sent = write_message(&mut *conn, &Envelope::new(id, response));
    if let Err(err) = sent {
        // The client went away, or the reply cannot be encoded; tell it if we still can.
        if matches!(err, FrameError::TooLarge { .. }) {
            let error = ErrorReply::new(ErrorKind::Internal, format!("reply not sent: {err}"));
            let _ = write_message(&mut *conn, &Envelope::new(id, Response::Error(error)));
        }
    }
}

/// Serves one connection until the client closes it or breaks the framing.
pub fn serve_connection<C, B>(mut reader: C, agent: &Arc<Agent<B>>, limits: ServerLimits)
where
    C: Connection,
    B: ContainerBackend,
{
    let writer = match reader.try_clone() {
        Ok(writer) => Arc::new(Mutex::new(writer)),
        Err(err) => {
            log(format_args!("cannot clone a connection: {err}"));
            return;
        }
    };
    let in_flight = Arc::new(AtomicUsize::new(0));
    loop {
        let body = match read_frame(&mut reader) {
            Ok(body) => body,
            Err(FrameError::Closed) => break,
            Err(err @ FrameError::TooLarge { .. }) => {
                // Cannot skip what we refused to read: answer, then drop this connection only.
                send(&writer, 0, frame_error_reply(&err));
                reader.shutdown();
                break;
            }
            Err(_) => break,
        };
        let envelope = match decode::<Request>(&body) {
            Ok(envelope) => envelope,
            Err(err) => {
                send(
                    &writer,
                    err.message_id().unwrap_or(0),
                    frame_error_reply(&err),
                );
                continue;
            }
        };
        dispatch(envelope, agent, &writer, &in_flight, limits.max_in_flight);
    }
}

/// Runs one request on its own thread, within the connection's in-flight limit.
fn dispatch<C, B>(
    envelope: Envelope<Request>,
    agent: &Arc<Agent<B>>,
    writer: &SharedWriter<C>,
    in_flight: &Arc<AtomicUsize>,
    max_in_flight: usize,
) where
    C: Connection,
    B: ContainerBackend,
{
    let id = envelope.id;
    if in_flight.fetch_add(1, Ordering::AcqRel) >= max_in_flight {
        in_flight.fetch_sub(1, Ordering::AcqRel);
        let error = ErrorReply::new(
            ErrorKind::Busy,
            format!("{max_in_flight} requests already in flight on this connection"),
        );
        send(writer, id, Response::Error(error));
        return;
    }
    let (agent, thread_writer, count) =
        (Arc::clone(agent), Arc::clone(writer), Arc::clone(in_flight));
    let name = envelope.body.name();
    let spawned = std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            let response = agent.handle(envelope.body);
            send(&thread_writer, id, response);
            count.fetch_sub(1, Ordering::AcqRel);
        });
    if let Err(err) = spawned {
        in_flight.fetch_sub(1, Ordering::AcqRel);
        let error = ErrorReply::new(
            ErrorKind::Busy,
            format!("cannot start a thread for {name}: {err}"),
        );
        send(writer, id, Response::Error(error));
    }
}

fn frame_error_reply(err: &FrameError) -> Response {
    let kind = match err {
        FrameError::TooLarge { .. } => ErrorKind::FrameTooLarge,
        FrameError::UnsupportedVersion { .. } => ErrorKind::UnsupportedVersion,
        FrameError::BadBody { .. } => ErrorKind::InvalidRequest,
        _ => ErrorKind::MalformedFrame,
    };
    Response::Error(ErrorReply::new(kind, err.to_string()))
}
