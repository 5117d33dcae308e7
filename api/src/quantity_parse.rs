//! Reading resource quantities (`100m`, `1.5Gi`, `1e3`) exactly as apimachinery's
//! `resource.ParseQuantity` does: its scanner, its suffixes, rounding up to the nano unit,
//! capping binary quantities at 2^63-1, and the inputs it echoes back verbatim.

use crate::quantity::{Quantity, QuantityError, QuantityFormat};

/// The pieces of `<sign><digits>.<digits><suffix>` as Go's scanner cuts them.
struct Scanned<'a> {
    positive: bool,
    /// Integer digits without leading zeros; "0" when there are none.
    num: &'a str,
    denom: &'a str,
    /// Whether the numeric part Go would hand to `inf.Dec` holds a digit.
    has_digits: bool,
    suffix: &'a str,
}

fn scan(s: &str) -> Result<Scanned<'_>, ()> {
    let b = s.as_bytes();
    let end = b.len();
    let mut pos = 0;
    let mut positive = true;
    match b.first() {
        Some(b'-') => {
            positive = false;
            pos = 1;
        }
        Some(b'+') => pos = 1,
        _ => {}
    }
    let digits_in = |v: &str| v.bytes().any(|c| c.is_ascii_digit());
    let done = |num, denom, value: &str| Scanned {
        positive,
        num,
        denom,
        has_digits: digits_in(value),
        suffix: "",
    };
    while pos < end && b[pos] == b'0' {
        pos += 1;
    }
    if pos >= end {
        return Ok(done("0", "", "0"));
    }
    let start = pos;
    while pos < end && b[pos].is_ascii_digit() {
        pos += 1;
    }
    if pos >= end {
        return Ok(done(&s[start..], "", s));
    }
    let num = if pos == start { "0" } else { &s[start..pos] };
    let mut denom = "";
    if b[pos] == b'.' {
        pos += 1;
        let start = pos;
        while pos < end && b[pos].is_ascii_digit() {
            pos += 1;
        }
        if pos >= end {
            return Ok(done(num, &s[start..], s));
        }
        denom = &s[start..pos];
    }
    let has_digits = digits_in(&s[..pos]);
    let suffix_start = pos;
    while pos < end && b"eEinumkKMGTP".contains(&b[pos]) {
        pos += 1;
    }
    if pos < end && matches!(b[pos], b'-' | b'+') {
        pos += 1;
    }
    while pos < end && b[pos].is_ascii_digit() {
        pos += 1;
    }
    if pos < end {
        return Err(());
    }
    Ok(Scanned {
        positive,
        num,
        denom,
        has_digits,
        suffix: &s[suffix_start..],
    })
}

/// Base, exponent and format a suffix stands for.
fn interpret(suffix: &str) -> Option<(u32, i32, QuantityFormat)> {
    let decimal = |e| Some((10, e, QuantityFormat::DecimalSI));
    let binary = |e| Some((2, e, QuantityFormat::BinarySI));
    match suffix {
        "" => decimal(0),
        "n" => decimal(-9),
        "u" => decimal(-6),
        "m" => decimal(-3),
        "k" => decimal(3),
        "M" => decimal(6),
        "G" => decimal(9),
        "T" => decimal(12),
        "P" => decimal(15),
        "E" => decimal(18),
        "Ki" => binary(10),
        "Mi" => binary(20),
        "Gi" => binary(30),
        "Ti" => binary(40),
        "Pi" => binary(50),
        "Ei" => binary(60),
        _ if suffix.len() > 1 && (suffix.starts_with('e') || suffix.starts_with('E')) => {
            let exponent: i64 = suffix[1..].parse().ok()?;
            // Go narrows the parsed int64 to int32, wrapping.
            Some((10, exponent as i32, QuantityFormat::DecimalExponent))
        }
        _ => None,
    }
}

