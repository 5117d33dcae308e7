//! Kubernetes' `$(VAR)` expansion (third_party/forked/golang/expansion): `$(NAME)` becomes the
//! value, `$$` becomes `$`, and references that do not resolve are kept as written.

/// Expands `$(NAME)` references in `input` with `lookup`; a `None` keeps `$(NAME)` verbatim.
/// `$$` is an escaped `$`; a `$` before anything else, and an unterminated `$(`, stay as they are.
pub fn expand(input: &str, mut lookup: impl FnMut(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if after.is_empty() {
            // A trailing `$` is copied as is.
            out.push('$');
            rest = after;
        } else if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body) = after.strip_prefix('(') {
            match body.find(')') {
                Some(close) => {
                    let name = &body[..close];
                    match lookup(name) {
                        Some(value) => out.push_str(&value),
                        None => {
                            out.push_str("$(");
                            out.push_str(name);
                            out.push(')');
                        }
                    }
                    rest = &body[close + 1..];
                }
                None => {
                    // Incomplete reference: `$(` is copied and scanning goes on after it.
                    out.push_str("$(");
                    rest = body;
                }
            }
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn run(input: &str) -> String {
        let vars: HashMap<&str, &str> = [
            ("VAR_A", "A"),
            ("VAR_B", "B"),
            ("EMPTY", ""),
            ("NESTED", "$(VAR_A)"),
        ]
        .into();
        expand(input, |k| vars.get(k).map(|v| v.to_string()))
    }

    #[test]
    fn kubernetes_cases() {
        // Cases from Kubernetes' expansion_test.go.
        assert_eq!(run("$(VAR_A)"), "A");
        assert_eq!(run("___$(VAR_B)___"), "___B___");
        assert_eq!(run("$(VAR_A)-$(VAR_B)"), "A-B");
        assert_eq!(run("$(EMPTY)"), "");
        assert_eq!(run("$(NESTED)"), "$(VAR_A)");
        assert_eq!(run("$(UNKNOWN)"), "$(UNKNOWN)");
        assert_eq!(run("$$(VAR_A)"), "$(VAR_A)");
        assert_eq!(run("$$$(VAR_A)"), "$A");
        assert_eq!(run("$$$$(VAR_A)"), "$$(VAR_A)");
        assert_eq!(run("$(VAR_A"), "$(VAR_A");
        assert_eq!(run("$(VAR_A$(VAR_B)"), "$(VAR_A$(VAR_B)");
        assert_eq!(run("foo$"), "foo$");
        assert_eq!(run("$VAR_A"), "$VAR_A");
        assert_eq!(run("$()"), "$()");
        assert_eq!(run("$(($(VAR_A)"), "$(($(VAR_A)");
        assert_eq!(run("héllo $(VAR_A) wörld $ü"), "héllo A wörld $ü");
        assert_eq!(run("$("), "$(");
        assert_eq!(run(""), "");
    }
}
