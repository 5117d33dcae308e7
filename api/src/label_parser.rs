//! The string form of label selectors (`a=b,c in (x,y),!d`), lexed and parsed the way
//! apimachinery's `labels.Parse` does, with its error messages.

use crate::labels::{aggregate, go_quote, Operator, Requirement, SelectorError};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Token {
    EndOfString,
    ClosedPar,
    Comma,
    DoesNotExist,
    DoubleEquals,
    Equals,
    GreaterThan,
    Identifier,
    In,
    LessThan,
    NotEquals,
    NotIn,
    OpenPar,
}

fn keyword(s: &str) -> Option<Token> {
    Some(match s {
        ")" => Token::ClosedPar,
        "," => Token::Comma,
        "!" => Token::DoesNotExist,
        "==" => Token::DoubleEquals,
        "=" => Token::Equals,
        ">" => Token::GreaterThan,
        "in" => Token::In,
        "<" => Token::LessThan,
        "!=" => Token::NotEquals,
        "notin" => Token::NotIn,
        "(" => Token::OpenPar,
        _ => return None,
    })
}

fn is_whitespace(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\r' | b'\n')
}

fn is_special(c: u8) -> bool {
    matches!(c, b'=' | b'!' | b'(' | b')' | b',' | b'>' | b'<')
}

/// Splits the selector into tokens, ending with `EndOfString`. Like Go's lexer, a NUL byte where
/// a token would start ends the input, and one right after a token is skipped.
fn lex(s: &str) -> Vec<(Token, &str)> {
    let b = s.as_bytes();
    let at = |i: usize| b.get(i).copied().unwrap_or(0);
    let mut items = Vec::new();
    let mut pos = 0;
    loop {
        while is_whitespace(at(pos)) {
            pos += 1;
        }
        let start = pos;
        let c = at(pos);
        if c == 0 {
            items.push((Token::EndOfString, ""));
            return items;
        }
        if is_special(c) {
            // Longest run of special characters that is still a token ("!=", "==").
            let mut end = pos + 1;
            while is_special(at(end)) && keyword(&s[start..end + 1]).is_some() {
                end += 1;
            }
            let lit = &s[start..end];
            let tok = keyword(lit).unwrap_or(Token::Identifier);
            items.push((tok, lit));
            pos = end;
        } else {
            while at(pos) != 0 && !is_special(at(pos)) && !is_whitespace(at(pos)) {
                pos += 1;
            }
            let lit = &s[start..pos];
            items.push((keyword(lit).unwrap_or(Token::Identifier), lit));
        }
        if pos < b.len() && b[pos] == 0 {
            pos += 1;
        }
    }
}

/// Whether `in`/`notin` are keywords (after a key) or plain values.
#[derive(Clone, Copy, PartialEq)]
enum Context {
    KeyAndOperator,
    Values,
}

struct Parser<'a> {
    items: Vec<(Token, &'a str)>,
    pos: usize,
}

type Values = std::collections::BTreeSet<String>;

impl<'a> Parser<'a> {
    fn lookahead(&self, ctx: Context) -> (Token, &'a str) {
        let (tok, lit) = self
            .items
            .get(self.pos)
            .copied()
            .unwrap_or((Token::EndOfString, ""));
        match tok {
            Token::In | Token::NotIn if ctx == Context::Values => (Token::Identifier, lit),
            _ => (tok, lit),
        }
    }

    fn consume(&mut self, ctx: Context) -> (Token, &'a str) {
        let item = self.lookahead(ctx);
        self.pos += 1;
        item
    }

    fn parse(&mut self, selector: &str) -> Result<Vec<Requirement>, SelectorError> {
        let syntax = |detail: String| SelectorError::Syntax {
            selector: selector.to_string(),
            detail,
        };
        let mut requirements = Vec::new();
        loop {
            let (tok, lit) = self.lookahead(Context::Values);
            match tok {
                Token::Identifier | Token::DoesNotExist => {
                    let r =
                        self.parse_requirement()
                            .map_err(|detail| SelectorError::Requirement {
                                selector: selector.to_string(),
                                detail,
                            })?;
                    requirements.push(r);
                    let (t, l) = self.consume(Context::Values);
                    match t {
                        Token::EndOfString => return Ok(requirements),
                        Token::Comma => {
                            let (t2, l2) = self.lookahead(Context::Values);
                            if t2 != Token::Identifier && t2 != Token::DoesNotExist {
                                return Err(syntax(format!(
                                    "found '{l2}', expected: identifier after ','"
                                )));
                            }
                        }
                        _ => {
                            return Err(syntax(format!(
                                "found '{l}', expected: ',' or 'end of string'"
                            )))
                        }
                    }
                }
                Token::EndOfString => return Ok(requirements),
                _ => {
                    return Err(syntax(format!(
                        "found '{lit}', expected: !, identifier, or 'end of string'"
                    )))
                }
            }
        }
    }

