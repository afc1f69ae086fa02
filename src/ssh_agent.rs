//! A minimal ssh-agent client (draft-miller-ssh-agent): list identities, sign with one. Used by
//! the CLI when `MOBULA_KEY_ID` (or `MANTA_KEY_ID`) names a key fingerprint and `SSH_AUTH_SOCK`
//! points at an agent, so private keys never leave the agent (encrypted keys included).

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;

const REQUEST_IDENTITIES: u8 = 11;
const IDENTITIES_ANSWER: u8 = 12;
const SIGN_REQUEST: u8 = 13;
const SIGN_RESPONSE: u8 = 14;
/// Ask for an `rsa-sha2-256` signature from an RSA key.
pub const RSA_SHA2_256: u32 = 2;
const MAX_MESSAGE: usize = 256 << 10;

#[derive(Debug, Clone)]
pub struct Agent {
    socket: PathBuf,
}

/// A cursor over SSH wire data.
struct Wire<'a>(&'a [u8]);

impl<'a> Wire<'a> {
    fn u32(&mut self) -> io::Result<u32> {
        let (h, t) = self.0.split_at_checked(4).ok_or_else(short)?;
        self.0 = t;
        Ok(u32::from_be_bytes(h.try_into().expect("4 bytes")))
    }

    fn string(&mut self) -> io::Result<&'a [u8]> {
        let n = self.u32()? as usize;
        let (h, t) = self.0.split_at_checked(n).ok_or_else(short)?;
        self.0 = t;
        Ok(h)
    }
}

fn short() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, "truncated ssh-agent message")
}

fn put_string(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&(s.len() as u32).to_be_bytes());
    out.extend_from_slice(s);
}

impl Agent {
    /// The agent at `SSH_AUTH_SOCK`, if set.
    pub fn from_env() -> Option<Agent> {
        std::env::var_os("SSH_AUTH_SOCK").map(|s| Agent { socket: s.into() })
    }

    fn call(&self, body: &[u8]) -> io::Result<Vec<u8>> {
        let mut s = UnixStream::connect(&self.socket)?;
        let mut msg = (body.len() as u32).to_be_bytes().to_vec();
        msg.extend_from_slice(body);
        s.write_all(&msg)?;
        let mut len = [0u8; 4];
        s.read_exact(&mut len)?;
        let len = u32::from_be_bytes(len) as usize;
        if len == 0 || len > MAX_MESSAGE {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "bad agent reply",
            ));
        }
        let mut reply = vec![0u8; len];
        s.read_exact(&mut reply)?;
        Ok(reply)
    }

    /// Public key blobs (SSH wire format) and comments of every key the agent holds.
    pub fn identities(&self) -> io::Result<Vec<(Vec<u8>, String)>> {
        let reply = self.call(&[REQUEST_IDENTITIES])?;
        if reply[0] != IDENTITIES_ANSWER {
            return Err(io::Error::other("the agent refused to list its keys"));
        }
        let mut w = Wire(&reply[1..]);
        let n = w.u32()?;
        (0..n)
            .map(|_| {
                let blob = w.string()?.to_vec();
                let comment = String::from_utf8_lossy(w.string()?).into_owned();
                Ok((blob, comment))
            })
            .collect()
    }

    /// Sign `data` with the key `blob`; returns (signature algorithm, raw signature bytes).
    pub fn sign(&self, blob: &[u8], data: &[u8], flags: u32) -> io::Result<(String, Vec<u8>)> {
        let mut body = vec![SIGN_REQUEST];
        put_string(&mut body, blob);
        put_string(&mut body, data);
        body.extend_from_slice(&flags.to_be_bytes());
        let reply = self.call(&body)?;
        if reply[0] != SIGN_RESPONSE {
            return Err(io::Error::other("the agent refused to sign"));
        }
        let mut w = Wire(&reply[1..]);
        let mut sig = Wire(w.string()?);
        let alg = String::from_utf8_lossy(sig.string()?).into_owned();
        Ok((alg, sig.string()?.to_vec()))
    }
}

/// The algorithm name at the start of a public key blob.
pub fn blob_algorithm(blob: &[u8]) -> io::Result<String> {
    Ok(String::from_utf8_lossy(Wire(blob).string()?).into_owned())
}

/// An SSH ECDSA signature (`mpint r, mpint s`) as fixed-width `r || s` of `width` bytes each.
pub fn ecdsa_raw(sig: &[u8], width: usize) -> io::Result<Vec<u8>> {
    let mut w = Wire(sig);
    let mut out = Vec::with_capacity(2 * width);
    for _ in 0..2 {
        let mut n = w.string()?;
        while n.len() > width && n[0] == 0 {
            n = &n[1..];
        }
        if n.len() > width {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "ecdsa integer too long",
            ));
        }
        out.extend(std::iter::repeat_n(0u8, width - n.len()));
        out.extend_from_slice(n);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn ecdsa_integers_are_padded_and_stripped() {
        let mut sig = Vec::new();
        super::put_string(&mut sig, &[0, 0x80, 1]);
        super::put_string(&mut sig, &[5]);
        assert_eq!(
            super::ecdsa_raw(&sig, 3).unwrap(),
            vec![0, 0x80, 1, 0, 0, 5]
        );
        assert!(super::ecdsa_raw(&sig[..5], 3).is_err());
    }
}
