//! containerd's filter syntax for `List` (`Walk`): `kind==committed,labels."containerd.io/gc.root"`.
//!
//! A filter is selectors joined by `,` (all must match); several filters match if any does. A selector is a field
//! path (`name`, `parent`, `kind`, `labels.<key>`; a quoted component may hold dots), optionally followed by `==`,
//! `!=` or `~=` (a regular expression) and a value (bare, or double-quoted with backslash escapes). A field path
//! alone asks that the field be present.

use std::collections::BTreeMap;

use crate::error::{Error, Result};

#[derive(Debug)]
enum Op {
    Present,
    Equal(String),
    NotEqual(String),
    Matches(regex_lite::Regex),
}

#[derive(Debug)]
struct Selector {
    path: Vec<String>,
    op: Op,
}

/// Parsed filters: a snapshot matches if any filter matches (none given: everything matches).
#[derive(Debug, Default)]
pub struct Filters(Vec<Vec<Selector>>);

/// The fields a filter can see of one snapshot.
#[derive(Debug)]
pub struct Fields<'a> {
    /// Its key.
    pub name: &'a str,
    /// Its parent's key (empty: none).
    pub parent: &'a str,
    /// `view`, `active` or `committed`.
    pub kind: &'a str,
    /// Its labels.
    pub labels: &'a BTreeMap<String, String>,
}

impl Filters {
    /// Parse containerd's filter strings.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming the filter and what is wrong.
    pub fn parse(filters: &[String]) -> Result<Self> {
        let mut out = Vec::new();
        for f in filters.iter().filter(|f| !f.trim().is_empty()) {
            out.push(
                Parser { s: f.as_bytes(), i: 0 }
                    .filter()
                    .map_err(|e| Error::InvalidArgument(format!("filter {f:?}: {e}")))?,
            );
        }
        Ok(Self(out))
    }

    /// Whether the snapshot with these fields matches.
    pub fn matches(&self, fields: &Fields<'_>) -> bool {
        self.0.is_empty() || self.0.iter().any(|all| all.iter().all(|s| s.matches(fields)))
    }
}

impl Selector {
    fn matches(&self, f: &Fields<'_>) -> bool {
        let value: Option<&str> = match self.path.first().map(String::as_str) {
            Some("name") if self.path.len() == 1 => Some(f.name),
            Some("parent") if self.path.len() == 1 => Some(f.parent).filter(|p| !p.is_empty()),
            Some("kind") if self.path.len() == 1 => Some(f.kind),
            Some("labels") if self.path.len() > 1 => f.labels.get(&self.path[1..].join(".")).map(String::as_str),
            _ => None,
        };
        match &self.op {
            Op::Present => value.is_some(),
            Op::Equal(v) => value == Some(v.as_str()),
            Op::NotEqual(v) => value.unwrap_or("") != v,
            Op::Matches(re) => re.is_match(value.unwrap_or("")),
        }
    }
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn filter(mut self) -> std::result::Result<Vec<Selector>, String> {
        let mut out = vec![self.selector()?];
        loop {
            self.skip_space();
            match self.s.get(self.i) {
                None => return Ok(out),
                Some(b',') => {
                    self.i += 1;
                    out.push(self.selector()?);
                }
                Some(&c) => return Err(format!("unexpected {:?} at {}", c as char, self.i)),
            }
        }
    }

    fn skip_space(&mut self) {
        while self.s.get(self.i).is_some_and(u8::is_ascii_whitespace) {
            self.i += 1;
        }
    }

    fn selector(&mut self) -> std::result::Result<Selector, String> {
        let mut path = vec![self.field()?];
        while self.s.get(self.i) == Some(&b'.') {
            self.i += 1;
            path.push(self.field()?);
        }
        self.skip_space();
        let op = match self.s.get(self.i..self.i + 2) {
            Some(b"==") | Some(b"!=") | Some(b"~=") => {
                let op = self.s[self.i];
                self.i += 2;
                self.skip_space();
                let value = self.value()?;
                match op {
                    b'=' => Op::Equal(value),
                    b'!' => Op::NotEqual(value),
                    _ => Op::Matches(regex_lite::Regex::new(&value).map_err(|e| format!("bad regex: {e}"))?),
                }
            }
            _ => Op::Present,
        };
        Ok(Selector { path, op })
    }