    fn parse_requirement(&mut self) -> Result<Requirement, String> {
        let (key, inferred) = self.parse_key_and_infer_operator()?;
        let (operator, values) = match inferred {
            Some(op) => (op, Values::new()),
            None => {
                let op = self.parse_operator()?;
                let values = match op {
                    Operator::In | Operator::NotIn => self.parse_values()?,
                    _ => self.parse_exact_value()?,
                };
                (op, values)
            }
        };
        Requirement::new(key, operator, values.into_iter().collect()).map_err(|e| aggregate(&e))
    }

    fn parse_key_and_infer_operator(&mut self) -> Result<(String, Option<Operator>), String> {
        let mut operator = None;
        let (mut tok, mut lit) = self.consume(Context::Values);
        if tok == Token::DoesNotExist {
            operator = Some(Operator::DoesNotExist);
            (tok, lit) = self.consume(Context::Values);
        }
        if tok != Token::Identifier {
            return Err(format!("found '{lit}', expected: identifier"));
        }
        let errs = crate::names::is_qualified_name(lit);
        if !errs.is_empty() {
            // The parser has no field path, which Go prints as "<nil>".
            return Err(format!(
                "<nil>: Invalid value: {}: {}",
                go_quote(lit),
                errs.join("; ")
            ));
        }
        let (next, _) = self.lookahead(Context::Values);
        if operator.is_none() && matches!(next, Token::EndOfString | Token::Comma) {
            operator = Some(Operator::Exists);
        }
        Ok((lit.to_string(), operator))
    }

    fn parse_operator(&mut self) -> Result<Operator, String> {
        let (tok, lit) = self.consume(Context::KeyAndOperator);
        Ok(match tok {
            Token::In => Operator::In,
            Token::Equals => Operator::Equals,
            Token::DoubleEquals => Operator::DoubleEquals,
            Token::GreaterThan => Operator::GreaterThan,
            Token::LessThan => Operator::LessThan,
            Token::NotIn => Operator::NotIn,
            Token::NotEquals => Operator::NotEquals,
            _ => {
                return Err(format!(
                    "found '{lit}', expected: in, notin, =, ==, !=, gt, lt"
                ))
            }
        })
    }

    fn parse_values(&mut self) -> Result<Values, String> {
        let (tok, lit) = self.consume(Context::Values);
        if tok != Token::OpenPar {
            return Err(format!("found '{lit}' expected: '('"));
        }
        let (tok, lit) = self.lookahead(Context::Values);
        match tok {
            Token::Identifier | Token::Comma => {
                let values = self.parse_identifiers_list()?;
                if self.consume(Context::Values).0 != Token::ClosedPar {
                    return Err(format!("found '{lit}', expected: ')'"));
                }
                Ok(values)
            }
            Token::ClosedPar => {
                self.consume(Context::Values);
                Ok(Values::from([String::new()]))
            }
            _ => Err(format!("found '{lit}', expected: ',', ')' or identifier")),
        }
    }

    /// A comma-separated list of possibly empty values, up to (not including) the `)`.
    fn parse_identifiers_list(&mut self) -> Result<Values, String> {
        let mut values = Values::new();
        loop {
            let (tok, lit) = self.consume(Context::Values);
            match tok {
                Token::Identifier => {
                    values.insert(lit.to_string());
                    let (next, next_lit) = self.lookahead(Context::Values);
                    match next {
                        Token::Comma => continue,
                        Token::ClosedPar => return Ok(values),
                        _ => return Err(format!("found '{next_lit}', expected: ',' or ')'")),
                    }
                }
                Token::Comma => {
                    if values.is_empty() {
                        values.insert(String::new());
                    }
                    match self.lookahead(Context::Values).0 {
                        Token::ClosedPar => {
                            values.insert(String::new());
                            return Ok(values);
                        }
                        Token::Comma => {
                            values.insert(String::new());
                        }
                        _ => {}
                    }
                }
                _ => return Err(format!("found '{lit}', expected: ',', or identifier")),
            }
        }
    }

