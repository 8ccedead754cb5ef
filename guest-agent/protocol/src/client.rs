//! A blocking client: one request in flight per connection. Open more connections for work
//! that must overlap (a `Wait` on one, stdio on others); the agent serves each concurrently.

use std::io::{Read, Write};

use crate::frame::{read_message, write_message, Envelope, FrameError};
use crate::messages::{
    BootTimings, Bytes, ContainerInfo, ContainerStats, CreateContainer, ErrorReply, ExecProcess,
    ExitStatus, MountImage, OomEvent, OutputStream, ProcessRef, ReadLog, Reply, Request,
    ResizeTerminal, Response,
};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error("agent refused {request}: {error}")]
    Agent {
        request: &'static str,
        error: ErrorReply,
    },
    #[error("reply to request {got} arrived while waiting for request {expected}")]
    WrongId { expected: u64, got: u64 },
    #[error("unexpected reply to {request}: {reply:?}")]
    UnexpectedReply { request: &'static str, reply: Reply },
}

impl ClientError {
    /// The agent's error, when the agent answered with one.
    pub fn agent_error(&self) -> Option<&ErrorReply> {
        match self {
            ClientError::Agent { error, .. } => Some(error),
            _ => None,
        }
    }
}

pub struct Client<S> {
    stream: S,
    next_id: u64,
}

macro_rules! expect_reply {
    ($self:ident, $request:expr, $pattern:pat => $value:expr) => {{
        let request = $request;
        let name = request.name();
        match $self.call(request)? {
            $pattern => Ok($value),
            reply => Err(ClientError::UnexpectedReply {
                request: name,
                reply,
            }),
        }
    }};
}

impl<S: Read + Write> Client<S> {
    pub fn new(stream: S) -> Self {
        Client { stream, next_id: 1 }
    }

    /// The underlying stream (to set timeouts, or to shut it down).
    pub fn stream(&self) -> &S {
        &self.stream
    }

    /// Sends one request and waits for its reply.
    pub fn call(&mut self, request: Request) -> Result<Reply, ClientError> {
        let id = self.next_id;
        self.next_id += 1;
        let name = request.name();
        write_message(&mut self.stream, &Envelope::new(id, request))?;
        let response: Envelope<Response> = read_message(&mut self.stream)?;
        if response.id != id {
            return Err(ClientError::WrongId {
                expected: id,
                got: response.id,
            });
        }
        match response.body {
            Response::Ok(reply) => Ok(reply),
            Response::Error(error) => Err(ClientError::Agent {
                request: name,
                error,
            }),
        }
    }

    /// Returns (agent version, protocol version).
    pub fn ping(&mut self) -> Result<(String, u32), ClientError> {
        expect_reply!(self, Request::Ping,
            Reply::Pong { agent_version, protocol_version } => (agent_version, protocol_version))
    }

    pub fn boot_timings(&mut self) -> Result<BootTimings, ClientError> {
        expect_reply!(self, Request::BootTimings, Reply::BootTimings(timings) => timings)
    }

    /// Creates a container; returns the pid of its init, blocked until `start`.
    pub fn create(&mut self, create: CreateContainer) -> Result<i32, ClientError> {
        expect_reply!(self, Request::CreateContainer(create), Reply::Spawned { pid } => pid)
    }

    pub fn start(&mut self, container_id: &str) -> Result<(), ClientError> {
        let request = Request::StartContainer {
            container_id: container_id.to_owned(),
        };
        expect_reply!(self, request, Reply::Done => ())
    }

    pub fn exec(&mut self, exec: ExecProcess) -> Result<i32, ClientError> {
        expect_reply!(self, Request::Exec(exec), Reply::Spawned { pid } => pid)
    }

    pub fn signal(&mut self, process: ProcessRef, signal: i32) -> Result<(), ClientError> {
        expect_reply!(self, Request::Signal { process, signal }, Reply::Done => ())
    }

    /// Sets the window size of the process's terminal.
    pub fn resize_terminal(
        &mut self,
        process: ProcessRef,
        rows: u16,
        cols: u16,
    ) -> Result<(), ClientError> {
        let request = Request::ResizeTerminal(ResizeTerminal {
            process,
            rows,
            cols,
        });
        expect_reply!(self, request, Reply::Done => ())
    }

    pub fn wait(&mut self, process: ProcessRef) -> Result<ExitStatus, ClientError> {
        expect_reply!(self, Request::Wait { process }, Reply::Exited(status) => status)
    }

    pub fn delete(&mut self, container_id: &str, force: bool) -> Result<(), ClientError> {
        let request = Request::DeleteContainer {
            container_id: container_id.to_owned(),
            force,
        };
        expect_reply!(self, request, Reply::Done => ())
    }

    pub fn stats(&mut self, container_id: &str) -> Result<ContainerStats, ClientError> {
        let request = Request::Stats {
            container_id: container_id.to_owned(),
        };
        expect_reply!(self, request, Reply::Stats(stats) => stats)
    }

    pub fn list(&mut self) -> Result<Vec<ContainerInfo>, ClientError> {
        expect_reply!(self, Request::List, Reply::Containers(list) => list)
    }

    pub fn write_stdin(&mut self, process: ProcessRef, data: &[u8]) -> Result<u32, ClientError> {
        let request = Request::WriteStdin {
            process,
            data: Bytes(data.to_vec()),
        };
        expect_reply!(self, request, Reply::StdinWritten { bytes } => bytes)
    }

    pub fn close_stdin(&mut self, process: ProcessRef) -> Result<(), ClientError> {
        expect_reply!(self, Request::CloseStdin { process }, Reply::Done => ())
    }

    /// Reads the next chunk of output; empty at the end of the stream.
    pub fn read_output(
        &mut self,
        process: ProcessRef,
        stream: OutputStream,
        max_bytes: u32,
    ) -> Result<Vec<u8>, ClientError> {
        let request = Request::ReadOutput {
            process,
            stream,
            max_bytes,
        };
        expect_reply!(self, request, Reply::Output { data } => data.0)
    }

    /// Reads a stream to its end.
    pub fn read_output_to_end(
        &mut self,
        process: &ProcessRef,
        stream: OutputStream,
    ) -> Result<Vec<u8>, ClientError> {
        let mut all = Vec::new();
        loop {
            let chunk =
                self.read_output(process.clone(), stream, crate::messages::MAX_STDIO_CHUNK)?;
            if chunk.is_empty() {
                return Ok(all);
            }
            all.extend_from_slice(&chunk);
        }
    }

    pub fn wait_oom_events(
        &mut self,
        after: u64,
        timeout_ms: u32,
    ) -> Result<Vec<OomEvent>, ClientError> {
        let request = Request::WaitOomEvents { after, timeout_ms };
        expect_reply!(self, request, Reply::OomEvents { events } => events)
    }

    /// Reads kept output of a container from `read.offset`: (data, next offset, eof).
    pub fn read_log(&mut self, read: ReadLog) -> Result<(Vec<u8>, u64, bool), ClientError> {
        expect_reply!(self, Request::ReadLog(read),
            Reply::Log { data, next_offset, eof } => (data.0, next_offset, eof))
    }

    /// Mounts an image in the agent; returns the mount point.
    pub fn mount_image(&mut self, mount: MountImage) -> Result<String, ClientError> {
        expect_reply!(self, Request::MountImage(mount), Reply::ImageMounted { path } => path)
    }
}
