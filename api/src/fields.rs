//! Field selectors (`?fieldSelector=metadata.name=x,status.phase!=Running`) as apimachinery's
//! `fields.ParseSelector` reads them: `=`, `==` and `!=` terms joined by commas, values escaped
//! with `\,` `\=` `\\`. Which fields a resource supports is the API server's business; this
//! module only parses, prints and matches.

use std::fmt;

use crate::labels::Operator;

/// Why a field selector was rejected; the message is what the Kubernetes API server returns.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FieldSelectorError {
    /// A term has no `=`, `==` or `!=`.
    #[error("invalid selector: '{selector}'; can't understand '{term}'")]
    Term { selector: String, term: String },
    /// A backslash in a value is followed by something other than `\`, `,` or `=`.
    #[error("invalid field selector: invalid escape sequence: {sequence}")]
    EscapeSequence { selector: String, sequence: String },
    /// A value holds a bare `,` or `=`; Go prints the character as its code point.
    #[error("invalid field selector: unescaped character in value: {}", u32::from(*.character))]
    UnescapedCharacter { selector: String, character: char },
}

/// One `field=value` (operator [`Operator::Equals`]) or `field!=value`
/// ([`Operator::NotEquals`]) term; `==` parses as `=`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct FieldRequirement {
    pub field: String,
    pub operator: Operator,
    /// The unescaped value.
    pub value: String,
}

impl FieldRequirement {
    /// A missing field compares as "".
    pub fn matches(&self, actual: Option<&str>) -> bool {
        let equal = actual.unwrap_or("") == self.value;
        match self.operator {
            Operator::NotEquals => !equal,
            _ => equal,
        }
    }
}

impl fmt::Display for FieldRequirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let op = if self.operator == Operator::NotEquals {
            "!="
        } else {
            "="
        };
        write!(f, "{}{op}{}", self.field, escape_value(&self.value))
    }
}

/// The AND of field requirements; the empty selector matches everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldSelector {
    requirements: Vec<FieldRequirement>,
}

impl FieldSelector {
    pub fn everything() -> Self {
        FieldSelector::default()
    }

    /// `field=value`, as `fields.OneTermEqualSelector` builds it.
    pub fn equals(field: impl Into<String>, value: impl Into<String>) -> Self {
        FieldSelector {
            requirements: vec![FieldRequirement {
                field: field.into(),
                operator: Operator::Equals,
                value: value.into(),
            }],
        }
    }

    /// Parses the string form. Terms are kept in byte order of their written form, and a term
    /// with both field and value empty (`=`) is dropped, as in Kubernetes.
    pub fn parse(selector: &str) -> Result<Self, FieldSelectorError> {
        let mut terms = split_terms(selector);
        terms.sort_unstable();
        let mut requirements = Vec::new();
        for term in terms.into_iter().filter(|t| !t.is_empty()) {
            let Some((field, operator, raw)) = split_term(term) else {
                return Err(FieldSelectorError::Term {
                    selector: selector.to_string(),
                    term: term.to_string(),
                });
            };
            let value = unescape_value(raw, selector)?;
            if field.is_empty() && value.is_empty() {
                continue;
            }
            requirements.push(FieldRequirement {
                field: field.to_string(),
                operator,
                value,
            });
        }
        Ok(FieldSelector { requirements })
    }

    /// The terms, for the API server to check each field against what the resource supports.
    pub fn requirements(&self) -> &[FieldRequirement] {
        &self.requirements
    }

    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// Whether an object whose fields `get` looks up satisfies every term; a field `get` does
    /// not know compares as "".
    pub fn matches<S: AsRef<str>>(&self, get: impl Fn(&str) -> Option<S>) -> bool {
        self.requirements.iter().all(|r| {
            let actual = get(&r.field);
            r.matches(actual.as_ref().map(AsRef::as_ref))
        })
    }

    /// The value `field` must equal, when a `=` term names it.
    pub fn requires_exact_match(&self, field: &str) -> Option<&str> {
        self.requirements
            .iter()
            .find(|r| r.field == field && r.operator == Operator::Equals)
            .map(|r| r.value.as_str())
    }
}

impl fmt::Display for FieldSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for FieldSelector {
    type Err = FieldSelectorError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        FieldSelector::parse(s)
    }
}

/// Escapes `\`, `,` and `=` so any string can be a field selector value.
pub fn escape_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        if matches!(c, '\\' | ',' | '=') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Splits at commas not preceded by a backslash; escapes stay in the terms.
fn split_terms(selector: &str) -> Vec<&str> {
    if selector.is_empty() {
        return Vec::new();
    }
    let mut terms = Vec::new();
    let mut start = 0;
    let mut in_slash = false;
    for (i, c) in selector.char_indices() {
        if in_slash {
            in_slash = false;
        } else if c == '\\' {
            in_slash = true;
        } else if c == ',' {
            terms.push(&selector[start..i]);
            start = i + 1;
        }
    }
    terms.push(&selector[start..]);
    terms
}

/// Splits a term at the first operator; the field cannot be escaped.
fn split_term(term: &str) -> Option<(&str, Operator, &str)> {
    for (i, _) in term.char_indices() {
        let rest = &term[i..];
        for (op, operator) in [
            ("!=", Operator::NotEquals),
            ("==", Operator::Equals),
            ("=", Operator::Equals),
        ] {
            if let Some(value) = rest.strip_prefix(op) {
                return Some((&term[..i], operator, value));
            }
        }
    }
    None
}

