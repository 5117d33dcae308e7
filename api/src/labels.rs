//! Label selectors as Kubernetes evaluates them: the requirement model shared by the string form
//! (`?labelSelector=`, see `label_parser`) and the structured `metav1.LabelSelector` that
//! Deployments, ReplicaSets, Jobs and Services carry, plus label key and value validation.
//!
//! Error texts are apimachinery's (v1.33), byte for byte, because kubectl shows them to users.

use crate::names::{
    is_qualified_name as validate_label_key, is_valid_label_value as validate_label_value,
};
use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::apimachinery::pkg::apis::meta::v1 as metav1;

/// How a requirement relates a label's value to its values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Operator {
    In,
    NotIn,
    Equals,
    DoubleEquals,
    NotEquals,
    Exists,
    DoesNotExist,
    GreaterThan,
    LessThan,
}

impl Operator {
    /// The name apimachinery's `selection.Operator` uses (what its error messages print).
    pub fn as_str(self) -> &'static str {
        match self {
            Operator::In => "in",
            Operator::NotIn => "notin",
            Operator::Equals => "=",
            Operator::DoubleEquals => "==",
            Operator::NotEquals => "!=",
            Operator::Exists => "exists",
            Operator::DoesNotExist => "!",
            Operator::GreaterThan => "gt",
            Operator::LessThan => "lt",
        }
    }
}

/// One `Invalid value` field error, formatted as apimachinery's `field.Error`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequirementError {
    /// The field path, e.g. `key`, `values`, `values[0][app]`, or `<nil>` when there is none.
    pub field: String,
    /// The bad value as Go's `%q` / `%#v` renders it (`"x"`, `[]string(nil)`).
    pub value: String,
    pub detail: String,
}

impl fmt::Display for RequirementError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: Invalid value: {}: {}",
            self.field, self.value, self.detail
        )
    }
}

/// Renders a list of field errors like `utilerrors.NewAggregate`: one alone, or `[a, b]` with
/// duplicates dropped.
pub(crate) fn aggregate(errors: &[RequirementError]) -> String {
    let mut seen: Vec<String> = Vec::new();
    for e in errors {
        let msg = e.to_string();
        if !seen.contains(&msg) {
            seen.push(msg);
        }
    }
    if seen.len() == 1 {
        seen.remove(0)
    } else {
        format!("[{}]", seen.join(", "))
    }
}

/// Why a label selector was rejected; the message is what the Kubernetes API server returns.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    /// The string form is malformed between requirements.
    #[error("{detail}")]
    Syntax { selector: String, detail: String },
    /// One requirement of the string form is malformed or invalid.
    #[error("unable to parse requirement: {detail}")]
    Requirement { selector: String, detail: String },
    /// A structured selector holds an invalid requirement.
    #[error("{}", aggregate(.errors))]
    Invalid {
        key: String,
        errors: Vec<RequirementError>,
    },
    /// A structured selector uses an operator other than In, NotIn, Exists, DoesNotExist.
    #[error("{} is not a valid label selector operator", go_quote(.operator))]
    UnknownOperator { key: String, operator: String },
}

/// One condition on one label key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Requirement {
    key: String,
    operator: Operator,
    values: Vec<String>,
}

