//! Mount option text: the one encoder and decoder used by [`Overlay`](crate::Overlay),
//! [`MountSpec`](crate::MountSpec) and the CLI.
//!
//! The grammar is overlay's, which `mount(8)` and containerd also use:
//!
//! * a list of options is split on commas; a comma escaped as `\,` stays inside its option;
//! * inside a value that names directories (`lowerdir=`, `upperdir=`, `workdir=`), `:` separates layers, `::` starts
//!   the data-only layers, and `\`, `:` and `,` in a path are escaped with a backslash;
//! * `uidmap=`/`gidmap=` values are containerd's `c:h:s[,c:h:s]`: the commas between ranges belong to the value, so
//!   a list item that is only a range (`1000:6666:64536`) continues the map before it.
//!
//! Options are bytes: a path need not be UTF-8. Every function here is the inverse of another, which the property
//! tests check with commas, colons, backslashes, newlines and non-UTF-8 bytes in paths.

use std::borrow::Cow;
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use crate::error::{Error, ErrorKind, Result};

fn spec_error(detail: impl Into<String>) -> Error {
    Error::new(ErrorKind::InvalidMountSpec, "parse mount options").with_detail(detail)
}

/// Append `path` to `out` with `\`, `:` and `,` escaped by a backslash.
pub(crate) fn escape_path_into(path: &OsStr, out: &mut Vec<u8>) {
    escape_into(path, b"\\:,", out);
}

/// Append `path` to `out` with each byte of `special` escaped by a backslash.
fn escape_into(path: &OsStr, special: &[u8], out: &mut Vec<u8>) {
    for &b in path.as_bytes() {
        if special.contains(&b) {
            out.push(b'\\');
        }
        out.push(b);
    }
}

/// `path` as an `upperdir` or `workdir` string for `fsconfig`: overlay removes one level of backslash escapes from
/// those (not from `lowerdir+` or `datadir+`), so each backslash is doubled.
pub(crate) fn upper_string(path: &Path) -> Cow<'_, Path> {
    if !path.as_os_str().as_bytes().contains(&b'\\') {
        return Cow::Borrowed(path);
    }
    let mut out = Vec::with_capacity(path.as_os_str().len() + 8);
    escape_into(path.as_os_str(), b"\\", &mut out);
    Cow::Owned(PathBuf::from(OsString::from_vec(out)))
}

/// Remove one level of backslash escapes. A backslash at the very end escapes nothing: an error, never dropped.
pub(crate) fn unescape(value: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(value.len());
    let mut it = value.iter();
    while let Some(&b) = it.next() {
        if b == b'\\' {
            match it.next() {
                Some(&n) => out.push(n),
                None => {
                    return Err(spec_error(format!("\"{}\" ends in a lone backslash", String::from_utf8_lossy(value))));
                }
            }
        } else {
            out.push(b);
        }
    }
    Ok(out)
}

/// Split `text` where `sep` is not escaped; escapes are kept as written.
fn split_unescaped(text: &[u8], sep: u8) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let (mut start, mut escaped) = (0, false);
    for (i, &b) in text.iter().enumerate() {
        if escaped {
            escaped = false;
        } else if b == b'\\' {
            escaped = true;
        } else if b == sep {
            out.push(&text[start..i]);
            start = i + 1;
        }
    }
    out.push(&text[start..]);
    out
}

/// True for `c:h:s` with three decimal numbers: a range of an id map, never an option of its own.
fn is_id_range(item: &[u8]) -> bool {
    let parts: Vec<&[u8]> = item.split(|&b| b == b':').collect();
    parts.len() == 3 && parts.iter().all(|p| !p.is_empty() && p.iter().all(u8::is_ascii_digit))
}

fn is_map_option(item: &[u8]) -> bool {
    item.starts_with(b"uidmap=") || item.starts_with(b"gidmap=")
}

/// Split a `-o`-style list into options, in order. Empty items are dropped; escapes stay as written; a bare id range
/// after `uidmap=`/`gidmap=` is joined back to its map.
pub(crate) fn split_list(text: &OsStr) -> Vec<OsString> {
    let mut out: Vec<Vec<u8>> = Vec::new();
    let mut in_map = false;
    for item in split_unescaped(text.as_bytes(), b',') {
        if item.is_empty() {
            in_map = false;
            continue;
        }
        match out.last_mut() {
            Some(last) if in_map && is_id_range(item) => {
                last.push(b',');
                last.extend_from_slice(item);
            }
            _ => {
                in_map = is_map_option(item);
                out.push(item.to_vec());
            }
        }
    }
    out.into_iter().map(OsString::from_vec).collect()
}

/// Join options into one `-o`-style list (the inverse of [`split_list`] for options it produced).
pub(crate) fn join_list(options: &[OsString]) -> OsString {
    let mut out = Vec::new();
    for (i, o) in options.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(o.as_bytes());
    }
    OsString::from_vec(out)
}

