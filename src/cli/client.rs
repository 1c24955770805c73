//! The client end of the socket: connect, say hello, send a request, follow its answer.
//!
//! Only a connection that cannot be made is "unreachable" (exit 3). Once connected, a broken
//! connection, a frame that cannot be read or a request too large to send is a failure of the
//! command (exit 1) that says what happened: the server is there, starting one would not help.

use std::io::{BufReader, BufWriter};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use super::CliError;
use crate::protocol::{
    human_size, read_message, write_frame, ClientMessage, ErrorKind, ErrorReport, FrameError, Reply, Request,
    ServerMessage, MAX_FRAME_LEN, PROTOCOL_VERSION,
};

pub struct Client {
    socket: PathBuf,
    reader: BufReader<UnixStream>,
    writer: BufWriter<UnixStream>,
}

impl Client {
    /// Connects and exchanges hellos. A server that cannot be reached is exit code 3.
    pub fn connect(socket: &Path) -> Result<Client, CliError> {
        let unreachable =
            |e: std::io::Error| CliError::Unreachable { socket: socket.to_path_buf(), reason: e.to_string() };
        let stream = UnixStream::connect(socket).map_err(unreachable)?;
        Client::over(stream, socket)
    }

    /// Connects, then bounds each read and write by `timeout` (the connect itself is not
    /// bounded: shell completion runs this on a thread it can abandon).
    pub fn connect_timeout(socket: &Path, timeout: std::time::Duration) -> Result<Client, CliError> {
        let unreachable =
            |e: std::io::Error| CliError::Unreachable { socket: socket.to_path_buf(), reason: e.to_string() };
        let stream = UnixStream::connect(socket).map_err(unreachable)?;
        stream.set_read_timeout(Some(timeout)).map_err(unreachable)?;
        stream.set_write_timeout(Some(timeout)).map_err(unreachable)?;
        Client::over(stream, socket)
    }

    /// Says hello over a connected stream.
    fn over(stream: UnixStream, socket: &Path) -> Result<Client, CliError> {
        let reader = BufReader::new(
            stream.try_clone().map_err(|e| CliError::Failed(format!("cannot use the connection: {e}")))?,
        );
        let writer = BufWriter::new(stream);
        let mut client = Client { socket: socket.to_path_buf(), reader, writer };
        let sent = client.send(&ClientMessage::Hello {
            protocol: PROTOCOL_VERSION,
            client_version: env!("CARGO_PKG_VERSION").to_string(),
        });
        // A server that refuses us may close before reading the hello: its reason is still
        // waiting to be read, and says more than the broken pipe.
        let answer = match (client.recv(), sent) {
            (Ok(msg), _) => msg,
            (Err(_), Err(send_error)) => return Err(client.broken(format!("cannot send the hello: {send_error}"))),
            (Err(e), Ok(())) => return Err(e),
        };
        match answer {
            ServerMessage::Hello { .. } => Ok(client),
            ServerMessage::Error(report) => Err(CliError::Server(report)),
            other => Err(CliError::Server(ErrorReport::new(
                ErrorKind::Protocol,
                format!("unexpected {} frame in answer to the hello", other.name()),
            ))),
        }
    }

    fn send(&mut self, msg: &ClientMessage) -> Result<(), FrameError> {
        write_frame(&mut self.writer, msg)
    }

    /// The error for a connection that broke after it was made.
    fn broken(&self, reason: String) -> CliError {
        CliError::Connection { socket: self.socket.clone(), reason }
    }

    fn recv(&mut self) -> Result<ServerMessage, CliError> {
        match read_message(&mut self.reader) {
            Ok(Some(msg)) => Ok(msg),
            Ok(None) => Err(self.broken("the server closed the connection without answering".into())),
            Err(e @ FrameError::Io(_)) => Err(self.broken(e.to_string())),
            Err(e) => Err(self.broken(format!("cannot read the server's answer: {e}"))),
        }
    }

