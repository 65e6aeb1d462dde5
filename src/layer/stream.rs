//! The uncompressed tar stream of a layer: compression detected by magic bytes, the OCI diff_id (sha256 of the
//! uncompressed bytes) computed on the way, in a thread of its own so hashing and decompression overlap with
//! extraction.

use std::io::{self, BufRead, BufReader, Read};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

const CHUNK: usize = 256 * 1024;

/// The compression of a layer blob, as detected by its magic bytes.
///
/// ```
/// assert_ne!(layermount::Compression::Gzip, layermount::Compression::Zstd);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// A plain tar stream.
    None,
    /// gzip (`1f 8b`).
    Gzip,
    /// zstd (`28 b5 2f fd`).
    Zstd,
}

fn detect(head: &[u8]) -> Compression {
    if head.starts_with(&[0x1f, 0x8b]) {
        Compression::Gzip
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Compression::Zstd
    } else {
        Compression::None
    }
}

/// What the pump thread found: the hex sha256 and length of the uncompressed stream.
pub(crate) struct StreamSummary {
    pub sha256_hex: String,
    pub length: u64,
    pub compression: Compression,
}

/// Why the pump stopped early: the caller's reader failed (its own error, untouched), or the bytes it gave could not
/// be decompressed.
#[derive(Debug)]
pub(crate) enum StreamError {
    /// The reader returned this error.
    Source(io::Error),
    /// The decoder refused the stream (corrupt compression).
    Format(io::Error),
}

/// The caller's reader, counted (for progress) and fused: its first error is kept for the pump to report as the
/// reader's, and what the decoder above sees instead never has the kind `Interrupted`, which decoders retry.
struct Tap<'m, R> {
    inner: R,
    failed: std::rc::Rc<std::cell::RefCell<Option<io::Error>>>,
    meter: &'m Meter,
}

impl<R: Read> Read for Tap<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(e) = &*self.failed.borrow() {
            return Err(io::Error::other(format!("the layer's reader failed: {e}")));
        }
        match self.inner.read(buf) {
            Ok(n) => {
                self.meter.read(n as u64);
                Ok(n)
            }
            Err(e) => {
                let seen = io::Error::other(format!("the layer's reader failed: {e}"));
                *self.failed.borrow_mut() = Some(e);
                Err(seen)
            }
        }
    }
}

/// Read `source` to the end, decompressing and hashing, and send the uncompressed bytes in chunks. Stops early (and
/// quietly) if the receiving side hangs up. An error of `source` itself comes back as [`StreamError::Source`], never
/// retried (an `Interrupted` from the caller's reader is how it cancels).
pub(crate) fn pump(
    source: impl Read,
    tx: SyncSender<Chunk>,
    recycled: Receiver<Vec<u8>>,
    meter: &Meter,
) -> Result<StreamSummary, StreamError> {
    let failed = std::rc::Rc::new(std::cell::RefCell::new(None));
    let classify = |e: io::Error| match failed.borrow_mut().take() {
        Some(source) => StreamError::Source(source),
        None => StreamError::Format(e),
    };
    let tap = Tap { inner: source, failed: failed.clone(), meter };
    let mut buffered = BufReader::with_capacity(CHUNK, tap);
    let compression = match buffered.fill_buf() {
        Ok(head) => detect(head),
        Err(e) => {
            let _ = tx.send(Err(io::Error::new(e.kind(), e.to_string())));
            return Err(classify(e));
        }
    };
    let mut inner: Box<dyn Read> = match compression {
        Compression::None => Box::new(buffered),
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(buffered)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(buffered).map_err(classify)?),
    };
    let mut hasher = Sha256::new();
    let mut length = 0u64;
    loop {
        // Reuse a buffer the reader is done with: only a short last chunk's tail ever needs zeroing.
        let mut chunk = recycled.try_recv().unwrap_or_default();
        chunk.resize(CHUNK, 0);
        let mut filled = 0;
        while filled < CHUNK {
            match inner.read(&mut chunk[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted && failed.borrow().is_none() => continue,
                Err(e) => {
                    let kind = e.kind();
                    let _ = tx.send(Err(io::Error::new(kind, e.to_string())));
                    return Err(classify(e));
                }
            }
        }
        if filled == 0 {
            break;
        }
        chunk.truncate(filled);
        hasher.update(&chunk);
        length += filled as u64;
        if tx.send(Ok(chunk)).is_err() {
            break;
        }
    }
    let digest = hasher.finalize();
    let sha256_hex = digest.iter().map(|b| format!("{b:02x}")).collect();
    Ok(StreamSummary { sha256_hex, length, compression })
}

/// How far an apply has got, as the progress callback of [`ApplyOptions::progress`](crate::ApplyOptions::progress)
/// sees it.
///
/// ```
/// let seen = |p: layermount::Progress| println!("{} bytes read, {} entries", p.bytes_read, p.entries);
/// # let _ = seen;
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Progress {
    /// Bytes read from the caller's reader so far (the blob as given, compressed or not).
    pub bytes_read: u64,
    /// Archive entries applied so far.
    pub entries: u64,
}

