//! Validated uid/gid maps: [`IdMap`] made of [`IdRange`]s.
//!
//! The text form is containerd's `container:host:size[,container:host:size...]` (as in the `uidmap=` and `gidmap=`
//! mount options); OCI's `LinuxIDMapping { containerID, hostID, size }` maps onto [`IdRange`] field by field.

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, ErrorKind, IdMapProblem, Result};

/// The kernel accepts at most this many ranges in one `uid_map` or `gid_map`.
///
/// ```
/// use layermount::{IdMap, MAX_EXTENTS};
/// let one_each: Vec<(u32, u32, u32)> = (0..MAX_EXTENTS as u32 + 1).map(|i| (i, 1000 + i, 1)).collect();
/// assert!(IdMap::from_triples(&one_each[..MAX_EXTENTS]).is_ok());
/// assert!(IdMap::from_triples(&one_each).is_err());
/// ```
pub const MAX_EXTENTS: usize = 340;

/// The kernel takes a map in one write of less than a page (`count >= PAGE_SIZE` is `EINVAL`); 4 KiB is the
/// smallest page Linux uses, so a map is checked against it wherever it was made.
const MAX_PROC_BYTES: usize = 4095;

/// Bytes of one range's line in `/proc/<pid>/uid_map` (`container host size\n`).
fn proc_line_len(r: &IdRange) -> usize {
    let digits = |n: u32| n.checked_ilog10().unwrap_or(0) as usize + 1;
    digits(r.container) + digits(r.host) + digits(r.size) + 3
}

/// One range of an id map: ids `container..container+size` inside the namespace are ids `host..host+size` outside.
///
/// ```
/// use layermount::IdRange;
/// let r = IdRange { container: 0, host: 100000, size: 65536 };
/// assert_eq!(r.to_string(), "0:100000:65536");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IdRange {
    /// First id inside the namespace (OCI `containerID`).
    pub container: u32,
    /// First id on the host (OCI `hostID`).
    pub host: u32,
    /// Number of ids (OCI `size`).
    pub size: u32,
}

impl fmt::Display for IdRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.container, self.host, self.size)
    }
}

/// A validated id map, as the kernel takes it: 1 to 340 ranges, none empty, none reaching id 4294967295 (the
/// kernel's `(u32)-1`, never a valid id), none overlapping on either side, and at most 4,095 bytes when written to
/// `/proc/<pid>/uid_map` (340 one-id ranges with large ids do not fit).
/// Ranges keep the order they were given in, so formatting gives back the text that was parsed.
///
/// ```
/// use layermount::IdMap;
/// let map: IdMap = "0:100000:65536,65536:1000:1".parse()?;
/// assert_eq!(map.to_host(0), Some(100000));
/// assert_eq!(map.to_host(65536), Some(1000));
/// assert_eq!(map.to_container(1000), Some(65536));
/// assert_eq!(map.to_string(), "0:100000:65536,65536:1000:1");
/// # Ok::<(), layermount::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdMap {
    ranges: Vec<IdRange>,
}

fn invalid(problem: IdMapProblem, text: impl fmt::Display) -> Error {
    Error::new(ErrorKind::InvalidIdMap(problem), "parse id map").with_detail(format!("\"{text}\""))
}

fn parse_u32(field: &str, range: &str) -> Result<u32> {
    if field.is_empty() || !field.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid(IdMapProblem::NotANumber, range));
    }
    field.parse().map_err(|_| invalid(IdMapProblem::NotANumber, range))
}

fn overlaps(a_start: u32, b_start: u32, a_size: u32, b_size: u32) -> bool {
    let (a0, b0) = (u64::from(a_start), u64::from(b_start));
    a0 < b0 + u64::from(b_size) && b0 < a0 + u64::from(a_size)
}

impl IdMap {
    /// Build a map from ranges, checking every rule.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidIdMap`] with the rule broken ([`IdMapProblem`]): no range, a range of size 0, a range that
    /// overflows or reaches id 4294967295, ranges overlapping on either side, too many ranges or bytes.
    ///
    /// # Kernel
    /// None: no system call (the rules are the kernel's, checked here so that a bad map fails before any child is made).
    ///
    /// ```
    /// use layermount::{IdMap, IdRange};
    /// let map = IdMap::new(vec![IdRange { container: 0, host: 1000, size: 10 }])?;
    /// assert_eq!(map.ranges().len(), 1);
    /// # Ok::<(), layermount::Error>(())
    /// ```
    pub fn new(ranges: Vec<IdRange>) -> Result<Self> {
        if ranges.is_empty() {
            return Err(invalid(IdMapProblem::Empty, ""));
        }
        if ranges.len() > MAX_EXTENTS {
            return Err(invalid(IdMapProblem::TooManyExtents, format!("{} ranges", ranges.len())));
        }
        for r in &ranges {
            if r.size == 0 {
                return Err(invalid(IdMapProblem::ZeroSize, r));
            }
            // The kernel refuses an extent whose first id is (u32)-1 or whose end wraps: the last id a range may
            // cover is 4294967294.
            let limit = u64::from(u32::MAX);
            if u64::from(r.container) + u64::from(r.size) > limit || u64::from(r.host) + u64::from(r.size) > limit {
                return Err(invalid(IdMapProblem::Overflow, r));
            }
        }
        let bytes: usize = ranges.iter().map(proc_line_len).sum();
        if bytes > MAX_PROC_BYTES {
            return Err(invalid(
                IdMapProblem::TooManyExtents,
                format!(
                    "{} ranges, {bytes} bytes when written; the kernel takes at most {MAX_PROC_BYTES}",
                    ranges.len()
                ),
            ));
        }
        // Quadratic, but bounded by 340 ranges and usually one or two.
        for (i, a) in ranges.iter().enumerate() {
            for b in &ranges[i + 1..] {
                if overlaps(a.container, b.container, a.size, b.size) {
                    return Err(invalid(IdMapProblem::OverlappingContainer, format!("{a},{b}")));
                }
                if overlaps(a.host, b.host, a.size, b.size) {
                    return Err(invalid(IdMapProblem::OverlappingHost, format!("{a},{b}")));
                }
            }
        }
        Ok(Self { ranges })
    }