    /// Sends a request; progress lines go to `progress`; returns the final reply.
    pub fn request(&mut self, request: Request, progress: &mut dyn FnMut(&str)) -> Result<Reply, CliError> {
        self.stream(request, progress, &mut |_| {
            Err(CliError::Server(ErrorReport::new(
                ErrorKind::Protocol,
                "unexpected event frame in answer to a request",
            )))
        })
    }

    /// [`Client::request`] for requests that stream events before their answer (`get -w`):
    /// each goes to `event`, which may end the stream with an error.
    pub fn stream(
        &mut self,
        request: Request,
        progress: &mut dyn FnMut(&str),
        event: &mut dyn FnMut(crate::protocol::WatchEvent) -> Result<(), CliError>,
    ) -> Result<Reply, CliError> {
        let advice = batch_advice(&request);
        match self.send(&ClientMessage::Request(request)) {
            Ok(()) => {}
            Err(FrameError::TooLarge(len)) => {
                return Err(CliError::Failed(format!(
                    "the request is {}, over the {} frame limit{advice}",
                    human_size(len),
                    human_size(MAX_FRAME_LEN)
                )))
            }
            // The server may have refused the request and closed while it was being sent: its
            // reason is waiting to be read.
            Err(e) => {
                return match self.recv() {
                    Ok(ServerMessage::Error(report)) => Err(CliError::Server(report)),
                    _ => Err(self.broken(format!("cannot send the request: {e}"))),
                }
            }
        }
        loop {
            match self.recv()? {
                ServerMessage::Progress(line) => progress(&line),
                ServerMessage::Event(e) => event(e)?,
                ServerMessage::Reply(reply) => return Ok(reply),
                ServerMessage::Error(report) => return Err(CliError::Server(report)),
                other @ (ServerMessage::Hello { .. } | ServerMessage::Part(_)) => {
                    return Err(CliError::Server(ErrorReport::new(
                        ErrorKind::Protocol,
                        format!("unexpected {} frame in answer to a request", other.name()),
                    )))
                }
            }
        }
    }
}

