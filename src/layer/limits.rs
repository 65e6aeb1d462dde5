//! Caps on the metadata records of a tar stream, enforced before the archive reader buffers them.
//!
//! The tar reader keeps a GNU long name or long link, and a PAX extended header, whole in memory before the member
//! they describe; a 1.5 MB gzip can declare a 1.5 GB record and drive it to an allocation abort. [`Guard`] sits
//! between the uncompressed stream and the reader, follows the stream's block structure (headers, GNU sparse maps,
//! data rounded to 512 bytes, a PAX `size` overriding the next header's) and refuses from its header, before any of
//! its data is read, a record larger than [`MAX_RECORD`] (Go's archive/tar allows 1 MiB too), or the records
//! describing one member (long name, long link, PAX, sparse map blocks) adding up to more than [`MAX_MEMBER`].

use std::fmt;
use std::io::{self, Read};

/// Largest metadata record (GNU `L`/`K`, PAX `x`/`g`).
pub(crate) const MAX_RECORD: u64 = 1 << 20;
/// Largest total of the metadata records that describe one member.
pub(crate) const MAX_MEMBER: u64 = 2 << 20;

const BLOCK: usize = 512;

/// The error [`Guard`] returns (inside an `io::Error` of kind `InvalidData`) for a record over the caps.
#[derive(Debug, Clone)]
pub(crate) struct TooLarge {
    what: &'static str,
    size: u64,
    limit: u64,
}

impl fmt::Display for TooLarge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} of {} bytes (limit {})", self.what, self.size, self.limit)
    }
}

impl std::error::Error for TooLarge {}

impl TooLarge {
    /// The cap this error reports, if `e` is one.
    pub(crate) fn of(e: &io::Error) -> Option<&TooLarge> {
        e.get_ref().and_then(|inner| inner.downcast_ref::<TooLarge>())
    }
}

enum State {
    /// At a header boundary.
    Header,
    /// Passing `remaining` bytes of a member's data (padding included).
    Data { remaining: u64 },
    /// Passing GNU sparse extension blocks, then `data` bytes.
    SparseMap { data: u64 },
    /// After the end-of-archive block, or after something the reader will refuse anyway: pass everything.
    Done,
}

/// A `Read` that passes a tar stream through unchanged and fails it at the first metadata record over the caps.
pub(crate) struct Guard<R> {
    inner: R,
    state: State,
    /// A block being collected before it is inspected and handed on.
    block: [u8; BLOCK],
    filled: usize,
    /// Inspected bytes not yet handed on.
    out: Vec<u8>,
    out_pos: usize,
    /// The data of a PAX extended header being passed (to find its `size` record).
    pax: Option<Vec<u8>>,
    pax_size: Option<u64>,
    member: u64,
}

impl<R: Read> Guard<R> {
    pub(crate) fn new(inner: R) -> Self {
        Self {
            inner,
            state: State::Header,
            block: [0; BLOCK],
            filled: 0,
            out: Vec::with_capacity(BLOCK),
            out_pos: 0,
            pax: None,
            pax_size: None,
            member: 0,
        }
    }

    fn too_large(what: &'static str, size: u64, limit: u64) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, TooLarge { what, size, limit })
    }

    /// Decide what follows the header in `self.block`.
    fn header(&mut self) -> io::Result<State> {
        let b = &self.block;
        if b.iter().all(|&x| x == 0) {
            return Ok(State::Done);
        }
        let h = tar::Header::from_byte_slice(b);
        let Ok(mut size) = h.entry_size() else { return Ok(State::Done) };
        let kind = b[156];
        let what = match kind {
            b'L' => Some("GNU long name record"),
            b'K' => Some("GNU long link record"),
            b'x' => Some("PAX extended header"),
            b'g' => Some("PAX global header"),
            _ => None,
        };
        if let Some(what) = what {
            if size > MAX_RECORD {
                return Err(Self::too_large(what, size, MAX_RECORD));
            }
            self.member += size;
            if self.member > MAX_MEMBER {
                return Err(Self::too_large("metadata describing one member", self.member, MAX_MEMBER));
            }
            if kind != b'g' {
                self.pax = (kind == b'x').then(|| Vec::with_capacity(size as usize));
                return Ok(State::Data { remaining: size.div_ceil(512) * 512 });
            }
        }
        // A member (a global header is one too: it takes the records before it): its own size, or the PAX one.
        if let Some(s) = self.pax_size.take() {
            size = s;
        }
        self.member = 0;
        let padded = size.div_ceil(512).saturating_mul(512);
        let gnu = &b[257..265] == b"ustar  \0";
        if kind == b'S' && gnu && b[482] != 0 {
            return Ok(State::SparseMap { data: padded });
        }
        Ok(State::Data { remaining: padded })
    }

