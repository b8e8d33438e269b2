//! The wire protocol between lodge-runc, lodge-fs and lodge-mgr.
//!
//! Frames are a big-endian u32 length followed by that many bytes of JSON; one request, one
//! response. Messages are Rust enums tagged by `type`, so every side matches them exhaustively.

pub mod fs;
pub mod mgr;

use std::io::{Read, Write};

use thiserror::Error;

/// Protocol version; a peer with another major version is refused at `Hello`.
pub const VERSION: u32 = 1;

/// The largest frame either side accepts.
pub const MAX_FRAME: usize = 1 << 20;

#[derive(Debug, Error)]
pub enum FrameError {
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("frame of {0} bytes is larger than the {MAX_FRAME}-byte limit")]
    TooLarge(usize),
    #[error("malformed message: {0}")]
    Malformed(#[from] serde_json::Error),
}

/// Writes one frame holding `msg`.
pub fn write_frame<T: serde::Serialize>(w: &mut impl Write, msg: &T) -> Result<(), FrameError> {
    let data = serde_json::to_vec(msg)?;
    if data.len() > MAX_FRAME {
        return Err(FrameError::TooLarge(data.len()));
    }
    w.write_all(&(data.len() as u32).to_be_bytes())?;
    w.write_all(&data)?;
    w.flush()?;
    Ok(())
}

/// Reads one frame's bytes (the length is checked before anything is allocated).
pub fn read_frame_bytes(r: &mut impl Read) -> Result<Vec<u8>, FrameError> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len)?;
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge(len));
    }
    let mut data = vec![0u8; len];
    r.read_exact(&mut data)?;
    Ok(data)
}

/// Reads one frame and decodes it.
pub fn read_frame<T: serde::de::DeserializeOwned>(r: &mut impl Read) -> Result<T, FrameError> {
    Ok(serde_json::from_slice(&read_frame_bytes(r)?)?)
}

#[derive(Debug, Error)]
pub enum CallError {
    #[error("{0}")]
    Connect(std::io::Error),
    #[error(transparent)]
    Frame(#[from] FrameError),
}

/// One request over a fresh connection to `socket`, and its answer. A wedged daemon must not
/// hang a container's creation forever: reads time out after 10 s.
pub fn call<Req: serde::Serialize, Resp: serde::de::DeserializeOwned>(
    socket: &std::path::Path,
    req: &Req,
) -> Result<Resp, CallError> {
    let mut s = std::os::unix::net::UnixStream::connect(socket).map_err(CallError::Connect)?;
    let _ = s.set_read_timeout(Some(std::time::Duration::from_secs(10)));
    write_frame(&mut s, req)?;
    Ok(read_frame(&mut s)?)
}

/// A daemon's answer that may be a refusal.
pub trait Answer {
    fn refusal(&self) -> Option<&str>;
}

impl Answer for mgr::Response {
    fn refusal(&self) -> Option<&str> {
        match self {
            mgr::Response::Error { message } => Some(message),
            _ => None,
        }
    }
}

impl Answer for fs::Response {
    fn refusal(&self) -> Option<&str> {
        match self {
            fs::Response::Error { message } => Some(message),
            _ => None,
        }
    }
}

#[derive(Debug, Error)]
pub enum AskError {
    #[error("{0}")]
    Unreachable(std::io::Error),
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error("{0}")]
    Refused(String),
}

/// `call`, with the daemon's refusal turned into an error.
pub fn ask<Req: serde::Serialize, Resp: serde::de::DeserializeOwned + Answer>(
    socket: &std::path::Path,
    req: &Req,
) -> Result<Resp, AskError> {
    let resp: Resp = call(socket, req).map_err(|e| match e {
        CallError::Connect(io) => AskError::Unreachable(io),
        CallError::Frame(f) => AskError::Frame(f),
    })?;
    match resp.refusal() {
        Some(message) => Err(AskError::Refused(message.to_string())),
        None => Ok(resp),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mgr::Request;

    #[test]
    fn frames_round_trip_and_limits_hold() {
        let mut buf = vec![];
        write_frame(&mut buf, &Request::Status).unwrap();
        let back: Request = read_frame(&mut buf.as_slice()).unwrap();
        assert!(matches!(back, Request::Status));
        let huge = ((MAX_FRAME + 1) as u32).to_be_bytes();
        assert!(matches!(
            read_frame::<Request>(&mut huge.as_slice()),
            Err(FrameError::TooLarge(_))
        ));
        let mut garbage = 5u32.to_be_bytes().to_vec();
        garbage.extend_from_slice(b"nope!");
        assert!(matches!(
            read_frame::<Request>(&mut garbage.as_slice()),
            Err(FrameError::Malformed(_))
        ));
    }
}