/// Go's fast path: a value that fits an int64 at a scale of at least nano. When it applies
/// and the input is already in a canonical-looking shape, Go keeps the input string and
/// prints it back unchanged ("1.500" stays "1.500"). Returns whether the fast path applies and
/// whether the input is kept.
fn fast_path(sc: &Scanned<'_>, exponent: i32, format: QuantityFormat) -> (bool, bool) {
    let digits = (sc.num.len() + sc.denom.len()) as i64;
    let (precision, scale, mantissa) = match format {
        QuantityFormat::BinarySI if sc.denom.is_empty() => {
            let e = i64::from(exponent);
            (15 - sc.num.len() as i64 - e * 3 / 10 - 1, 0i64, 1i64 << e)
        }
        QuantityFormat::BinarySI => (-1, 0, 1),
        _ => (18 - digits, i64::from(exponent), 1),
    };
    let scale = scale - sc.denom.len() as i64;
    if precision < 0 || scale < -9 {
        return (false, false);
    }
    let shifted = format!("{}{}", sc.num, sc.denom);
    let Some(value) = shifted
        .parse::<i64>()
        .ok()
        .filter(|v| v.checked_mul(mantissa).is_some())
    else {
        return (false, false);
    };
    let keep = match format {
        QuantityFormat::BinarySI => exponent % 10 == 0 && value & 7 != 0,
        _ => scale % 3 == 0 && !shifted.ends_with("000") && !shifted.starts_with('0'),
    };
    (true, keep)
}

/// A non-negative decimal number as digits (most significant first) times 10^exp.
struct Digits {
    digits: Vec<u8>,
    exp: i64,
}

impl Digits {
    fn double(&mut self) {
        let mut carry = 0;
        for d in self.digits.iter_mut().rev() {
            let v = *d * 2 + carry;
            *d = v % 10;
            carry = v / 10;
        }
        if carry > 0 {
            self.digits.insert(0, carry);
        }
    }

    /// Rounds away from zero to a multiple of 10^-9, the finest unit a quantity keeps.
    fn round_up_to_nano(&mut self) {
        if self.exp >= -9 {
            return;
        }
        let drop = -9 - self.exp;
        self.exp = -9;
        let len = self.digits.len() as i64;
        let keep = (len - drop).max(0) as usize;
        let inexact = self.digits[keep..].iter().any(|&d| d != 0);
        self.digits.truncate(keep);
        if inexact {
            let mut i = self.digits.len();
            loop {
                if i == 0 {
                    self.digits.insert(0, 1);
                    break;
                }
                i -= 1;
                if self.digits[i] == 9 {
                    self.digits[i] = 0;
                } else {
                    self.digits[i] += 1;
                    break;
                }
            }
        }
    }

    fn normalize(&mut self) {
        let leading = self.digits.iter().take_while(|&&d| d == 0).count();
        self.digits.drain(..leading);
        while self.digits.last() == Some(&0) {
            self.digits.pop();
            self.exp += 1;
        }
        if self.digits.is_empty() {
            self.exp = 0;
        }
    }

    /// Digits before the decimal point (negative or zero for values below 1).
    fn integer_digits(&self) -> i64 {
        self.digits.len() as i64 + self.exp
    }

    fn to_i128(&self) -> Option<i128> {
        self.digits.iter().try_fold(0i128, |acc, &d| {
            acc.checked_mul(10)?.checked_add(i128::from(d))
        })
    }
}

/// 2^63-1 (binary quantities are capped here, as in Kubernetes), normalized.
const MAX_BINARY: i128 = i64::MAX as i128;