    /// Collect a whole block from the inner reader; false at a clean end of stream.
    fn collect(&mut self) -> io::Result<bool> {
        while self.filled < BLOCK {
            match self.inner.read(&mut self.block[self.filled..]) {
                Ok(0) => break,
                Ok(n) => self.filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(self.filled == BLOCK)
    }

    fn hand_on_block(&mut self) {
        self.out.clear();
        self.out.extend_from_slice(&self.block[..self.filled]);
        self.out_pos = 0;
        self.filled = 0;
    }
}

impl<R: Read> Read for Guard<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.out_pos < self.out.len() {
                let n = buf.len().min(self.out.len() - self.out_pos);
                buf[..n].copy_from_slice(&self.out[self.out_pos..self.out_pos + n]);
                self.out_pos += n;
                return Ok(n);
            }
            match self.state {
                State::Done => return self.inner.read(buf),
                State::Data { remaining: 0 } => {
                    if let Some(pax) = self.pax.take() {
                        self.pax_size = pax_size(&pax).or(self.pax_size);
                    }
                    self.state = State::Header;
                }
                State::Data { remaining } => {
                    let want = buf.len().min(usize::try_from(remaining).unwrap_or(usize::MAX));
                    let n = self.inner.read(&mut buf[..want])?;
                    if n == 0 {
                        return Ok(0);
                    }
                    if let Some(pax) = &mut self.pax {
                        pax.extend_from_slice(&buf[..n]);
                    }
                    self.state = State::Data { remaining: remaining - n as u64 };
                    return Ok(n);
                }
                State::Header => {
                    let whole = self.collect()?;
                    if !whole {
                        // A short or empty tail: the reader will judge it.
                        self.state = State::Done;
                    } else {
                        self.state = self.header()?;
                    }
                    self.hand_on_block();
                }
                State::SparseMap { data } => {
                    let whole = self.collect()?;
                    self.member += BLOCK as u64;
                    if self.member > MAX_MEMBER {
                        return Err(Self::too_large("GNU sparse map", self.member, MAX_MEMBER));
                    }
                    let more = whole && self.block[504] != 0;
                    self.state = if !whole {
                        State::Done
                    } else if more {
                        State::SparseMap { data }
                    } else {
                        self.member = 0;
                        State::Data { remaining: data }
                    };
                    self.hand_on_block();
                }
            }
        }
    }
}

/// The `size` record of a PAX extended header, if it has a valid one.
fn pax_size(data: &[u8]) -> Option<u64> {
    let mut found = None;
    for ext in tar::PaxExtensions::new(data).flatten() {
        if ext.key_bytes() == b"size" {
            found = std::str::from_utf8(ext.value_bytes()).ok().and_then(|v| v.parse().ok());
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(kind: u8, size: u64) -> Vec<u8> {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::new(kind));
        h.set_size(size);
        h.set_cksum();
        h.as_bytes().to_vec()
    }

    /// A stream passes through byte for byte, whatever the read sizes; a PAX `size` moves the next boundary.
    #[test]
    fn passes_streams_through_unchanged() {
        let mut stream = Vec::new();
        let pax = b"12 size=512\n".to_vec();
        stream.extend(header(b'x', pax.len() as u64));
        stream.extend(&pax);
        stream.resize(stream.len().div_ceil(512) * 512, 0);
        // The header says 0, the PAX record 512: the oversized header inside the data is data, not inspected.
        stream.extend(header(b'0', 0));
        stream.extend(header(b'L', 1 << 30));
        stream.extend(header(b'L', 10));
        stream.extend(b"long-name\0");
        stream.resize(stream.len().div_ceil(512) * 512, 0);
        stream.extend(header(b'0', 3));
        stream.extend(b"abc");
        stream.resize(stream.len().div_ceil(512) * 512 + 1024, 0);
        for step in [1, 7, 512, 4096] {
            let mut g = Guard::new(&stream[..]);
            let mut out = Vec::new();
            let mut buf = vec![0u8; step];
            loop {
                let n = g.read(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                out.extend_from_slice(&buf[..n]);
            }
            assert_eq!(out, stream, "read {step} at a time");
        }
    }

    #[test]
    fn refuses_oversized_records_from_their_header() {
        for kind in [b'L', b'K', b'x', b'g'] {
            let stream = header(kind, MAX_RECORD + 1);
            let err = Guard::new(&stream[..]).read(&mut [0u8; 512]).unwrap_err();
            assert!(TooLarge::of(&err).is_some(), "{err}");
        }
        let mut ok = header(b'L', MAX_RECORD);
        ok.resize(ok.len() + MAX_RECORD as usize, b'n');
        ok.extend(header(b'K', MAX_RECORD));
        ok.resize(ok.len() + MAX_RECORD as usize, b'n');
        ok.extend(header(b'x', 1));
        let mut g = Guard::new(&ok[..]);
        let err = io::copy(&mut g, &mut io::sink()).unwrap_err();
        assert!(TooLarge::of(&err).unwrap().to_string().contains("one member"), "{err}");
    }
}
