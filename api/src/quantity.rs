//! Resource quantities (`cpu: 100m`, `memory: 1Gi`) as exact fixed-point numbers with
//! Kubernetes' rounding and canonical printing. Parsing lives in `quantity_parse`.
//!
//! A value is `unscaled × 10^exp` in an `i128`, kept normalized so that equal values have equal
//! parts. Parsing rounds to the nano unit as Kubernetes does, so every value it yields is exact;
//! only numbers beyond 38 significant digits are refused, where Kubernetes would fall back to
//! arbitrary precision.

use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};

use k8s_openapi::apimachinery::pkg::api::resource::Quantity as K8sQuantity;

/// How a quantity prints: the suffix family it was written with.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum QuantityFormat {
    /// `12e6`
    DecimalExponent,
    /// `12Mi` (powers of 1024)
    BinarySI,
    /// `12M` (powers of 1000), and plain numbers
    #[default]
    DecimalSI,
}

/// Why a quantity string was rejected; the first three are Kubernetes' messages.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    #[error("quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'")]
    Format { input: String },
    #[error("unable to parse numeric part of quantity")]
    Numeric { input: String },
    #[error("unable to parse quantity's suffix")]
    Suffix { input: String },
    /// More than 38 significant digits, or an exponent beyond ±2^31.
    #[error("quantity {input:?} is too large or too precise to represent")]
    OutOfRange { input: String },
}

/// An exact resource quantity. Equality, ordering and hashing compare values only, as
/// Kubernetes' `Cmp` does (`1Gi == 1073741824`), ignoring the format.
#[derive(Clone, Debug, Default)]
pub struct Quantity {
    unscaled: i128,
    exp: i32,
    format: QuantityFormat,
    /// The input string, when Kubernetes would print it back unchanged.
    literal: Option<Box<str>>,
}

fn pow10(n: u32) -> Option<i128> {
    10i128.checked_pow(n)
}

/// Normalizes `unscaled × 10^exp` so no trailing zeros remain; `None` past the `i32` exponent
/// range. `i128::MIN` is refused so that negation can never overflow.
fn normalize(mut unscaled: i128, mut exp: i64) -> Option<(i128, i32)> {
    if unscaled == 0 {
        return Some((0, 0));
    }
    if unscaled == i128::MIN {
        return None;
    }
    while unscaled % 10 == 0 {
        unscaled /= 10;
        exp += 1;
    }
    Some((unscaled, i32::try_from(exp).ok()?))
}

/// `unscaled × 10^(exp - target)` at the coarser or finer exponent `target`, rounding away
/// from zero when it has to drop digits.
fn rescale(unscaled: i128, exp: i32, target: i64) -> Option<i128> {
    let shift = i64::from(exp) - target;
    if shift >= 0 {
        return unscaled.checked_mul(pow10(u32::try_from(shift).ok()?)?);
    }
    let Some(p) = u32::try_from(-shift).ok().and_then(pow10) else {
        return Some(unscaled.signum());
    };
    let (q, r) = (unscaled / p, unscaled % p);
    Some(if r == 0 { q } else { q + unscaled.signum() })
}

impl Quantity {
    /// Parses a quantity as Kubernetes does (no surrounding whitespace allowed).
    pub fn parse(s: &str) -> Result<Quantity, QuantityError> {
        crate::quantity_parse::parse(s)
    }

    /// Assembles a parsed value; `unscaled × 10^exp` must already be normalized.
    pub(crate) fn from_parts(
        unscaled: i128,
        exp: i32,
        format: QuantityFormat,
        literal: Option<&str>,
    ) -> Quantity {
        Quantity {
            unscaled,
            exp,
            format,
            literal: literal.map(Into::into),
        }
    }

    fn from_scaled(value: i64, exp: i64, format: QuantityFormat) -> Quantity {
        let (unscaled, exp) = normalize(i128::from(value), exp).unwrap_or((0, 0));
        Quantity::from_parts(unscaled, exp, format, None)
    }

    /// `value` units (Kubernetes' `NewQuantity`).
    pub fn from_int(value: i64, format: QuantityFormat) -> Quantity {
        Quantity::from_scaled(value, 0, format)
    }

    /// `value` thousandths (Kubernetes' `NewMilliQuantity`).
    pub fn from_milli(value: i64, format: QuantityFormat) -> Quantity {
        Quantity::from_scaled(value, -3, format)
    }