/// `key` and the value after the first `=` (none for a flag). Keys are ASCII in every filesystem's grammar.
pub(crate) fn key_value(option: &OsStr) -> Result<(&str, Option<&[u8]>)> {
    let bytes = option.as_bytes();
    let (k, v) = match bytes.iter().position(|&b| b == b'=') {
        Some(i) => (&bytes[..i], Some(&bytes[i + 1..])),
        None => (bytes, None),
    };
    let k = std::str::from_utf8(k)
        .map_err(|_| spec_error(format!("option key \"{}\" is not UTF-8", String::from_utf8_lossy(k))))?;
    Ok((k, v))
}

/// The value of a `lowerdir=`: the lower layers (top-most first) and the data-only layers after `::`.
pub(crate) fn split_layers(value: &[u8]) -> Result<(Vec<PathBuf>, Vec<PathBuf>)> {
    let bad = |why: &str| spec_error(format!("{why} in lowerdir=\"{}\"", String::from_utf8_lossy(value)));
    let (mut lowers, mut data) = (Vec::new(), Vec::new());
    // `l1:l2::d1::d2`: the empty item between two colons puts the next layer among the data-only ones.
    let mut after_double = false;
    for (i, part) in split_unescaped(value, b':').into_iter().enumerate() {
        if part.is_empty() {
            if i == 0 || after_double {
                return Err(bad("an empty layer"));
            }
            after_double = true;
            continue;
        }
        let path = PathBuf::from(OsString::from_vec(unescape(part)?));
        if after_double {
            data.push(path);
        } else if !data.is_empty() {
            return Err(bad("a regular layer after the data-only layers"));
        } else {
            lowers.push(path);
        }
        after_double = false;
    }
    if after_double {
        return Err(bad("an empty layer"));
    }
    Ok((lowers, data))
}

/// `lowers` joined with `:`, then `::` and the data-only layers, each path escaped.
pub(crate) fn join_layers<'a>(
    lowers: impl IntoIterator<Item = &'a OsStr>,
    data: impl IntoIterator<Item = &'a OsStr>,
) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, p) in lowers.into_iter().enumerate() {
        if i > 0 {
            out.push(b':');
        }
        escape_path_into(p, &mut out);
    }
    for p in data {
        out.extend_from_slice(b"::");
        escape_path_into(p, &mut out);
    }
    out
}

/// `key=` followed by `path` escaped.
pub(crate) fn path_option(key: &str, path: &OsStr) -> OsString {
    let mut out = format!("{key}=").into_bytes();
    escape_path_into(path, &mut out);
    OsString::from_vec(out)
}

/// The value of a directory option (`upperdir=`, `workdir=`): one path, unescaped.
pub(crate) fn single_path(value: &[u8]) -> Result<PathBuf> {
    Ok(PathBuf::from(OsString::from_vec(unescape(value)?)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(s: &str) -> &OsStr {
        OsStr::new(s)
    }

    #[test]
    fn escaped_separators_are_not_split() {
        // Defect: `split_once("::")` ignored escapes, so `/x/a\::/y` became lower `/x/a\` and data layer `/y`.
        let (l, d) = split_layers(br"/x/a\::/y").unwrap();
        assert_eq!(l, [PathBuf::from("/x/a:"), PathBuf::from("/y")]);
        assert!(d.is_empty());
        let (l, d) = split_layers(b"/a:/b::/d1::/d2").unwrap();
        assert_eq!(l, [PathBuf::from("/a"), PathBuf::from("/b")]);
        assert_eq!(d, [PathBuf::from("/d1"), PathBuf::from("/d2")]);
        assert!(split_layers(b"/a::/d1:/b").is_err(), "a regular layer cannot follow data-only layers");
    }

    #[test]
    fn a_trailing_backslash_is_an_error() {
        assert!(unescape(br"/x/a\").is_err());
        assert!(split_layers(br"/x/a\").is_err());
        assert!(split_layers(b"/a:::/b").is_err());
        assert!(split_layers(b":/a").is_err());
        assert!(split_layers(b"/a::").is_err());
    }

    #[test]
    fn multi_range_maps_stay_one_option() {
        let opts = split_list(os("ro,uidmap=0:666:1000,1000:6666:64536,gidmap=0:666:1,nodev"));
        assert_eq!(opts, ["ro", "uidmap=0:666:1000,1000:6666:64536", "gidmap=0:666:1", "nodev"]);
        assert_eq!(join_list(&opts), "ro,uidmap=0:666:1000,1000:6666:64536,gidmap=0:666:1,nodev");
        // A range-looking item after anything else is its own option.
        assert_eq!(split_list(os("x=1,1:2:3")), ["x=1", "1:2:3"]);
    }
}
