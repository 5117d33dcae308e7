//! `args[0]` to the paths the child tries with execve, in order, inside the new root — the
//! way `execvp` searches `PATH`, but computed before cloning so the child does not allocate.

use std::ffi::CString;

/// What containerd puts in a spec whose image has no `PATH`.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The container's `PATH`: the last `PATH=` in `env` (later entries win, as in a shell), or
/// the default.
pub(crate) fn container_path(env: &[String]) -> &str {
    env.iter()
        .rev()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or(DEFAULT_PATH)
}

/// The candidates for `program`: itself when it contains a `/`, otherwise `dir/program` for
/// every `PATH` element (an empty element is the working directory). `None` for an empty
/// program or a NUL byte.
pub(crate) fn candidates(program: &str, path: &str) -> Option<Vec<CString>> {
    if program.is_empty() || program.contains('\0') {
        return None;
    }
    if program.contains('/') {
        return Some(vec![CString::new(program).ok()?]);
    }
    path.split(':')
        .map(|dir| {
            let dir = if dir.is_empty() { "." } else { dir };
            CString::new(format!("{}/{program}", dir.trim_end_matches('/'))).ok()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_comes_from_the_container_env() {
        let env = [
            "A=1".to_string(),
            "PATH=/x:/y".to_string(),
            "PATH=/z".to_string(),
        ];
        assert_eq!(container_path(&env), "/z");
        assert_eq!(container_path(&["HOME=/".to_string()]), DEFAULT_PATH);
    }

    #[test]
    fn bare_names_search_every_path_element() {
        let c = candidates("sh", "/usr/bin:/bin/::rel").unwrap();
        assert_eq!(
            c,
            [c"/usr/bin/sh", c"/bin/sh", c"./sh", c"rel/sh"].map(CString::from)
        );
    }

    #[test]
    fn names_with_a_slash_are_used_as_they_are() {
        assert_eq!(
            candidates("./run.sh", "/bin").unwrap(),
            [CString::from(c"./run.sh")]
        );
        assert_eq!(
            candidates("/bin/sh", "/x").unwrap(),
            [CString::from(c"/bin/sh")]
        );
        assert!(candidates("", "/bin").is_none());
        assert!(candidates("a\0b", "/bin").is_none());
    }
}