    pub fn format(&self) -> QuantityFormat {
        self.format
    }

    /// The same value printed in another format.
    pub fn with_format(mut self, format: QuantityFormat) -> Quantity {
        self.format = format;
        self.literal = None;
        self
    }

    pub fn is_zero(&self) -> bool {
        self.unscaled == 0
    }

    /// -1, 0 or 1.
    pub fn signum(&self) -> i32 {
        self.unscaled.signum() as i32
    }

    /// `ceil(value × 10^-scale)`, rounding away from zero, saturating at the `i128` range.
    fn scaled_value(&self, scale: i64) -> i128 {
        rescale(self.unscaled, self.exp, scale).unwrap_or(if self.unscaled < 0 {
            i128::MIN
        } else {
            i128::MAX
        })
    }

    /// The value in whole units, rounded away from zero (Kubernetes' `Value`).
    pub fn as_value(&self) -> i128 {
        self.scaled_value(0)
    }

    /// The value in thousandths, rounded away from zero (Kubernetes' `MilliValue`).
    pub fn as_milli(&self) -> i128 {
        self.scaled_value(-3)
    }

    /// An approximation for scoring and ratios, never for comparisons.
    pub fn as_f64(&self) -> f64 {
        self.unscaled as f64 * 10f64.powi(self.exp)
    }

    /// The sum, or `None` when it needs more than 38 significant digits. When `self` is zero the
    /// result takes `other`'s format, as in Kubernetes.
    pub fn checked_add(&self, other: &Quantity) -> Option<Quantity> {
        let target = i64::from(self.exp.min(other.exp));
        let sum = rescale(self.unscaled, self.exp, target)?.checked_add(rescale(
            other.unscaled,
            other.exp,
            target,
        )?)?;
        let (unscaled, exp) = normalize(sum, target)?;
        let format = if self.is_zero() {
            other.format
        } else {
            self.format
        };
        Some(Quantity::from_parts(unscaled, exp, format, None))
    }

    /// The difference, or `None` when it needs more than 38 significant digits.
    pub fn checked_sub(&self, other: &Quantity) -> Option<Quantity> {
        self.checked_add(&-other.clone())
    }

    /// The sum, rounded away from zero at the first exponent where it fits when the exact sum
    /// needs more than 38 significant digits.
    fn add_rounded(&self, other: &Quantity) -> Quantity {
        if let Some(sum) = self.checked_add(other) {
            return sum;
        }
        let format = if self.is_zero() {
            other.format
        } else {
            self.format
        };
        let mut target = i64::from(self.exp.min(other.exp));
        loop {
            target += 1;
            let sum = rescale(self.unscaled, self.exp, target)
                .zip(rescale(other.unscaled, other.exp, target))
                .and_then(|(a, b)| a.checked_add(b))
                .and_then(|s| normalize(s, target));
            if let Some((unscaled, exp)) = sum {
                return Quantity::from_parts(unscaled, exp, format, None);
            }
        }
    }

    /// Kubernetes' canonical form: the largest suffix that keeps an integer mantissa
    /// (`1000m` → `1`, `1024Mi` → `1Gi`, `0.5` → `500m`, `1.5Gi` → `1536Mi`). Binary
    /// quantities below 1024 or with a fraction print as decimal.
    pub fn canonical(&self) -> String {
        if self.is_zero() {
            return "0".to_string();
        }
        if self.format == QuantityFormat::BinarySI && self.exp >= 0 {
            if let Some(value) = rescale(self.unscaled, self.exp, 0) {
                if value.unsigned_abs() >= 1024 {
                    return binary_canonical(value);
                }
            }
        }
        let exponent_form = self.format == QuantityFormat::DecimalExponent;
        decimal_canonical(self.unscaled, self.exp, exponent_form)
    }
}

fn binary_canonical(value: i128) -> String {
    const SUFFIXES: [&str; 7] = ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"];
    let mut mantissa = value;
    let mut power = 0;
    // Past Ei Kubernetes prints no suffix at all, which misstates the value; stay at Ei.
    while power < 6 && mantissa % 1024 == 0 {
        mantissa /= 1024;
        power += 1;
    }
    format!("{mantissa}{}", SUFFIXES[power])
}