fn unescape_value(raw: &str, selector: &str) -> Result<String, FieldSelectorError> {
    let mut out = String::with_capacity(raw.len());
    let mut in_slash = false;
    for c in raw.chars() {
        if in_slash {
            if !matches!(c, '\\' | ',' | '=') {
                return Err(FieldSelectorError::EscapeSequence {
                    selector: selector.to_string(),
                    sequence: format!("\\{c}"),
                });
            }
            out.push(c);
            in_slash = false;
        } else if c == '\\' {
            in_slash = true;
        } else if c == ',' || c == '=' {
            return Err(FieldSelectorError::UnescapedCharacter {
                selector: selector.to_string(),
                character: c,
            });
        } else {
            out.push(c);
        }
    }
    if in_slash {
        return Err(FieldSelectorError::EscapeSequence {
            selector: selector.to_string(),
            sequence: "\\".to_string(),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;

    fn parse(s: &str) -> FieldSelector {
        FieldSelector::parse(s).unwrap_or_else(|e| panic!("{s:?} should parse: {e}"))
    }

    fn err(s: &str) -> String {
        FieldSelector::parse(s)
            .expect_err(&format!("{s:?} should not parse"))
            .to_string()
    }

    #[test]
    fn canonical_strings() {
        let cases = [
            ("", ""),
            (",", ""),
            ("=", ""),
            ("!=", ""),
            ("a=b", "a=b"),
            ("a==b", "a=b"),
            ("a!=b", "a!=b"),
            ("x=a,a=b", "a=b,x=a"),
            ("a=", "a="),
            ("=b", "=b"),
            ("a=b,,c=d", "a=b,c=d"),
            ("a= b", "a= b"),
            (r"a=x\,y\=z\\w", r"a=x\,y\=z\\w"),
            (r"a\,b=c", r"a\,b=c"),
            ("a!b=c", "a!b=c"),
            ("spec.nodeName=", "spec.nodeName="),
            ("a=é", "a=é"),
        ];
        for (input, want) in cases {
            assert_eq!(parse(input).to_string(), want, "input {input:?}");
        }
    }

    #[test]
    fn parsed_structure() {
        let sel = parse(r"status.phase!=Running,metadata.name==a\,b");
        assert_eq!(
            sel.requirements(),
            [
                FieldRequirement {
                    field: "metadata.name".into(),
                    operator: Operator::Equals,
                    value: "a,b".into(),
                },
                FieldRequirement {
                    field: "status.phase".into(),
                    operator: Operator::NotEquals,
                    value: "Running".into(),
                },
            ]
        );
        assert_eq!(sel.requires_exact_match("metadata.name"), Some("a,b"));
        assert_eq!(sel.requires_exact_match("status.phase"), None);
        assert!(!sel.is_empty());
        assert!(parse("").is_empty());
    }

    #[test]
    fn errors() {
        assert_eq!(err("a"), "invalid selector: 'a'; can't understand 'a'");
        assert_eq!(
            err("x=y,ab"),
            "invalid selector: 'x=y,ab'; can't understand 'ab'"
        );
        assert_eq!(
            err("a=b=c"),
            "invalid field selector: unescaped character in value: 61"
        );
        assert_eq!(
            err("a=b!=c"),
            "invalid field selector: unescaped character in value: 61"
        );
        assert_eq!(
            err(r"a=b\c"),
            r"invalid field selector: invalid escape sequence: \c"
        );
        assert_eq!(
            err(r"a=b\"),
            r"invalid field selector: invalid escape sequence: \"
        );
        assert_eq!(parse(r"a=b\,").requirements()[0].value, "b,");
    }

    #[test]
    fn matching() {
        let fields: BTreeMap<&str, &str> =
            [("metadata.name", "web"), ("spec.nodeName", "n1")].into();
        let get = |f: &str| fields.get(f).copied();
        assert!(parse("").matches(get));
        assert!(parse("metadata.name=web").matches(get));
        assert!(parse("metadata.name=web,spec.nodeName!=n2").matches(get));
        assert!(!parse("metadata.name=web,spec.nodeName!=n1").matches(get));
        assert!(
            parse("status.phase=").matches(get),
            "missing compares as empty"
        );
        assert!(!parse("status.phase!=").matches(get));
        assert!(parse("status.phase!=Running").matches(|_: &str| None::<String>));
        assert!(FieldSelector::equals("metadata.name", "web").matches(get));
    }

    #[test]
    fn escaping() {
        assert_eq!(escape_value(r"a,b=c\d"), r"a\,b\=c\\d");
        let sel = FieldSelector::equals("f", r"a,b=c\d");
        assert_eq!(parse(&sel.to_string()), sel);
    }

    fn sorted(sel: &FieldSelector) -> Vec<FieldRequirement> {
        let mut r = sel.requirements().to_vec();
        r.sort_by(|a, b| (&a.field, &a.value).cmp(&(&b.field, &b.value)));
        r
    }

    proptest! {
        #[test]
        fn display_round_trips(
            terms in proptest::collection::vec(
                ("[a-z.]{0,6}", 0..3usize, "[a-z,=\\\\ !]{0,6}"), 0..5)
        ) {
            let text: Vec<String> = terms
                .iter()
                .map(|(f, op, v)| format!("{f}{}{}", ["=", "==", "!="][*op], escape_value(v)))
                .collect();
            let sel = parse(&text.join(","));
            let again = parse(&sel.to_string());
            prop_assert_eq!(sorted(&again), sorted(&sel));
        }

        #[test]
        fn never_panics(s in "\\PC*|[a=!,\\\\]{0,16}") {
            let _ = FieldSelector::parse(&s);
        }
    }
}
