use std::io::{self, Cursor, Read};

use super::*;

/// A reader that hands out at most one byte per read, as a slow socket may.
struct OneByteReader<R>(R);

impl<R: Read> Read for OneByteReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let end = buf.len().min(1);
        self.0.read(&mut buf[..end])
    }
}

/// A reader that is interrupted before every byte.
struct InterruptingReader<R> {
    inner: R,
    interrupt_next: bool,
}

impl<R: Read> Read for InterruptingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.interrupt_next = !self.interrupt_next;
        if self.interrupt_next {
            return Err(io::Error::from(io::ErrorKind::Interrupted));
        }
        let end = buf.len().min(1);
        self.inner.read(&mut buf[..end])
    }
}

fn frame_of(body: &[u8]) -> Vec<u8> {
    let mut frame = (body.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(body);
    frame
}

#[test]
fn request_round_trips_through_a_frame() {
    let request = Envelope::new(
        7,
        Request::WriteStdin {
            process: ProcessRef::exec("web", "sh-1"),
            data: Bytes(vec![0, 1, 2, 255]),
        },
    );
    let frame = encode(&request).unwrap();
    let decoded: Envelope<Request> = read_message(&mut Cursor::new(frame)).unwrap();
    assert_eq!(decoded, request);
}

#[test]
fn every_reply_round_trips() {
    let replies = vec![
        Reply::Done,
        Reply::Pong {
            agent_version: "0.1.0".into(),
            protocol_version: PROTOCOL_VERSION,
        },
        Reply::Spawned { pid: 42 },
        Reply::Exited(ExitStatus {
            code: None,
            signal: Some(9),
            oom_killed: true,
        }),
        Reply::Output {
            data: Bytes(b"hello".to_vec()),
        },
        Reply::OomEvents {
            events: vec![OomEvent {
                seq: 1,
                container_id: "c".into(),
            }],
        },
    ];
    for reply in replies {
        let message = Envelope::new(3, Response::Ok(reply));
        let frame = encode(&message).unwrap();
        let decoded: Envelope<Response> = decode(&frame[4..]).unwrap();
        assert_eq!(decoded, message);
    }
}

#[test]
fn frame_survives_one_byte_and_interrupted_reads() {
    let message = Envelope::new(1, Request::Ping);
    let frame = encode(&message).unwrap();
    let decoded: Envelope<Request> = read_message(&mut OneByteReader(Cursor::new(&frame))).unwrap();
    assert_eq!(decoded, message);
    let mut interrupting = InterruptingReader {
        inner: Cursor::new(&frame),
        interrupt_next: false,
    };
    let decoded: Envelope<Request> = read_message(&mut interrupting).unwrap();
    assert_eq!(decoded, message);
}

#[test]
fn two_frames_in_one_stream_are_read_in_order() {
    let mut stream = encode(&Envelope::new(1, Request::Ping)).unwrap();
    stream.extend(encode(&Envelope::new(2, Request::List)).unwrap());
    let mut reader = Cursor::new(stream);
    let first: Envelope<Request> = read_message(&mut reader).unwrap();
    let second: Envelope<Request> = read_message(&mut reader).unwrap();
    assert_eq!((first.id, second.id), (1, 2));
    assert_eq!(second.body, Request::List);
    assert!(matches!(
        read_message::<_, Request>(&mut reader),
        Err(FrameError::Closed)
    ));
}

#[test]
fn empty_stream_is_a_clean_close() {
    let err = read_frame(&mut Cursor::new(Vec::new())).unwrap_err();
    assert!(matches!(err, FrameError::Closed), "{err}");
}

#[test]
fn truncated_length_prefix_is_reported() {
    let err = read_frame(&mut Cursor::new(vec![0, 0])).unwrap_err();
    assert!(
        matches!(
            err,
            FrameError::Truncated {
                part: "length prefix",
                expected: 4,
                got: 2
            }
        ),
        "{err}"
    );
    assert!(!err.stream_usable());
}

#[test]
fn truncated_body_is_reported() {
    let mut frame = frame_of(br#"{"v":1,"id":1,"body":{"type":"ping"}}"#);
    frame.truncate(10);
    let err = read_frame(&mut OneByteReader(Cursor::new(frame))).unwrap_err();
    assert!(
        matches!(
            err,
            FrameError::Truncated {
                part: "body",
                got: 6,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn oversized_length_is_refused_before_reading_the_body() {
    let mut frame = (MAX_FRAME_LEN + 1).to_be_bytes().to_vec();
    frame.extend_from_slice(b"{}");
    let err = read_frame(&mut Cursor::new(frame)).unwrap_err();
    assert!(
        matches!(err, FrameError::TooLarge { len, max } if len == u64::from(MAX_FRAME_LEN) + 1 && max == MAX_FRAME_LEN),
        "{err}"
    );
    assert!(!err.stream_usable());
    let err = read_frame(&mut Cursor::new(u32::MAX.to_be_bytes().to_vec())).unwrap_err();
    assert!(matches!(err, FrameError::TooLarge { .. }), "{err}");
}

#[test]
fn frame_of_exactly_the_limit_is_read() {
    let body = vec![b' '; MAX_FRAME_LEN as usize];
    let read = read_frame(&mut Cursor::new(frame_of(&body))).unwrap();
    assert_eq!(read.len(), MAX_FRAME_LEN as usize);
}

#[test]
fn encoding_an_oversized_message_fails() {
    let request = Envelope::new(
        1,
        Request::WriteStdin {
            process: ProcessRef::init("c"),
            data: Bytes(vec![0; MAX_FRAME_LEN as usize]),
        },
    );
    let err = encode(&request).unwrap_err();
    assert!(matches!(err, FrameError::TooLarge { .. }), "{err}");
}

#[test]
fn garbage_json_is_malformed_but_keeps_the_stream_usable() {
    for body in [
        &b"not json"[..],
        b"{\"v\":1",
        b"[\"x\"]",
        b"{\"id\":1}",
        b"",
    ] {
        let err = decode::<Request>(body).unwrap_err();
        assert!(matches!(err, FrameError::Malformed(_)), "{body:?}: {err}");
        assert!(err.stream_usable());
        assert_eq!(err.message_id(), None);
    }
}

#[test]
fn unknown_version_names_the_version_and_the_id() {
    let err = decode::<Request>(br#"{"v":99,"id":5,"body":{"type":"ping"}}"#).unwrap_err();
    assert!(
        matches!(
            err,
            FrameError::UnsupportedVersion {
                id: 5,
                got: 99,
                supported: PROTOCOL_VERSION
            }
        ),
        "{err}"
    );
    assert_eq!(err.message_id(), Some(5));
    assert!(err.stream_usable());
}

#[test]
fn unknown_request_type_is_a_bad_body_with_its_id() {
    let err = decode::<Request>(br#"{"v":1,"id":8,"body":{"type":"format_disk"}}"#).unwrap_err();
    assert!(matches!(err, FrameError::BadBody { id: 8, .. }), "{err}");
    assert!(err.to_string().contains("format_disk"), "{err}");
}

#[test]
fn invalid_base64_is_a_bad_body() {
    let body = br#"{"v":1,"id":2,"body":{"type":"write_stdin","args":{"process":{"container_id":"c"},"data":"@@@"}}}"#;
    let err = decode::<Request>(body).unwrap_err();
    assert!(matches!(err, FrameError::BadBody { id: 2, .. }), "{err}");
    assert!(err.to_string().contains("base64"), "{err}");
}

#[test]
fn wire_form_is_stable() {
    let frame = encode(&Envelope::new(1, Request::Ping)).unwrap();
    assert_eq!(&frame[..4], &[0, 0, 0, 37]);
    assert_eq!(&frame[4..], br#"{"v":1,"id":1,"body":{"type":"ping"}}"#);
}

#[test]
fn ids_are_validated() {
    for good in ["a", "web-1", "A_b.c", &"x".repeat(MAX_ID_LEN)] {
        assert_eq!(validate_id("container_id", good), Ok(()), "{good}");
    }
    let too_long = "x".repeat(MAX_ID_LEN + 1);
    for bad in ["", ".", "..", "-rf", "a/b", "a b", "é", too_long.as_str()] {
        let err = validate_id("container_id", bad).unwrap_err();
        assert!(err.to_string().contains("container_id"), "{err}");
    }
}

#[test]
fn terminal_sizes_are_validated() {
    for (rows, cols) in [
        (1, 1),
        (24, 80),
        (MAX_TERMINAL_DIMENSION, MAX_TERMINAL_DIMENSION),
    ] {
        assert_eq!(validate_terminal_size(rows, cols), Ok(()), "{rows}x{cols}");
    }
    for (rows, cols) in [
        (0, 80),
        (24, 0),
        (0, 0),
        (MAX_TERMINAL_DIMENSION + 1, 80),
        (24, u16::MAX),
    ] {
        let err = validate_terminal_size(rows, cols).unwrap_err();
        assert!(err.to_string().contains(&format!("{rows}x{cols}")), "{err}");
    }
}

#[test]
fn resize_terminal_wire_form() {
    let request = Request::ResizeTerminal(ResizeTerminal {
        process: ProcessRef::exec("web", "sh-1"),
        rows: 50,
        cols: 132,
    });
    let json = serde_json::to_string(&request).unwrap();
    assert_eq!(
        json,
        r#"{"type":"resize_terminal","args":{"process":{"container_id":"web","exec_id":"sh-1"},"rows":50,"cols":132}}"#
    );
    assert_eq!(serde_json::from_str::<Request>(&json).unwrap(), request);
    assert_eq!(request.name(), "resize_terminal");
}

#[test]
fn client_reports_agent_errors_and_wrong_ids() {
    let error_reply = Envelope::new(
        1,
        Response::Error(ErrorReply::new(ErrorKind::NotFound, "no container \"x\"")),
    );
    let mut stream = Duplex::new(encode(&error_reply).unwrap());
    let mut client = Client::new(&mut stream);
    let err = client.start("x").unwrap_err();
    assert_eq!(err.agent_error().map(|e| e.kind), Some(ErrorKind::NotFound));

    let wrong_id = Envelope::new(9, Response::Ok(Reply::Done));
    let mut stream = Duplex::new(encode(&wrong_id).unwrap());
    let err = Client::new(&mut stream).start("x").unwrap_err();
    assert!(
        matches!(
            err,
            ClientError::WrongId {
                expected: 1,
                got: 9
            }
        ),
        "{err}"
    );
}

/// In-memory stream: reads come from a script, writes are kept.
struct Duplex {
    input: Cursor<Vec<u8>>,
    written: Vec<u8>,
}

impl Duplex {
    fn new(input: Vec<u8>) -> Self {
        Duplex {
            input: Cursor::new(input),
            written: Vec::new(),
        }
    }
}

impl Read for Duplex {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.input.read(buf)
    }
}

impl io::Write for Duplex {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.written.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