    /// Parse containerd's `container:host:size[,container:host:size...]`.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidIdMap`]: text that is not `c:h:s` ranges ([`IdMapProblem::Malformed`],
    /// [`IdMapProblem::NotANumber`]), or a map that breaks a rule of [`IdMap::new`].
    ///
    /// # Kernel
    /// None: no system call.
    ///
    /// ```
    /// use layermount::{ErrorKind, IdMap, IdMapProblem};
    /// assert!(IdMap::parse("0:1000:1").is_ok());
    /// let e = IdMap::parse("0:-1:1").unwrap_err();
    /// assert_eq!(e.kind(), ErrorKind::InvalidIdMap(IdMapProblem::NotANumber));
    /// ```
    pub fn parse(text: &str) -> Result<Self> {
        if text.is_empty() {
            return Err(invalid(IdMapProblem::Empty, text));
        }
        let mut ranges = Vec::new();
        for part in text.split(',') {
            if ranges.len() == MAX_EXTENTS {
                return Err(invalid(IdMapProblem::TooManyExtents, text));
            }
            let fields: Vec<&str> = part.split(':').collect();
            let [c, h, s] = fields[..] else {
                return Err(invalid(IdMapProblem::Malformed, part));
            };
            ranges.push(IdRange {
                container: parse_u32(c, part)?,
                host: parse_u32(h, part)?,
                size: parse_u32(s, part)?,
            });
        }
        Self::new(ranges)
    }

    /// Build a map from OCI `LinuxIDMapping` triples `(containerID, hostID, size)`.
    ///
    /// # Errors
    /// As [`IdMap::new`].
    ///
    /// # Kernel
    /// None: no system call.
    ///
    /// ```
    /// use layermount::IdMap;
    /// let map = IdMap::from_triples(&[(0, 100000, 65536)])?;
    /// assert_eq!(map.to_string(), "0:100000:65536");
    /// # Ok::<(), layermount::Error>(())
    /// ```
    pub fn from_triples(triples: &[(u32, u32, u32)]) -> Result<Self> {
        Self::new(triples.iter().map(|&(container, host, size)| IdRange { container, host, size }).collect())
    }

    /// The ranges, in the order given.
    ///
    /// ```
    /// let map: layermount::IdMap = "0:100000:65536".parse()?;
    /// assert_eq!(map.ranges()[0].host, 100000);
    /// # Ok::<(), layermount::Error>(())
    /// ```
    pub fn ranges(&self) -> &[IdRange] {
        &self.ranges
    }

    /// The host id that container id `id` maps to, if any.
    ///
    /// ```
    /// let map: layermount::IdMap = "0:100000:65536".parse()?;
    /// assert_eq!(map.to_host(0), Some(100000));
    /// assert_eq!(map.to_host(65536), None);
    /// # Ok::<(), layermount::Error>(())
    /// ```
    pub fn to_host(&self, id: u32) -> Option<u32> {
        self.ranges
            .iter()
            .find(|r| id >= r.container && u64::from(id) < u64::from(r.container) + u64::from(r.size))
            .map(|r| r.host + (id - r.container))
    }

    /// The container id that host id `id` maps to, if any.
    ///
    /// ```
    /// let map: layermount::IdMap = "0:100000:65536".parse()?;
    /// assert_eq!(map.to_container(100001), Some(1));
    /// assert_eq!(map.to_container(0), None);
    /// # Ok::<(), layermount::Error>(())
    /// ```
    pub fn to_container(&self, id: u32) -> Option<u32> {
        self.ranges
            .iter()
            .find(|r| id >= r.host && u64::from(id) < u64::from(r.host) + u64::from(r.size))
            .map(|r| r.container + (id - r.host))
    }

    /// The text the kernel expects in `/proc/<pid>/uid_map`: one `container host size` line per range.
    ///
    /// ```
    /// let map: layermount::IdMap = "0:1000:1,1:100000:65536".parse()?;
    /// assert_eq!(map.to_proc_format(), "0 1000 1\n1 100000 65536\n");
    /// # Ok::<(), layermount::Error>(())
    /// ```
    pub fn to_proc_format(&self) -> String {
        self.ranges.iter().map(|r| format!("{} {} {}\n", r.container, r.host, r.size)).collect()
    }

    /// Parse what the kernel shows in `/proc/<pid>/uid_map`: one `container host size` line per range, the
    /// fields padded with spaces.
    pub(crate) fn from_proc_format(text: &str) -> Result<Self> {
        let mut ranges = Vec::new();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [c, h, s] = fields[..] else {
                return Err(invalid(IdMapProblem::Malformed, line));
            };
            ranges.push(IdRange {
                container: parse_u32(c, line)?,
                host: parse_u32(h, line)?,
                size: parse_u32(s, line)?,
            });
        }
        Self::new(ranges)
    }
}

impl fmt::Display for IdMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.ranges.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

impl FromStr for IdMap {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Self::parse(s)
    }
}