impl Requirement {
    /// Builds a requirement, checking it like apimachinery's `NewRequirement` (field paths
    /// `key`, `values`, `values[i][key]`).
    pub fn new(
        key: impl Into<String>,
        operator: Operator,
        values: Vec<String>,
    ) -> Result<Requirement, Vec<RequirementError>> {
        let key = key.into();
        let mut errors = Vec::new();
        let key_errors = validate_label_key(&key);
        if !key_errors.is_empty() {
            errors.push(RequirementError {
                field: "key".into(),
                value: go_quote(&key),
                detail: key_errors.join("; "),
            });
        }
        let invalid_values = |detail: &str| RequirementError {
            field: "values".into(),
            value: go_string_slice(&values),
            detail: detail.into(),
        };
        match operator {
            Operator::In | Operator::NotIn if values.is_empty() => errors.push(invalid_values(
                "for 'in', 'notin' operators, values set can't be empty",
            )),
            Operator::Equals | Operator::DoubleEquals | Operator::NotEquals
                if values.len() != 1 =>
            {
                errors.push(invalid_values(
                    "exact-match compatibility requires one single value",
                ))
            }
            Operator::Exists | Operator::DoesNotExist if !values.is_empty() => errors.push(
                invalid_values("values set must be empty for exists and does not exist"),
            ),
            Operator::GreaterThan | Operator::LessThan => {
                if values.len() != 1 {
                    errors.push(invalid_values(
                        "for 'Gt', 'Lt' operators, exactly one value is required",
                    ));
                }
                for (i, v) in values.iter().enumerate() {
                    if v.parse::<i64>().is_err() {
                        errors.push(RequirementError {
                            field: format!("values[{i}]"),
                            value: go_quote(v),
                            detail: "for 'Gt', 'Lt' operators, the value must be an integer".into(),
                        });
                    }
                }
            }
            _ => {}
        }
        for (i, v) in values.iter().enumerate() {
            let value_errors = validate_label_value(v);
            if !value_errors.is_empty() {
                errors.push(RequirementError {
                    field: format!("values[{i}][{key}]"),
                    value: go_quote(v),
                    detail: value_errors.join("; "),
                });
            }
        }
        if errors.is_empty() {
            Ok(Requirement {
                key,
                operator,
                values,
            })
        } else {
            Err(errors)
        }
    }

    pub fn key(&self) -> &str {
        &self.key
    }

    pub fn operator(&self) -> Operator {
        self.operator
    }

    /// The values in the order given (the string parser gives them sorted and deduplicated).
    pub fn values(&self) -> &[String] {
        &self.values
    }

    /// Whether labels looked up through `get` satisfy this requirement. A missing key satisfies
    /// only `NotIn`, `!=` and `DoesNotExist`.
    pub fn matches<'a>(&self, get: impl Fn(&str) -> Option<&'a str>) -> bool {
        let value = get(&self.key);
        let has = |v: &str| self.values.iter().any(|x| x == v);
        match self.operator {
            Operator::In | Operator::Equals | Operator::DoubleEquals => value.is_some_and(has),
            Operator::NotIn | Operator::NotEquals => !value.is_some_and(has),
            Operator::Exists => value.is_some(),
            Operator::DoesNotExist => value.is_none(),
            Operator::GreaterThan | Operator::LessThan => {
                let (Some(value), [bound]) = (value, self.values.as_slice()) else {
                    return false;
                };
                let (Ok(value), Ok(bound)) = (value.parse::<i64>(), bound.parse::<i64>()) else {
                    return false;
                };
                if self.operator == Operator::GreaterThan {
                    value > bound
                } else {
                    value < bound
                }
            }
        }
    }
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.operator == Operator::DoesNotExist {
            f.write_str("!")?;
        }
        f.write_str(&self.key)?;
        let op = match self.operator {
            Operator::Exists | Operator::DoesNotExist => return Ok(()),
            Operator::Equals => "=",
            Operator::DoubleEquals => "==",
            Operator::NotEquals => "!=",
            Operator::In => " in (",
            Operator::NotIn => " notin (",
            Operator::GreaterThan => ">",
            Operator::LessThan => "<",
        };
        f.write_str(op)?;
        // Values print sorted (not deduplicated), whatever order they are stored in.
        let mut values: Vec<&str> = self.values.iter().map(String::as_str).collect();
        values.sort_unstable();
        f.write_str(&values.join(","))?;
        if matches!(self.operator, Operator::In | Operator::NotIn) {
            f.write_str(")")?;
        }
        Ok(())
    }
}

/// A label selector: the AND of its requirements, sorted by key. The empty selector matches
/// everything; [`LabelSelector::nothing`] (what an absent structured selector means) matches
/// nothing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LabelSelector {
    requirements: Vec<Requirement>,
    nothing: bool,
}

impl LabelSelector {
    /// Matches every set of labels.
    pub fn everything() -> Self {
        LabelSelector::default()
    }

    /// Matches no set of labels; prints as "".
    pub fn nothing() -> Self {
        LabelSelector {
            requirements: Vec::new(),
            nothing: true,
        }
    }

    /// Parses the string form used by `?labelSelector=` and `kubectl -l`.
    pub fn parse(selector: &str) -> Result<Self, SelectorError> {
        crate::label_parser::parse(selector).map(LabelSelector::from_requirements)
    }