fn decimal_canonical(unscaled: i128, exp: i32, exponent_form: bool) -> String {
    let e3 = exp.div_euclid(3) * 3;
    let zeros = "0".repeat((exp - e3) as usize);
    let suffix = match e3 {
        _ if exponent_form && e3 == 0 => String::new(),
        _ if exponent_form => format!("e{e3}"),
        -9 => "n".into(),
        -6 => "u".into(),
        -3 => "m".into(),
        0 => String::new(),
        3 => "k".into(),
        6 => "M".into(),
        9 => "G".into(),
        12 => "T".into(),
        15 => "P".into(),
        18 => "E".into(),
        // Kubernetes would print no suffix here, which misstates the value.
        _ => format!("e{e3}"),
    };
    format!("{unscaled}{zeros}{suffix}")
}

/// Kubernetes' `String()`: the canonical form, or the input itself where Kubernetes keeps it.
impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.literal {
            Some(literal) => f.write_str(literal),
            None => f.write_str(&self.canonical()),
        }
    }
}

impl std::str::FromStr for Quantity {
    type Err = QuantityError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Quantity::parse(s)
    }
}

impl PartialEq for Quantity {
    fn eq(&self, other: &Self) -> bool {
        (self.unscaled, self.exp) == (other.unscaled, other.exp)
    }
}

impl Eq for Quantity {}

impl Hash for Quantity {
    fn hash<H: Hasher>(&self, state: &mut H) {
        (self.unscaled, self.exp).hash(state);
    }
}

impl Ord for Quantity {
    fn cmp(&self, other: &Self) -> Ordering {
        let by_sign = self.unscaled.signum().cmp(&other.unscaled.signum());
        if by_sign != Ordering::Equal || self.unscaled == 0 {
            return by_sign;
        }
        let magnitude = |q: &Quantity| {
            let digits = q.unscaled.unsigned_abs().checked_ilog10().unwrap_or(0) + 1;
            i64::from(digits) + i64::from(q.exp)
        };
        let (a, b) = (self.unscaled.unsigned_abs(), other.unscaled.unsigned_abs());
        let by_magnitude = magnitude(self).cmp(&magnitude(other)).then_with(|| {
            // Same number of integer digits: scaling the shorter mantissa up keeps it in range
            // or proves it the larger.
            let diff = self.exp - other.exp;
            let scale =
                |x: u128, d: i32| 10u128.checked_pow(d as u32).and_then(|p| x.checked_mul(p));
            match diff.cmp(&0) {
                Ordering::Equal => a.cmp(&b),
                Ordering::Greater => scale(a, diff).map_or(Ordering::Greater, |a| a.cmp(&b)),
                Ordering::Less => scale(b, -diff).map_or(Ordering::Less, |b| a.cmp(&b)),
            }
        });
        if self.unscaled < 0 {
            by_magnitude.reverse()
        } else {
            by_magnitude
        }
    }
}

impl PartialOrd for Quantity {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl std::ops::Neg for Quantity {
    type Output = Quantity;

    fn neg(self) -> Quantity {
        // `normalize` never admits i128::MIN, so this cannot overflow.
        Quantity::from_parts(-self.unscaled, self.exp, self.format, None)
    }
}

/// Exact, except that a sum needing more than 38 significant digits is rounded away from zero.
impl std::ops::Add for Quantity {
    type Output = Quantity;

    fn add(self, other: Quantity) -> Quantity {
        self.add_rounded(&other)
    }
}

impl std::ops::Sub for Quantity {
    type Output = Quantity;

    fn sub(self, other: Quantity) -> Quantity {
        self.add_rounded(&-other)
    }
}

impl std::ops::AddAssign for Quantity {
    fn add_assign(&mut self, other: Quantity) {
        *self = self.add_rounded(&other);
    }
}

impl std::ops::SubAssign for Quantity {
    fn sub_assign(&mut self, other: Quantity) {
        *self = self.add_rounded(&-other);
    }
}

impl std::iter::Sum for Quantity {
    fn sum<I: Iterator<Item = Quantity>>(iter: I) -> Quantity {
        iter.fold(Quantity::default(), |acc, q| acc + q)
    }
}

/// Reads a k8s-openapi quantity, trimming whitespace as Kubernetes' JSON decoding does.
impl TryFrom<&K8sQuantity> for Quantity {
    type Error = QuantityError;

    fn try_from(q: &K8sQuantity) -> Result<Self, Self::Error> {
        Quantity::parse(q.0.trim())
    }
}

impl TryFrom<K8sQuantity> for Quantity {
    type Error = QuantityError;