    fn field(&mut self) -> std::result::Result<String, String> {
        self.skip_space();
        if self.s.get(self.i) == Some(&b'"') {
            return self.quoted();
        }
        let start = self.i;
        while self.s.get(self.i).is_some_and(|c| c.is_ascii_alphanumeric() || *c == b'_') {
            self.i += 1;
        }
        if start == self.i {
            return Err(format!("expected a field name at {start}"));
        }
        Ok(String::from_utf8_lossy(&self.s[start..self.i]).into_owned())
    }

    fn value(&mut self) -> std::result::Result<String, String> {
        if self.s.get(self.i) == Some(&b'"') {
            return self.quoted();
        }
        let start = self.i;
        while self.s.get(self.i).is_some_and(|c| *c != b',' && !c.is_ascii_whitespace()) {
            self.i += 1;
        }
        if start == self.i {
            return Err(format!("expected a value at {start}"));
        }
        Ok(String::from_utf8_lossy(&self.s[start..self.i]).into_owned())
    }

    fn quoted(&mut self) -> std::result::Result<String, String> {
        let start = self.i;
        self.i += 1;
        let mut out = Vec::new();
        loop {
            match self.s.get(self.i) {
                None => return Err(format!("unterminated quote at {start}")),
                Some(b'"') => {
                    self.i += 1;
                    return Ok(String::from_utf8_lossy(&out).into_owned());
                }
                Some(b'\\') => {
                    let c = *self.s.get(self.i + 1).ok_or_else(|| format!("unterminated quote at {start}"))?;
                    out.push(match c {
                        b'n' => b'\n',
                        b't' => b'\t',
                        c => c,
                    });
                    self.i += 2;
                }
                Some(&c) => {
                    out.push(c);
                    self.i += 1;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields<'a>(labels: &'a BTreeMap<String, String>) -> Fields<'a> {
        Fields { name: "default/3/sha256:abc", parent: "default/2/sha256:def", kind: "committed", labels }
    }

    fn check(filters: &[&str]) -> bool {
        let labels: BTreeMap<String, String> =
            [("containerd.io/gc.root".to_string(), "yes".to_string()), ("a".into(), "1".into())].into();
        let f: Vec<String> = filters.iter().map(|s| s.to_string()).collect();
        Filters::parse(&f).unwrap().matches(&fields(&labels))
    }

    #[test]
    fn selectors() {
        assert!(check(&[]));
        assert!(check(&["kind==committed"]));
        assert!(!check(&["kind==active"]));
        assert!(check(&["kind!=active"]));
        assert!(check(&[r#"labels."containerd.io/gc.root""#]));
        assert!(check(&[r#"labels."containerd.io/gc.root"==yes,kind==committed"#]));
        assert!(!check(&[r#"labels."containerd.io/gc.root"==no"#]));
        assert!(!check(&["labels.b"]));
        assert!(check(&["labels.b", "labels.a==1"]), "filters are alternatives");
        assert!(!check(&["labels.b,labels.a==1"]), "selectors of one filter all must match");
        assert!(check(&[r#"name~="^default/[0-9]+/sha256:""#]));
        assert!(check(&["parent==default/2/sha256:def"]));
        assert!(check(&[r#"name=="default/3/sha256:abc""#]));
    }

    #[test]
    fn bad_filters() {
        for bad in ["==x", "labels.\"open", "kind==", "kind==a b", "name~=\"(\""] {
            let e = Filters::parse(&[bad.to_string()]).unwrap_err();
            assert!(matches!(e, Error::InvalidArgument(_)), "{bad}: {e}");
        }
    }
}