    /// Builds a selector from requirements, sorting them by key as apimachinery does.
    pub fn from_requirements(mut requirements: Vec<Requirement>) -> Self {
        requirements.sort_by(|a, b| a.key.cmp(&b.key));
        LabelSelector {
            requirements,
            nothing: false,
        }
    }

    /// `key=value` for every entry, unvalidated (apimachinery's `SelectorFromSet`).
    pub fn from_set(labels: &BTreeMap<String, String>) -> Self {
        let requirements = labels
            .iter()
            .map(|(k, v)| Requirement {
                key: k.clone(),
                operator: Operator::Equals,
                values: vec![v.clone()],
            })
            .collect();
        LabelSelector::from_requirements(requirements)
    }

    /// Converts a structured selector (`spec.selector` of Deployments, ReplicaSets, Jobs …) like
    /// `metav1.LabelSelectorAsSelector`: an empty one matches everything.
    pub fn from_structured(selector: &metav1::LabelSelector) -> Result<Self, SelectorError> {
        let mut requirements = Vec::new();
        for (key, value) in selector.match_labels.iter().flatten() {
            let r = Requirement::new(key.clone(), Operator::Equals, vec![value.clone()]).map_err(
                |errors| SelectorError::Invalid {
                    key: key.clone(),
                    errors,
                },
            )?;
            requirements.push(r);
        }
        for expr in selector.match_expressions.iter().flatten() {
            let operator = match expr.operator.as_str() {
                "In" => Operator::In,
                "NotIn" => Operator::NotIn,
                "Exists" => Operator::Exists,
                "DoesNotExist" => Operator::DoesNotExist,
                other => {
                    return Err(SelectorError::UnknownOperator {
                        key: expr.key.clone(),
                        operator: other.to_string(),
                    })
                }
            };
            let values = expr.values.clone().unwrap_or_default();
            let r = Requirement::new(expr.key.clone(), operator, values).map_err(|errors| {
                SelectorError::Invalid {
                    key: expr.key.clone(),
                    errors,
                }
            })?;
            requirements.push(r);
        }
        Ok(LabelSelector::from_requirements(requirements))
    }

    /// Like [`LabelSelector::from_structured`], with an absent selector matching nothing.
    pub fn from_optional(selector: Option<&metav1::LabelSelector>) -> Result<Self, SelectorError> {
        selector.map_or(Ok(LabelSelector::nothing()), LabelSelector::from_structured)
    }

    pub fn requirements(&self) -> &[Requirement] {
        &self.requirements
    }

    /// True when the selector does not restrict anything (not for [`LabelSelector::nothing`]).
    pub fn is_empty(&self) -> bool {
        !self.nothing && self.requirements.is_empty()
    }

    pub fn matches_nothing(&self) -> bool {
        self.nothing
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.matches_with(|k| labels.get(k).map(String::as_str))
    }

    /// Matches `metadata.labels` of a JSON object; absent labels are an empty set, and a value
    /// that is not a string counts as absent.
    pub fn matches_json(
        &self,
        labels: Option<&serde_json::Map<String, serde_json::Value>>,
    ) -> bool {
        self.matches_with(|k| labels.and_then(|m| m.get(k)).and_then(|v| v.as_str()))
    }

    /// Matches labels looked up through `get`.
    pub fn matches_with<'a>(&self, get: impl Fn(&str) -> Option<&'a str>) -> bool {
        !self.nothing && self.requirements.iter().all(|r| r.matches(&get))
    }

    /// The value `label` must have, when the selector pins it to one (`=`, `==`, `in` of one).
    pub fn requires_exact_match(&self, label: &str) -> Option<&str> {
        let r = self.requirements.iter().find(|r| r.key == label)?;
        match (r.operator, r.values.as_slice()) {
            (Operator::Equals | Operator::DoubleEquals | Operator::In, [v]) => Some(v),
            _ => None,
        }
    }
}

impl fmt::Display for LabelSelector {
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

impl std::str::FromStr for LabelSelector {
    type Err = SelectorError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        LabelSelector::parse(s)
    }
}

