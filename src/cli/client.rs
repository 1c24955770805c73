//! The client end of the socket: connect, say hello, send a request, follow its answer.

use std::io::{BufReader, BufWriter};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use super::CliError;
use crate::protocol::{
    read_message, write_frame, ClientMessage, ErrorKind, ErrorReport, Reply, Request, ServerMessage, PROTOCOL_VERSION,
};

pub struct Client {
    socket: PathBuf,
    reader: BufReader<UnixStream>,
    writer: BufWriter<UnixStream>,
}

impl Client {
    /// Connects and exchanges hellos. A server that cannot be reached is exit code 3.
    pub fn connect(socket: &Path) -> Result<Client, CliError> {
        let unreachable = |e: std::io::Error| CliError::Unreachable { socket: socket.to_path_buf(), reason: e.to_string() };
        let stream = UnixStream::connect(socket).map_err(unreachable)?;
        let reader = BufReader::new(stream.try_clone().map_err(unreachable)?);
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
            (Err(_), Err(send_error)) => return Err(send_error),
            (Err(e), Ok(())) => return Err(e),
        };
        match answer {
            ServerMessage::Hello { .. } => Ok(client),
            ServerMessage::Error(report) => Err(CliError::Server(report)),
            other => Err(CliError::Server(ErrorReport::new(
                ErrorKind::Protocol,
                format!("unexpected answer to hello: {other:?}"),
            ))),
        }
    }

    fn send(&mut self, msg: &ClientMessage) -> Result<(), CliError> {
        write_frame(&mut self.writer, msg).map_err(|e| CliError::Unreachable {
            socket: self.socket.clone(),
            reason: format!("cannot send to the server: {e}"),
        })
    }

    fn recv(&mut self) -> Result<ServerMessage, CliError> {
        match read_message(&mut self.reader) {
            Ok(Some(msg)) => Ok(msg),
            Ok(None) => Err(CliError::Unreachable {
                socket: self.socket.clone(),
                reason: "the server closed the connection".into(),
            }),
            Err(e) => Err(CliError::Unreachable { socket: self.socket.clone(), reason: e.to_string() }),
        }
    }

    /// Sends a request; progress lines go to `progress`; returns the final reply.
    pub fn request(&mut self, request: Request, progress: &mut dyn FnMut(&str)) -> Result<Reply, CliError> {
        self.send(&ClientMessage::Request(request))?;
        loop {
            match self.recv()? {
                ServerMessage::Progress(line) => progress(&line),
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