/// The progress callback.
pub(crate) type ProgressFn = std::sync::Arc<dyn Fn(Progress) + Send + Sync>;

/// Counts bytes (pump thread) and entries (extracting thread) and calls the callback, from either thread but never
/// from both at once, at most once every [`Meter::EVERY`], and once more at the end.
pub(crate) struct Meter {
    callback: Option<ProgressFn>,
    bytes: AtomicU64,
    entries: AtomicU64,
    last: Mutex<Option<Instant>>,
}

impl Meter {
    pub const EVERY: Duration = Duration::from_millis(100);

    pub fn new(callback: Option<ProgressFn>) -> Self {
        Self { callback, bytes: AtomicU64::new(0), entries: AtomicU64::new(0), last: Mutex::new(None) }
    }

    fn read(&self, n: u64) {
        if self.callback.is_some() {
            self.bytes.fetch_add(n, Ordering::Relaxed);
            self.tick(false);
        }
    }

    pub fn entry(&self) {
        if self.callback.is_some() {
            self.entries.fetch_add(1, Ordering::Relaxed);
            self.tick(false);
        }
    }

    /// The last call, with the totals.
    pub fn finish(&self) {
        self.tick(true);
    }

    fn tick(&self, last: bool) {
        let Some(cb) = &self.callback else { return };
        // The thread that finds the lock taken is the other one reporting now: nothing to add.
        let mut at = if last {
            self.last.lock().unwrap_or_else(|p| p.into_inner())
        } else {
            match self.last.try_lock() {
                Ok(g) => g,
                Err(_) => return,
            }
        };
        let now = Instant::now();
        let due = match *at {
            None => true,
            Some(t) => now.duration_since(t) >= Self::EVERY,
        };
        if last || due {
            *at = Some(now);
            cb(Progress {
                bytes_read: self.bytes.load(Ordering::Relaxed),
                entries: self.entries.load(Ordering::Relaxed),
            });
        }
    }
}

/// One piece of the uncompressed stream, or the error that ended it.
pub(crate) type Chunk = io::Result<Vec<u8>>;

/// The receiving end, as a `Read`; spent buffers go back to the pump.
pub(crate) struct ChunkReader {
    rx: Receiver<Chunk>,
    recycle: SyncSender<Vec<u8>>,
    chunk: Vec<u8>,
    pos: usize,
}

impl ChunkReader {
    pub fn new(rx: Receiver<Chunk>, recycle: SyncSender<Vec<u8>>) -> Self {
        Self { rx, recycle, chunk: Vec::new(), pos: 0 }
    }

    /// Consume whatever is left (the tar end blocks and padding), so the pump hashes the whole stream.
    pub fn drain(&mut self) -> io::Result<()> {
        while let Ok(chunk) = self.rx.recv() {
            chunk?;
        }
        Ok(())
    }
}

impl Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.chunk.len() {
            match self.rx.recv() {
                Ok(chunk) => {
                    let spent = std::mem::replace(&mut self.chunk, chunk?);
                    if spent.capacity() > 0 {
                        let _ = self.recycle.try_send(spent);
                    }
                    self.pos = 0;
                }
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len() - self.pos);
        buf[..n].copy_from_slice(&self.chunk[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// The pump's two ends: chunks out, spent buffers back. Sized for a few chunks in flight.
pub(crate) fn channel() -> ((SyncSender<Chunk>, Receiver<Vec<u8>>), ChunkReader) {
    let (tx, rx) = sync_channel(4);
    let (recycle, recycled) = sync_channel(8);
    ((tx, recycled), ChunkReader::new(rx, recycle))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_by_magic() {
        assert_eq!(detect(&[0x1f, 0x8b, 8, 0]), Compression::Gzip);
        assert_eq!(detect(&[0x28, 0xb5, 0x2f, 0xfd, 0]), Compression::Zstd);
        assert_eq!(detect(b"etc/passwd\0"), Compression::None);
        assert_eq!(detect(b""), Compression::None);
    }

    #[test]
    fn hashes_the_uncompressed_bytes() {
        let data: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &data).unwrap();
        let compressed = gz.finish().unwrap();
        let zst = zstd::encode_all(&data[..], 1).unwrap();
        let want: String = Sha256::digest(&data).iter().map(|b| format!("{b:02x}")).collect();
        for blob in [data.clone(), compressed, zst] {
            let ((tx, recycled), mut reader) = channel();
            let h = std::thread::spawn(move || pump(&blob[..], tx, recycled, &Meter::new(None)).unwrap());
            let mut out = Vec::new();
            reader.read_to_end(&mut out).unwrap();
            let s = h.join().unwrap();
            assert_eq!(out, data);
            assert_eq!(s.sha256_hex, want);
            assert_eq!(s.length, data.len() as u64);
        }
    }
}