    fn try_from(q: K8sQuantity) -> Result<Self, Self::Error> {
        Quantity::try_from(&q)
    }
}

impl From<&Quantity> for K8sQuantity {
    fn from(q: &Quantity) -> Self {
        K8sQuantity(q.to_string())
    }
}

impl From<Quantity> for K8sQuantity {
    fn from(q: Quantity) -> Self {
        K8sQuantity::from(&q)
    }
}

impl serde::Serialize for Quantity {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// Accepts a string (whitespace trimmed) or a JSON number, as Kubernetes does.
impl<'de> serde::Deserialize<'de> for Quantity {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Quantity;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a quantity string such as \"100m\" or \"1Gi\"")
            }

            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Quantity, E> {
                Quantity::parse(s.trim()).map_err(E::custom)
            }

            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Quantity, E> {
                self.visit_str(&v.to_string())
            }

            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Quantity, E> {
                self.visit_str(&v.to_string())
            }

            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Quantity, E> {
                self.visit_str(&v.to_string())
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn q(s: &str) -> Quantity {
        Quantity::parse(s).unwrap_or_else(|e| panic!("{s:?} should parse: {e}"))
    }

    #[test]
    fn canonical_forms() {
        // From apimachinery's TestQuantityString / TestQuantityParseEmit (alternate inputs).
        let cases = [
            ("1024Mi", "1Gi"),
            ("307200Ki", "300Mi"),
            ("1025024Mi", "1001Gi"),
            ("1024Gi", "1Ti"),
            ("1.5Gi", "1536Mi"),
            ("1000M", "1G"),
            ("0.001T", "1G"),
            ("1000u", "1m"),
            ("1.08", "1080m"),
            ("1080000000n", "1080m"),
            ("1000m", "1"),
            ("0.5", "500m"),
            (".001e12", "1e9"),
            ("0.001e0", "1e-3"),
            ("1000e-12", "1e-9"),
            ("00", "0"),
            ("0m", "0"),
            ("0Gi", "0"),
            (".001Ki", "1024m"),
            (".000001Ki", "1024u"),
            (".000000001Ki", "1024n"),
            ("1023.5Ki", "1048064"),
            ("0.5Ki", "512"),
            ("1.1Ki", "1126400m"),
            ("1025Mi", "1025Mi"),
            ("10000P", "10E"),
            ("1000E", "1e21"),
            ("1e21", "1e21"),
            ("12.5e3", "12500"),
            ("-1.5Gi", "-1536Mi"),
            ("-0.5", "-500m"),
        ];
        for (input, want) in cases {
            assert_eq!(q(input).to_string(), want, "{input}");
            assert_eq!(q(input).canonical(), want, "{input}");
        }
        assert_eq!(q("1.500").canonical(), "1500m");
        assert_eq!(q("+1").canonical(), "1");
    }

    #[test]
    fn value_and_milli_round_away_from_zero() {
        assert_eq!(q("100m").as_milli(), 100);
        assert_eq!(q("100m").as_value(), 1);
        assert_eq!(q("1.5").as_value(), 2);
        assert_eq!(q("-1.5").as_value(), -2);
        assert_eq!(q("0.1m").as_milli(), 1);
        assert_eq!(q("1n").as_milli(), 1);
        assert_eq!(q("-1n").as_milli(), -1);
        assert_eq!(q("2Gi").as_value(), 2 * 1024 * 1024 * 1024);
        assert_eq!(q("500M").as_value(), 500_000_000);
        assert_eq!(q("1e3").as_value(), 1000);
        assert_eq!(q("1E-3").as_milli(), 1);
        assert_eq!(q("1e50").as_value(), i128::MAX);
        assert_eq!(q("-1e50").as_milli(), i128::MIN);
        assert_eq!(
            Quantity::from_milli(1500, QuantityFormat::DecimalSI).to_string(),
            "1500m"
        );
        assert_eq!(
            Quantity::from_int(1024, QuantityFormat::BinarySI).to_string(),
            "1Ki"
        );
        assert_eq!(
            Quantity::from_milli(1024, QuantityFormat::BinarySI).to_string(),
            "1024m"
        );
        assert_eq!(
            Quantity::from_int(1_000_000, QuantityFormat::DecimalExponent).to_string(),
            "1e6"
        );
    }

    #[test]
    fn comparison_ignores_format() {
        assert_eq!(q("1Gi"), q("1073741824"));
        assert_eq!(q("1"), q("1000m"));
        assert!(q("999m") < q("1"));
        assert!(q("1Ki") > q("1k"));
        assert!(q("-1") < q("1n"));
        assert!(q("-2") < q("-1"));
        assert!(q("1e30") > q("999999999999999999999999999"));
        assert!(q("-1e30") < q("-999999999999999999999999999"));
        assert!(q("123456789012345678901234567890123456") < q("2e35"));
        assert_eq!(q("0"), Quantity::default());
        let mut sorted = [q("2"), q("-1"), q("1.5"), q("0"), q("1Ki")];
        sorted.sort();
        let printed: Vec<String> = sorted.iter().map(Quantity::to_string).collect();
        assert_eq!(printed, ["-1", "0", "1500m", "2", "1Ki"]);
    }

    #[test]
    fn arithmetic() {
        assert_eq!((q("1") + q("500m")).to_string(), "1500m");
        assert_eq!((q("1Gi") - q("512Mi")).to_string(), "512Mi");
        assert_eq!((q("1Gi") - q("1Gi")).to_string(), "0");
        assert_eq!((q("0") + q("1Ki")).format(), QuantityFormat::BinarySI);
        assert_eq!((q("1k") + q("1Ki")).format(), QuantityFormat::DecimalSI);
        assert_eq!((q("100m") - q("1")).to_string(), "-900m");
        let total: Quantity = ["100m", "250m", "1"].iter().map(|s| q(s)).sum();
        assert_eq!(total.as_milli(), 1350);
        let mut acc = q("1");
        acc += q("1n");
        acc -= q("2");
        assert_eq!(acc.to_string(), "-999999999n");
        assert_eq!(q("1e30").checked_add(&q("1n")), None);
        assert_eq!(
            q("1e30") + q("1n"),
            q("100000000000000000000000000000000000001e-8")
        );
        assert_eq!(q("1e30").checked_sub(&q("1e30")), Some(q("0")));
    }

    #[test]
    fn k8s_openapi_and_serde_interop() {
        let k = K8sQuantity(" 1024Mi ".to_string());
        let parsed = Quantity::try_from(&k).expect("valid");
        assert_eq!(K8sQuantity::from(&parsed).0, "1Gi");
        assert!(Quantity::try_from(K8sQuantity("x".into())).is_err());
        let json: Quantity = serde_json::from_str("\"250m\"").expect("string");
        assert_eq!(json.as_milli(), 250);
        let json: Quantity = serde_json::from_str("2").expect("number");
        assert_eq!(json.as_value(), 2);
        assert_eq!(
            serde_json::to_string(&q("1.5")).expect("serialize"),
            "\"1500m\""
        );
    }

    proptest! {
        #[test]
        fn canonical_round_trips(unscaled in -10i128.pow(20)..10i128.pow(20), exp in -9i32..30, f in 0..3usize) {
            let format = [QuantityFormat::DecimalExponent, QuantityFormat::BinarySI, QuantityFormat::DecimalSI][f];
            let (unscaled, exp) = normalize(unscaled, i64::from(exp)).expect("in range");
            let original = Quantity::from_parts(unscaled, exp, format, None);
            // Parsing caps binary quantities at 2^63-1.
            prop_assume!(format != QuantityFormat::BinarySI || original.as_value().unsigned_abs() <= i64::MAX as u128);
            let printed = original.to_string();
            let parsed = Quantity::parse(&printed).expect("canonical form parses");
            prop_assert_eq!(&parsed, &original, "printed {}", printed);
            prop_assert_eq!(parsed.to_string(), printed);
        }

        #[test]
        fn addition_is_exact_and_ordered(a in -10i64.pow(15)..10i64.pow(15), b in -10i64.pow(15)..10i64.pow(15)) {
            let (qa, qb) = (Quantity::from_milli(a, QuantityFormat::DecimalSI), Quantity::from_milli(b, QuantityFormat::DecimalSI));
            prop_assert_eq!((qa.clone() + qb.clone()).as_milli(), i128::from(a) + i128::from(b));
            prop_assert_eq!((qa.clone() - qb.clone()).as_milli(), i128::from(a) - i128::from(b));
            prop_assert_eq!(qa.cmp(&qb), a.cmp(&b));
        }
    }
}
