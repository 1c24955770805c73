//! The messages between the server and its reconcile worker, and their framing on the pipes.
//!
//! A frame is a little-endian `u32` length and that many bytes of bincode. Objects travel as
//! JSON text inside the records (bincode cannot carry `serde_json::Value`, which only
//! self-describing formats decode). The exchange is strictly request/response, driven by the
//! server: it sends [`ToWorker::Compile`] or [`ToWorker::Reconcile`], then answers every
//! [`FromWorker::Calls`] with one [`ToWorker::Reply`] until the worker sends the final message.
//! *Invariant:* data and framing only; knows no process, store or runtime.

use std::io::{Read, Write};

use serde::{Deserialize, Serialize};

/// Bumped whenever a message changes shape or the order messages may come in (2: reconciles
/// sent ahead may arrive while the worker waits for a reply); the worker greets with it.
pub(crate) const VERSION: u32 = 2;

/// The largest frame either side accepts (an object list from a `client_list` of a big
/// store is the largest thing that travels).
pub(crate) const MAX_FRAME: usize = 1 << 30;

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<{ 2 * MAX_FRAME }>()
}

/// An object's identity on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Key {
    pub group: String,
    pub kind: String,
    pub namespace: String,
    pub name: String,
}

/// A kind a call is limited to (a reconciler's `owns`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Kind {
    pub group: String,
    pub version: String,
    pub kind: String,
}

/// One call of the reconcile `Client`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) enum Call {
    Get {
        api_version: String,
        kind: String,
        namespace: String,
        name: String,
    },
    /// `selector` is the selector's source, JSON.
    List {
        api_version: String,
        kind: String,
        selector: String,
    },
    /// `read`: the caller wants the stored result back.
    Apply {
        object: String,
        manager: String,
        read: bool,
    },
    Delete {
        api_version: String,
        kind: String,
        namespace: String,
        name: String,
    },
    ChildrenOf {
        owner_uid: String,
        kinds: Vec<Kind>,
    },
    ChildKeysOf {
        owner_uid: String,
        kinds: Vec<Kind>,
    },
    DeleteKey(Key),
}

/// The answer to one call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) enum Answer {
    /// Done, nothing to return.
    Unit,
    /// One object (JSON), or none.
    Object(Option<String>),
    /// Objects (JSON each).
    Objects(Vec<String>),
    Keys(Vec<Key>),
    /// The call failed (or a deferred call before it did, and it was not made).
    Failed {
        message: String,
        fatal: bool,
    },
}

/// How a reconcile ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) enum End {
    Done,
    /// `after_ms`: `None` for rate-limited backoff.
    Requeue {
        after_ms: Option<u64>,
        message: String,
    },
    Error(String),
}

/// The server's messages.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) enum ToWorker {
    /// Compile a set of reconcilers (their `Reconciler` objects, JSON) with these Starlark
    /// libraries (name, code); replaces the set compiled before.
    Compile { generation: u64, libraries: Vec<(String, String)>, reconcilers: Vec<String> },
    /// Reconcile `object` with reconciler `index` of the compiled set `generation`. Times are
    /// what is left of the reconcile's own and of the run's deadline, in milliseconds.
    Reconcile {
        generation: u64,
        index: u32,
        object: String,
        now: String,
        timeout_ms: Option<u64>,
        run_timeout_ms: Option<u64>,
        /// The keys of the object's children of the reconciler's `owns` kinds, read ahead
        /// (most reconciles ask for them, and this saves a round trip).
        children: Option<Vec<Key>>,
    },
    /// The answer to the last `Calls`.
    Reply(Answer),
}

/// The worker's messages.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) enum FromWorker {
    /// The first message, once the worker is ready.
    Hello { version: u32 },
    /// About to compile reconciler `index` (so a crash there is put on the right one).
    Compiling { index: u32 },
    /// The compile result of each reconciler, in order: `None` when it compiled.
    Compiled { errors: Vec<Option<String>> },
    /// Deferred calls (their results are not needed, only whether they failed), made in order,
    /// then `call` if any; the server answers with one [`ToWorker::Reply`].
    Calls { deferred: Vec<Call>, call: Option<Call> },
    /// A log record of the script or the runtime.
    Log { level: u8, target: String, message: String },
    /// The reconcile ended; `deferred` calls are still to be made, and the first failure among
    /// them replaces `end`.
    End { deferred: Vec<Call>, end: End },
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum WireError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("a frame of {0} bytes is over the limit of {MAX_FRAME} bytes")]
    TooLarge(usize),
    #[error("cannot encode a message: {0}")]
    Encode(#[from] bincode::error::EncodeError),
    #[error("cannot decode a message: {0}")]
    Decode(#[from] bincode::error::DecodeError),
}

/// Encodes `msg` as one frame (length included).
pub(crate) fn encode<T: Serialize>(msg: &T) -> Result<Vec<u8>, WireError> {
    let mut out = vec![0u8; 4];
    bincode::serde::encode_into_std_write(msg, &mut out, config())?;
    let len = out.len() - 4;
    if len > MAX_FRAME {
        return Err(WireError::TooLarge(len));
    }
    out[..4].copy_from_slice(&(len as u32).to_le_bytes());
    Ok(out)
}

/// Writes `msg` as one frame and flushes.
pub(crate) fn write<W: Write, T: Serialize>(w: &mut W, msg: &T) -> Result<(), WireError> {
    w.write_all(&encode(msg)?)?;
    w.flush()?;
    Ok(())
}

/// Reads one frame; `None` at a clean end of input (no byte of a next frame).
pub(crate) fn read<R: Read, T: serde::de::DeserializeOwned>(r: &mut R) -> Result<Option<T>, WireError> {
    let mut len = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        match r.read(&mut len[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into()),
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(WireError::TooLarge(len));
    }
    let mut buf = vec![0u8; len];
    r.read_exact(&mut buf)?;
    Ok(Some(decode(&buf)?))
}

/// Decodes a frame's payload (without its length).
pub(crate) fn decode<T: serde::de::DeserializeOwned>(payload: &[u8]) -> Result<T, WireError> {
    Ok(bincode::serde::decode_from_slice(payload, config())?.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        let msgs = vec![
            FromWorker::Hello { version: VERSION },
            FromWorker::Calls {
                deferred: vec![Call::DeleteKey(Key {
                    group: "g".into(),
                    kind: "K".into(),
                    namespace: "".into(),
                    name: "n".into(),
                })],
                call: Some(Call::Apply { object: r#"{"a":1}"#.into(), manager: "m".into(), read: true }),
            },
            FromWorker::End { deferred: vec![], end: End::Requeue { after_ms: Some(5), message: "later".into() } },
        ];
        let mut buf = Vec::new();
        for m in &msgs {
            write(&mut buf, m).unwrap();
        }
        let mut r = &buf[..];
        for m in &msgs {
            assert_eq!(&read::<_, FromWorker>(&mut r).unwrap().unwrap(), m);
        }
        assert!(read::<_, FromWorker>(&mut r).unwrap().is_none());
    }

    #[test]
    fn a_cut_frame_is_an_error_not_an_end() {
        let buf = encode(&ToWorker::Reply(Answer::Unit)).unwrap();
        for cut in 1..buf.len() {
            assert!(read::<_, ToWorker>(&mut &buf[..cut]).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn an_absurd_length_is_refused_before_allocating() {
        let mut buf = u32::MAX.to_le_bytes().to_vec();
        buf.extend_from_slice(&[0; 8]);
        assert!(matches!(read::<_, ToWorker>(&mut &buf[..]), Err(WireError::TooLarge(_))));
    }
}