pub(crate) fn parse(input: &str) -> Result<Quantity, QuantityError> {
    let format_err = || QuantityError::Format {
        input: input.to_string(),
    };
    if input.is_empty() {
        return Err(format_err());
    }
    if input == "0" {
        return Ok(Quantity::from_parts(
            0,
            0,
            QuantityFormat::DecimalSI,
            Some(input),
        ));
    }
    let sc = scan(input).map_err(|()| format_err())?;
    let (base, exponent, mut format) = interpret(sc.suffix).ok_or(QuantityError::Suffix {
        input: input.to_string(),
    })?;
    let (fast, keep) = fast_path(&sc, exponent, format);
    if !fast && !sc.has_digits {
        return Err(QuantityError::Numeric {
            input: input.to_string(),
        });
    }

    let mut d = Digits {
        digits: sc
            .num
            .bytes()
            .chain(sc.denom.bytes())
            .map(|c| c - b'0')
            .collect(),
        exp: -(sc.denom.len() as i64),
    };
    d.normalize();
    if base == 10 {
        d.exp += i64::from(exponent);
    } else {
        for _ in 0..exponent {
            d.double();
        }
    }
    d.round_up_to_nano();
    d.normalize();

    let out_of_range = || QuantityError::OutOfRange {
        input: input.to_string(),
    };
    let (mut unscaled, mut exp) = if d.digits.is_empty() {
        (0, 0)
    } else if format == QuantityFormat::BinarySI && d.integer_digits() > 19 {
        (MAX_BINARY, 0)
    } else {
        let u = d.to_i128().ok_or_else(out_of_range)?;
        (u, i32::try_from(d.exp).map_err(|_| out_of_range())?)
    };
    if format == QuantityFormat::BinarySI && unscaled != 0 {
        // Compare at nano scale, where a value below 10^19 always fits.
        let nano = unscaled.checked_mul(10i128.pow((exp + 9) as u32));
        if nano.is_none_or(|n| n > MAX_BINARY * 1_000_000_000) {
            (unscaled, exp) = (MAX_BINARY, 0);
        } else if nano.is_some_and(|n| n < 1_000_000_000) {
            format = QuantityFormat::DecimalSI;
        }
    }
    if !sc.positive {
        unscaled = -unscaled;
    }
    let literal = keep.then_some(input);
    Ok(Quantity::from_parts(unscaled, exp, format, literal))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use crate::quantity::{Quantity, QuantityError, QuantityFormat};

    fn q(s: &str) -> Quantity {
        Quantity::parse(s).unwrap_or_else(|e| panic!("{s:?} should parse: {e}"))
    }

    #[test]
    fn parses_values_exactly() {
        // (input, milli value, format) from apimachinery's TestQuantityParse table.
        let cases: &[(&str, i128, QuantityFormat)] = &[
            ("0", 0, QuantityFormat::DecimalSI),
            ("0Ki", 0, QuantityFormat::BinarySI),
            ("1", 1000, QuantityFormat::DecimalSI),
            ("1Ki", 1_024_000, QuantityFormat::BinarySI),
            ("3Ei", 3 * (1i128 << 60) * 1000, QuantityFormat::BinarySI),
            ("5n", 1, QuantityFormat::DecimalSI),
            ("4u", 1, QuantityFormat::DecimalSI),
            ("3m", 3, QuantityFormat::DecimalSI),
            ("50k", 50_000_000, QuantityFormat::DecimalSI),
            (
                "12E",
                12_000_000_000_000_000_000_000,
                QuantityFormat::DecimalSI,
            ),
            ("1E-3", 1, QuantityFormat::DecimalExponent),
            ("1.3E+6", 1_300_000_000, QuantityFormat::DecimalExponent),
            ("100.035k", 100_035_000, QuantityFormat::DecimalSI),
            ("0.0005k", 500, QuantityFormat::DecimalSI),
            ("0.5e-1", 50, QuantityFormat::DecimalExponent),
            ("6.987654321G", 6_987_654_321_000, QuantityFormat::DecimalSI),
            (
                "1.01E",
                1_010_000_000_000_000_000_000,
                QuantityFormat::DecimalSI,
            ),
            ("100.035Ki", 102_435_840, QuantityFormat::BinarySI),
            ("0.5Mi", 524_288_000, QuantityFormat::BinarySI),
            (".001", 1, QuantityFormat::DecimalSI),
            ("1.", 1000, QuantityFormat::DecimalSI),
            ("1.G", 1_000_000_000_000, QuantityFormat::DecimalSI),
            ("-1.5", -1500, QuantityFormat::DecimalSI),
            ("+2", 2000, QuantityFormat::DecimalSI),
            (".", 0, QuantityFormat::DecimalSI),
            ("-", 0, QuantityFormat::DecimalSI),
            ("Ki", 0, QuantityFormat::BinarySI),
        ];
        for (input, milli, format) in cases {
            let got = q(input);
            assert_eq!(got.as_milli(), *milli, "{input}");
            assert_eq!(got.format(), *format, "{input}");
        }
    }

    #[test]
    fn rounds_up_to_nano_and_caps_binary() {
        let nano = |s: &str| q(s).to_string();
        assert_eq!(nano("3.001n"), "4n");
        assert_eq!(nano("1.1E-9"), "2e-9");
        assert_eq!(nano("0.0000000001"), "1n");
        assert_eq!(nano("0.00000012345"), "124n");
        assert_eq!(nano("-0.00000012345"), "-124n");
        assert_eq!(nano("1e-30"), "1e-9");
        assert_eq!(nano(&format!("0.{}1", "0".repeat(100))), "1n");
        assert_eq!(nano("0.000000000001Ki"), "2n");
        assert_eq!(q("0.000000000001Ki").format(), QuantityFormat::DecimalSI);
        assert_eq!(q("9Ei").as_value(), i128::from(i64::MAX));
        assert_eq!(q("9223372036854775807Ki").as_value(), i128::from(i64::MAX));
        assert_eq!(q("-9Ei").as_value(), -i128::from(i64::MAX));
        assert_eq!(
            q(&format!("1{}Ki", "0".repeat(60))).as_value(),
            i128::from(i64::MAX)
        );
        assert_eq!(q("8Ei").as_value(), i128::from(i64::MAX));
        assert_eq!(q("7Ei").as_value(), 7i128 << 60);
        assert_eq!(
            q("1e4294967296").as_value(),
            1,
            "Go wraps the exponent to int32"
        );
    }

    #[test]
    fn rejects_malformed_input() {
        let format = "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'";
        let suffix = "unable to parse quantity's suffix";
        let numeric = "unable to parse numeric part of quantity";
        let cases = [
            ("", format),
            (" 1", format),
            ("1 ", format),
            ("1.1.M", format),
            ("1+1.0M", format),
            ("aoeu", format),
            ("-3.01e-", suffix),
            ("0.1mi", suffix),
            ("0.1am", format),
            (".5i", suffix),
            ("1i", suffix),
            ("1e", suffix),
            ("1ee3", suffix),
            ("1KiB", format),
            ("1e99999999999999999999", suffix),
            ("Pi", numeric),
            ("e-10", numeric),
        ];
        for (input, want) in cases {
            let err = Quantity::parse(input).expect_err(input);
            assert_eq!(err.to_string(), want, "{input:?}");
        }
        assert!(matches!(
            Quantity::parse(&"9".repeat(60)),
            Err(QuantityError::OutOfRange { .. })
        ));
    }

    #[test]
    fn keeps_input_where_kubernetes_does() {
        for s in ["+1", "1.500", "0001Ki", "1E3", "1Ki", "-1Ki", "100m", "1.5"] {
            let want = if s == "1.5" { "1500m" } else { s };
            assert_eq!(q(s).to_string(), want, "{s}");
        }
        for (s, want) in [
            ("1024Ki", "1Mi"),
            ("1.000", "1"),
            ("0.5", "500m"),
            ("1000M", "1G"),
        ] {
            assert_eq!(q(s).to_string(), want, "{s}");
        }
    }

    proptest! {
        #[test]
        fn never_panics(s in "\\PC{0,30}|[-+]?[0-9.]{0,25}[eEinumkKMGTP]{0,2}[-+]?[0-9]{0,4}") {
            let _ = Quantity::parse(&s);
        }

        #[test]
        fn display_round_trips(
            s in "[-+]?[0-9]{0,12}(\\.[0-9]{0,12})?(|n|u|m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei|e-?[0-9]{1,2})"
        ) {
            if let Ok(parsed) = Quantity::parse(&s) {
                let printed = parsed.to_string();
                let again = Quantity::parse(&printed).expect("printed form parses");
                prop_assert_eq!(&again, &parsed, "{} printed as {}", s, printed);
                prop_assert_eq!(again.canonical(), parsed.canonical());
            }
        }
    }
}