/// What to do about a request too large for a frame, as the end of the error message.
fn batch_advice(request: &Request) -> &'static str {
    match request {
        Request::Apply(_) => "; apply the files in smaller batches",
        Request::Delete(_) => "; delete the objects in smaller batches",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;
    use crate::protocol::{read_frame, write_message, ApplyRequest, Document, GetRequest};

    /// A server on one end of a socket pair that answers the hello, then runs `then`.
    fn fake_server(then: impl FnOnce(UnixStream) + Send + 'static) -> (Client, std::thread::JoinHandle<()>) {
        let (client_end, mut server_end) = UnixStream::pair().unwrap();
        let server = std::thread::spawn(move || {
            let hello: Option<ClientMessage> = read_frame(&mut server_end).unwrap();
            assert!(matches!(hello, Some(ClientMessage::Hello { .. })));
            let answer = ServerMessage::Hello { protocol: PROTOCOL_VERSION, server_version: "test".into() };
            write_message(&mut server_end, &answer).unwrap();
            then(server_end);
        });
        let client = Client::over(client_end, Path::new("/test.sock")).unwrap_or_else(|e| panic!("{e:?}"));
        (client, server)
    }

    fn get() -> Request {
        Request::Get(GetRequest { resource: "blobs".into(), ..Default::default() })
    }

    fn apply_of(bytes: usize) -> Request {
        let doc = Document { source: "big.yaml".into(), json: "b".repeat(bytes) };
        Request::Apply(ApplyRequest { documents: vec![doc], force: false, dry_run: false })
    }

    #[test]
    fn a_request_over_the_frame_limit_is_refused_before_sending() {
        let (mut client, server) = fake_server(|mut s| {
            // Nothing arrives: the client hangs up without sending a byte of the request.
            let mut rest = Vec::new();
            s.read_to_end(&mut rest).unwrap();
            assert!(rest.is_empty(), "{} bytes arrived", rest.len());
        });
        let err = client.request(apply_of(70 << 20), &mut |_| {}).unwrap_err();
        assert_eq!(err.exit_code(), 1);
        let CliError::Failed(text) = &err else { panic!("{err:?}") };
        assert!(
            text.starts_with(
                "the request is 70.0 MiB, over the 64 MiB frame limit; apply the files in smaller batches"
            ),
            "{text}"
        );
        drop(client);
        server.join().unwrap();
    }

    #[test]
    fn a_server_refusing_a_request_mid_send_is_heard() {
        let (mut client, server) = fake_server(|mut s| {
            // Read the header only, answer, and hang up with the body unread.
            let mut header = [0u8; 4];
            s.read_exact(&mut header).unwrap();
            let report = ErrorReport::new(ErrorKind::Protocol, "a frame of 8 MiB exceeds the limit of my patience");
            write_message(&mut s, &ServerMessage::Error(report)).unwrap();
        });
        // Larger than the socket buffers, so the send is still going on when the server closes.
        let err = client.request(apply_of(8 << 20), &mut |_| {}).unwrap_err();
        assert_eq!(err.exit_code(), 1);
        assert!(matches!(&err, CliError::Server(r) if r.message.contains("my patience")), "{err:?}");
        server.join().unwrap();
    }

    #[test]
    fn a_connection_lost_mid_answer_is_a_failure_not_an_unreachable_server() {
        let (mut client, server) = fake_server(|mut s| {
            let _: Option<ClientMessage> = read_frame(&mut s).unwrap();
            write_message(&mut s, &ServerMessage::Progress("working".into())).unwrap();
            // Half a frame, then gone.
            std::io::Write::write_all(&mut s, &[0, 0, 1, 0, 9, 9]).unwrap();
        });
        let mut lines = Vec::new();
        let err = client.request(get(), &mut |l| lines.push(l.to_string())).unwrap_err();
        assert_eq!(lines, ["working"]);
        assert_eq!(err.exit_code(), 1);
        let CliError::Connection { reason, .. } = &err else { panic!("{err:?}") };
        assert!(reason.contains("closed inside a frame"), "{reason}");
        server.join().unwrap();

        let (mut client, server) = fake_server(|mut s| {
            let _: Option<ClientMessage> = read_frame(&mut s).unwrap();
        });
        let err = client.request(get(), &mut |_| {}).unwrap_err();
        assert!(matches!(&err, CliError::Connection { reason, .. } if reason.contains("without answering")), "{err:?}");
        assert_eq!(err.exit_code(), 1);
        server.join().unwrap();
    }

    #[test]
    fn a_reply_in_parts_is_put_back_together() {
        let items: Vec<String> = (0..3u8).map(|i| char::from(b'k' + i).to_string().repeat(7 << 20)).collect();
        let expected = items.clone();
        let (mut client, server) = fake_server(move |mut s| {
            let _: Option<ClientMessage> = read_frame(&mut s).unwrap();
            let reply = Reply::List {
                api_version: "v1".into(),
                kind: "Blob".into(),
                namespaced: false,
                items,
                columns: Vec::new(),
            };
            write_message(&mut s, &ServerMessage::Reply(reply)).unwrap();
        });
        let reply = client.request(get(), &mut |_| {}).unwrap_or_else(|e| panic!("{e:?}"));
        let Reply::List { items, .. } = reply else { panic!("{reply:?}") };
        assert!(items == expected);
        server.join().unwrap();
    }

    #[test]
    fn a_socket_nobody_listens_on_is_unreachable() {
        let dir = tempfile::tempdir().unwrap();
        let err = Client::connect(&dir.path().join("none.sock")).err().expect("no server");
        assert_eq!(err.exit_code(), 3);
    }
}