    fn parse_exact_value(&mut self) -> Result<Values, String> {
        if matches!(
            self.lookahead(Context::Values).0,
            Token::EndOfString | Token::Comma
        ) {
            return Ok(Values::from([String::new()]));
        }
        match self.consume(Context::Values) {
            (Token::Identifier, lit) => Ok(Values::from([lit.to_string()])),
            (_, lit) => Err(format!("found '{lit}', expected: identifier")),
        }
    }
}

/// Parses a selector string into requirements (unsorted).
pub(crate) fn parse(selector: &str) -> Result<Vec<Requirement>, SelectorError> {
    Parser {
        items: lex(selector),
        pos: 0,
    }
    .parse(selector)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use crate::labels::LabelSelector;

    fn parse(s: &str) -> LabelSelector {
        LabelSelector::parse(s).unwrap_or_else(|e| panic!("{s:?} should parse: {e}"))
    }

    fn err(s: &str) -> String {
        LabelSelector::parse(s)
            .expect_err(&format!("{s:?} should not parse"))
            .to_string()
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn canonical_strings() {
        let cases = [
            ("", ""),
            ("x=a", "x=a"),
            ("x==a", "x==a"),
            ("x!=a", "x!=a"),
            ("  x  =  a  ", "x=a"),
            ("x=a,y=b", "x=a,y=b"),
            ("y=b,x=a", "x=a,y=b"),
            ("x in (b,a,b)", "x in (a,b)"),
            ("x notin(a)", "x notin (a)"),
            ("x in ()", "x in ()"),
            ("x in (,a)", "x in (,a)"),
            ("x in (a,)", "x in (,a)"),
            ("x in (a,,b)", "x in (,a,b)"),
            ("x in (,,)", "x in ()"),
            ("x", "x"),
            ("!x", "!x"),
            ("! x", "!x"),
            ("x=", "x="),
            ("x=,z", "x=,z"),
            ("x>1", "x>1"),
            ("x<10", "x<10"),
            ("x in (in)", "x in (in)"),
            ("x=notin", "x=notin"),
            ("a.b/c-d=e_f", "a.b/c-d=e_f"),
            ("z,\ty\n,\rx", "x,y,z"),
            ("x=a\0,y", "x=a,y"),
            ("x=a \0,y", "x=a"),
        ];
        for (input, want) in cases {
            assert_eq!(parse(input).to_string(), want, "input {input:?}");
        }
    }

    #[test]
    fn matching_parsed_selectors() {
        let l = labels(&[("app", "web"), ("tier", "front"), ("n", "3")]);
        let yes = [
            "",
            "app=web",
            "app==web",
            "app!=db",
            "missing!=db",
            "app in (db,web)",
            "app notin (db)",
            "missing notin (db)",
            "app",
            "!missing",
            "n>2",
            "n<4",
            "app=web,tier=front",
        ];
        let no = [
            "app=db",
            "app!=web",
            "missing=",
            "app in (db)",
            "app notin (web)",
            "missing",
            "!app",
            "n>3",
            "app>1",
            "app=web,tier=back",
        ];
        for s in yes {
            assert!(parse(s).matches(&l), "{s:?} should match");
        }
        for s in no {
            assert!(!parse(s).matches(&l), "{s:?} should not match");
        }
        assert!(parse("missing=").matches(&labels(&[("missing", "")])));
    }

    #[test]
    fn syntax_errors() {
        let cases = [
            ("x=a,", "found '', expected: identifier after ','"),
            (",x", "found ',', expected: !, identifier, or 'end of string'"),
            ("x=a y=b", "found 'y', expected: ',' or 'end of string'"),
            ("x=a,,y", "found ',', expected: identifier after ','"),
            ("(x)", "found '(', expected: !, identifier, or 'end of string'"),
            (
                "x y",
                "unable to parse requirement: found 'y', expected: in, notin, =, ==, !=, gt, lt",
            ),
            ("x in y", "unable to parse requirement: found 'y' expected: '('"),
            (
                "x in (",
                "unable to parse requirement: found '', expected: ',', ')' or identifier",
            ),
            (
                "x in (a",
                "unable to parse requirement: found '', expected: ',' or ')'",
            ),
            (
                "x in (a b)",
                "unable to parse requirement: found 'b', expected: ',' or ')'",
            ),
            (
                "x in (a,=)",
                "unable to parse requirement: found '=', expected: ',', or identifier",
            ),
            ("x==(", "unable to parse requirement: found '(', expected: identifier"),
            ("!", "unable to parse requirement: found '', expected: identifier"),
            ("!=a", "found '!=', expected: !, identifier, or 'end of string'"),
            ("x=a=b", "found '=', expected: ',' or 'end of string'"),
            ("!x=a", "found '=', expected: ',' or 'end of string'"),
            ("x===a", "unable to parse requirement: found '=', expected: identifier"),
            (
                "x<-1",
                "unable to parse requirement: values[0][x]: Invalid value: \"-1\": a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')",
            ),
            (
                "x>a",
                "unable to parse requirement: values[0]: Invalid value: \"a\": for 'Gt', 'Lt' operators, the value must be an integer",
            ),
        ];
        for (input, want) in cases {
            assert_eq!(err(input), want, "input {input:?}");
        }
    }

    #[test]
    fn validation_errors() {
        assert_eq!(
            err("-x=a"),
            "unable to parse requirement: <nil>: Invalid value: \"-x\": name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"
        );
        assert_eq!(
            err("x=a/b"),
            "unable to parse requirement: values[0][x]: Invalid value: \"a/b\": a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"
        );
        let many = err("x in (-a,-b)");
        assert!(
            many.starts_with("unable to parse requirement: [values[0][x]: Invalid value: \"-a\": ")
        );
        assert!(many.contains(", values[1][x]: Invalid value: \"-b\": "));
    }

    #[test]
    fn structure_of_parsed_selector() {
        let sel = parse("b in (y,x,y),a");
        let reqs = sel.requirements();
        assert_eq!(reqs.len(), 2);
        assert_eq!(reqs[0].key(), "a");
        assert_eq!(reqs[0].operator(), crate::labels::Operator::Exists);
        assert_eq!(reqs[1].values(), ["x".to_string(), "y".to_string()]);
        assert!(!sel.is_empty());
        assert!(parse("  ").is_empty());
    }

    fn selector_strategy() -> impl Strategy<Value = String> {
        let key = "([a-z]{1,5}\\.)?[a-z]{1,3}(/[A-Za-z0-9]([-A-Za-z0-9_.]{0,4}[A-Za-z0-9])?)?";
        let value = "([A-Za-z0-9]([-A-Za-z0-9_.]{0,4}[A-Za-z0-9])?)?";
        let req = (
            key,
            0..9usize,
            proptest::collection::vec(value, 0..4),
            "[0-9]{1,5}",
        )
            .prop_map(|(k, op, vals, n)| {
                let v = vals.first().cloned().unwrap_or_default();
                match op {
                    0 => format!("{k}={v}"),
                    1 => format!("{k}=={v}"),
                    2 => format!("{k}!={v}"),
                    3 => format!("{k} in ({})", vals.join(",")),
                    4 => format!("{k} notin ({})", vals.join(",")),
                    5 => k,
                    6 => format!("!{k}"),
                    7 => format!("{k}>{n}"),
                    _ => format!("{k}<{n}"),
                }
            });
        proptest::collection::vec(req, 0..5).prop_map(|r| r.join(","))
    }

    proptest! {
        #[test]
        fn display_round_trips(s in selector_strategy()) {
            let sel = parse(&s);
            let printed = sel.to_string();
            let again = parse(&printed);
            prop_assert_eq!(&again, &sel);
            prop_assert_eq!(again.to_string(), printed);
        }

        #[test]
        fn never_panics(s in "\\PC*") {
            let _ = LabelSelector::parse(&s);
        }

        #[test]
        fn never_panics_on_selector_alphabet(s in "[a-c=!(), \t<>]{0,24}|[a-z]{1,3}( in| notin)? ?[(),a-b!=]{0,10}") {
            let _ = LabelSelector::parse(&s);
        }
    }
}
