//! Paths inside a container's root, prepared for the child: the kernel resolves them with
//! `openat2(RESOLVE_IN_ROOT)` (securejoin semantics: `..` and absolute symlinks stop at the
//! root), and missing directories are created one component at a time under an already
//! resolved parent, so nothing is ever created or mounted outside the root.

use std::ffi::CString;

/// A cleaned, root-relative path and what creating it takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct InRootPath {
    /// `dev/pts`; empty for the root itself (then `"."`).
    pub rel: CString,
    /// `dev`, `dev/pts`: each prefix, resolved inside the root before creating the next name.
    pub prefixes: Vec<CString>,
    /// `dev`, `pts`: the single component created under the resolved previous prefix.
    pub names: Vec<CString>,
}

/// The lexical components of an in-container path: `.` and empty parts dropped, `..` pops
/// (and stops at the root, as it does inside the container). `None` for a NUL byte.
pub(crate) fn clean_components(path: &str) -> Option<Vec<&str>> {
    if path.contains('\0') {
        return None;
    }
    let mut out: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            name => out.push(name),
        }
    }
    Some(out)
}

impl InRootPath {
    pub(crate) fn new(path: &str) -> Option<Self> {
        let parts = clean_components(path)?;
        let mut prefixes = Vec::with_capacity(parts.len());
        let mut names = Vec::with_capacity(parts.len());
        let mut acc = String::new();
        for part in &parts {
            if !acc.is_empty() {
                acc.push('/');
            }
            acc.push_str(part);
            prefixes.push(CString::new(acc.as_str()).ok()?);
            names.push(CString::new(*part).ok()?);
        }
        let rel = if acc.is_empty() {
            CString::from(c".")
        } else {
            CString::new(acc).ok()?
        };
        Some(Self {
            rel,
            prefixes,
            names,
        })
    }

    /// The path as the container sees it, for messages.
    pub(crate) fn display(&self) -> String {
        format!("/{}", self.rel.to_string_lossy().trim_start_matches('.'))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleaning_never_climbs_above_the_root() {
        assert_eq!(clean_components("/a/./b//c/").unwrap(), ["a", "b", "c"]);
        assert_eq!(
            clean_components("/../../etc/passwd").unwrap(),
            ["etc", "passwd"]
        );
        assert_eq!(clean_components("/a/../../b").unwrap(), ["b"]);
        assert!(clean_components("/").unwrap().is_empty());
        assert!(clean_components("/a\0b").is_none());
    }

    #[test]
    fn prefixes_and_names_walk_the_path() {
        let p = InRootPath::new("/var//run/../lib/x").unwrap();
        assert_eq!(p.rel.as_c_str(), c"var/lib/x");
        assert_eq!(
            p.prefixes,
            [c"var", c"var/lib", c"var/lib/x"].map(CString::from)
        );
        assert_eq!(p.names, [c"var", c"lib", c"x"].map(CString::from));
        assert_eq!(p.display(), "/var/lib/x");
        let root = InRootPath::new("/").unwrap();
        assert_eq!(root.rel.as_c_str(), c".");
        assert!(root.names.is_empty());
        assert_eq!(root.display(), "/");
    }
}