/// Go's `strconv.Quote`, which `%q` and `%#v` use for strings in Kubernetes messages.
pub(crate) fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x80 && c.is_control() => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Go's `%#v` of a `[]string`; an empty slice prints as nil because apimachinery copies values
/// with `append([]string(nil), ...)`.
fn go_string_slice(values: &[String]) -> String {
    if values.is_empty() {
        return "[]string(nil)".to_string();
    }
    let quoted: Vec<String> = values.iter().map(|v| go_quote(v)).collect();
    format!("[]string{{{}}}", quoted.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use metav1::{LabelSelector as Structured, LabelSelectorRequirement};

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn expr(key: &str, op: &str, values: Option<&[&str]>) -> LabelSelectorRequirement {
        LabelSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: values.map(|v| v.iter().map(|s| s.to_string()).collect()),
        }
    }

    const NAME_REGEX_ERR: &str = "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";

    #[test]
    fn label_key_validation_messages() {
        assert!(validate_label_key("app").is_empty());
        assert!(validate_label_key("app.kubernetes.io/name").is_empty());
        assert!(validate_label_key("A_b.c-9").is_empty());
        assert_eq!(validate_label_key("-a"), vec![NAME_REGEX_ERR.to_string()]);
        assert_eq!(
            validate_label_key(""),
            vec![
                "name part must be non-empty".to_string(),
                NAME_REGEX_ERR.to_string()
            ]
        );
        assert_eq!(
            validate_label_key(&"a".repeat(64)),
            vec!["name part must be no more than 63 characters".to_string()]
        );
        assert_eq!(
            validate_label_key("/a"),
            vec!["prefix part must be non-empty"]
        );
        assert_eq!(
            validate_label_key("Example.com/a"),
            vec!["prefix part a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"]
        );
        assert_eq!(
            validate_label_key("a/b/c"),
            vec!["a qualified name must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]') with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"]
        );
    }

    #[test]
    fn label_value_validation_messages() {
        assert!(validate_label_value("").is_empty());
        assert!(validate_label_value("v1.2_x-y").is_empty());
        assert_eq!(
            validate_label_value("a b"),
            vec!["a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"]
        );
        assert_eq!(
            validate_label_value(&"x".repeat(64)),
            vec!["must be no more than 63 characters"]
        );
    }

    #[test]
    fn requirement_matching() {
        let l = labels(&[("app", "web"), ("n", "5")]);
        let get = |k: &str| l.get(k).map(String::as_str);
        let req = |k: &str, op, vals: &[&str]| {
            Requirement::new(k, op, vals.iter().map(|s| s.to_string()).collect()).expect("valid")
        };
        assert!(req("app", Operator::In, &["db", "web"]).matches(get));
        assert!(!req("app", Operator::NotIn, &["web"]).matches(get));
        assert!(req("missing", Operator::NotIn, &["web"]).matches(get));
        assert!(req("missing", Operator::NotEquals, &["web"]).matches(get));
        assert!(!req("missing", Operator::Equals, &["web"]).matches(get));
        assert!(req("app", Operator::Exists, &[]).matches(get));
        assert!(!req("app", Operator::DoesNotExist, &[]).matches(get));
        assert!(req("n", Operator::GreaterThan, &["4"]).matches(get));
        assert!(!req("n", Operator::GreaterThan, &["5"]).matches(get));
        assert!(req("n", Operator::LessThan, &["6"]).matches(get));
        assert!(!req("app", Operator::LessThan, &["6"]).matches(get));
        assert!(!req("missing", Operator::LessThan, &["6"]).matches(get));
    }

    #[test]
    fn requirement_new_errors() {
        let err = Requirement::new("app", Operator::In, vec![]).unwrap_err();
        assert_eq!(
            aggregate(&err),
            "values: Invalid value: []string(nil): for 'in', 'notin' operators, values set can't be empty"
        );
        let err = Requirement::new("app", Operator::Exists, vec!["a".into()]).unwrap_err();
        assert_eq!(
            aggregate(&err),
            "values: Invalid value: []string{\"a\"}: values set must be empty for exists and does not exist"
        );
        let err = Requirement::new("-k", Operator::Equals, vec!["a b".into()]).unwrap_err();
        assert_eq!(err.len(), 2);
        assert_eq!(
            err[0].to_string(),
            format!("key: Invalid value: \"-k\": {NAME_REGEX_ERR}")
        );
        assert!(aggregate(&err).starts_with("[key: Invalid value: \"-k\": "));
        assert!(err[1]
            .to_string()
            .starts_with("values[0][-k]: Invalid value: \"a b\": a valid label must be"));
        let err = Requirement::new("n", Operator::GreaterThan, vec!["x".into()]).unwrap_err();
        assert_eq!(
            aggregate(&err),
            "values[0]: Invalid value: \"x\": for 'Gt', 'Lt' operators, the value must be an integer"
        );
    }

    #[test]
    fn structured_selector_conversion() {
        let empty = Structured::default();
        let sel = LabelSelector::from_structured(&empty).expect("empty is valid");
        assert!(sel.is_empty());
        assert!(sel.matches(&labels(&[("a", "b")])));
        assert!(sel.matches(&BTreeMap::new()));

        let nothing = LabelSelector::from_optional(None).expect("none is valid");
        assert!(nothing.matches_nothing());
        assert!(!nothing.is_empty());
        assert!(!nothing.matches(&BTreeMap::new()));
        assert_eq!(nothing.to_string(), "");

        let s = Structured {
            match_labels: Some(labels(&[("tier", "web"), ("app", "shop")])),
            match_expressions: Some(vec![
                expr("env", "NotIn", Some(&["prod", "dev"])),
                expr("canary", "DoesNotExist", None),
                expr("zone", "In", Some(&["b", "a"])),
                expr("app", "Exists", Some(&[])),
            ]),
        };
        let sel = LabelSelector::from_structured(&s).expect("valid");
        assert_eq!(
            sel.to_string(),
            "app=shop,app,!canary,env notin (dev,prod),tier=web,zone in (a,b)"
        );
        assert!(sel.matches(&labels(&[("app", "shop"), ("tier", "web"), ("zone", "a")])));
        assert!(!sel.matches(&labels(&[("app", "shop"), ("tier", "web"), ("zone", "c")])));
        assert!(!sel.matches(&labels(&[
            ("app", "shop"),
            ("tier", "web"),
            ("zone", "a"),
            ("canary", "")
        ])));
        assert!(!sel.matches(&labels(&[
            ("app", "shop"),
            ("tier", "web"),
            ("zone", "a"),
            ("env", "prod")
        ])));
    }

    #[test]
    fn structured_selector_errors() {
        let s = Structured {
            match_expressions: Some(vec![expr("app", "In", None)]),
            ..Default::default()
        };
        assert_eq!(
            LabelSelector::from_structured(&s).unwrap_err().to_string(),
            "values: Invalid value: []string(nil): for 'in', 'notin' operators, values set can't be empty"
        );
        let s = Structured {
            match_expressions: Some(vec![expr("app", "Equals", Some(&["a"]))]),
            ..Default::default()
        };
        assert_eq!(
            LabelSelector::from_structured(&s).unwrap_err().to_string(),
            "\"Equals\" is not a valid label selector operator"
        );
        let s = Structured {
            match_labels: Some(labels(&[("app", "a/b")])),
            ..Default::default()
        };
        let err = LabelSelector::from_structured(&s).unwrap_err();
        assert!(err
            .to_string()
            .starts_with("values[0][app]: Invalid value: \"a/b\": a valid label must be"));
    }

    #[test]
    fn matches_json_and_exact_match() {
        let sel = LabelSelector::from_set(&labels(&[("app", "web")]));
        let obj = serde_json::json!({"app": "web", "n": 1});
        assert!(sel.matches_json(obj.as_object()));
        assert!(!sel.matches_json(None));
        let n =
            LabelSelector::from_requirements(vec![
                Requirement::new("n", Operator::Exists, vec![]).expect("valid")
            ]);
        assert!(
            !n.matches_json(obj.as_object()),
            "non-string value counts as absent"
        );
        assert_eq!(sel.requires_exact_match("app"), Some("web"));
        assert_eq!(sel.requires_exact_match("other"), None);
        assert_eq!(sel.to_string(), "app=web");
    }

    #[test]
    fn go_quote_escapes_like_go() {
        assert_eq!(go_quote("a\"b\\c\n\u{1}é"), "\"a\\\"b\\\\c\\n\\x01é\"");
    }
}
