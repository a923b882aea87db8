//! Typed scalar expressions, bound to the columns of one input schema, evaluated row by row over a batch
//! read in place.
//!
//! NULL follows SQL's three-valued logic. Integer arithmetic wraps as Java's does (Flink's semantics);
//! INT-typed results wrap at 32 bits. Integer division or MOD by zero yields NULL (Flink fails the job).

use std::fmt;

use crate::record::types::{DataType, Datum, Value};
use crate::record::BatchView;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
    Mod,
    Eq,
    NotEq,
    Lt,
    LtEq,
    Gt,
    GtEq,
    And,
    Or,
    Concat,
}

impl BinOp {
    fn symbol(self) -> &'static str {
        match self {
            BinOp::Add => "+",
            BinOp::Sub => "-",
            BinOp::Mul => "*",
            BinOp::Div => "/",
            BinOp::Mod => "%",
            BinOp::Eq => "=",
            BinOp::NotEq => "<>",
            BinOp::Lt => "<",
            BinOp::LtEq => "<=",
            BinOp::Gt => ">",
            BinOp::GtEq => ">=",
            BinOp::And => "AND",
            BinOp::Or => "OR",
            BinOp::Concat => "||",
        }
    }

    pub fn is_comparison(self) -> bool {
        matches!(self, BinOp::Eq | BinOp::NotEq | BinOp::Lt | BinOp::LtEq | BinOp::Gt | BinOp::GtEq)
    }
}

/// Scalar functions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Func {
    Upper,
    Lower,
    CharLength,
    Concat,
    Substring,
    Trim,
    Ltrim,
    Rtrim,
    Replace,
    Position,
    Abs,
    Floor,
    Ceil,
    Round,
    Sqrt,
    Power,
    Exp,
    Ln,
    Log10,
    Sign,
    Coalesce,
    If,
}

impl Func {
    pub fn name(self) -> &'static str {
        match self {
            Func::Upper => "UPPER",
            Func::Lower => "LOWER",
            Func::CharLength => "CHAR_LENGTH",
            Func::Concat => "CONCAT",
            Func::Substring => "SUBSTRING",
            Func::Trim => "TRIM",
            Func::Ltrim => "LTRIM",
            Func::Rtrim => "RTRIM",
            Func::Replace => "REPLACE",
            Func::Position => "POSITION",
            Func::Abs => "ABS",
            Func::Floor => "FLOOR",
            Func::Ceil => "CEIL",
            Func::Round => "ROUND",
            Func::Sqrt => "SQRT",
            Func::Power => "POWER",
            Func::Exp => "EXP",
            Func::Ln => "LN",
            Func::Log10 => "LOG10",
            Func::Sign => "SIGN",
            Func::Coalesce => "COALESCE",
            Func::If => "IF",
        }
    }
}

/// A LIKE pattern, compiled once: `%` any run, `_` one character, with an optional escape character.
#[derive(Clone, Debug, PartialEq)]
pub struct LikePattern {
    text: String,
    parts: Vec<LikePart>,
}

#[derive(Clone, Debug, PartialEq)]
enum LikePart {
    Literal(Vec<u8>),
    AnyChar,
    AnyRun,
}

impl LikePattern {
    pub fn compile(pattern: &str, escape: Option<char>) -> Result<LikePattern, String> {
        let mut parts = Vec::new();
        let mut lit = String::new();
        let mut chars = pattern.chars();
        while let Some(c) = chars.next() {
            if Some(c) == escape {
                match chars.next() {
                    Some(n) => lit.push(n),
                    None => return Err(format!("LIKE pattern {pattern:?} ends with its escape character")),
                }
                continue;
            }
            if c == '%' || c == '_' {
                if !lit.is_empty() {
                    parts.push(LikePart::Literal(std::mem::take(&mut lit).into_bytes()));
                }
                parts.push(if c == '%' { LikePart::AnyRun } else { LikePart::AnyChar });
            } else {
                lit.push(c);
            }
        }
        if !lit.is_empty() {
            parts.push(LikePart::Literal(lit.into_bytes()));
        }
        Ok(LikePattern { text: pattern.to_string(), parts })
    }

    pub fn matches(&self, s: &[u8]) -> bool {
        like_match(&self.parts, s)
    }
}

fn like_match(parts: &[LikePart], s: &[u8]) -> bool {
    match parts.split_first() {
        None => s.is_empty(),
        Some((LikePart::Literal(l), rest)) => s.starts_with(l) && like_match(rest, &s[l.len()..]),
        Some((LikePart::AnyChar, rest)) => match utf8_char_len(s) {
            Some(n) => like_match(rest, &s[n..]),
            None => false,
        },
        Some((LikePart::AnyRun, rest)) => {
            if rest.is_empty() {
                return true;
            }
            let mut i = 0;
            loop {
                if like_match(rest, &s[i..]) {
                    return true;
                }
                match utf8_char_len(&s[i..]) {
                    Some(n) => i += n,
                    None => return false,
                }
            }
        }
    }
}

fn utf8_char_len(s: &[u8]) -> Option<usize> {
    let b = *s.first()?;
    Some(
        match b {
            0..=0x7f => 1,
            0xc0..=0xdf => 2,
            0xe0..=0xef => 3,
            _ => 4,
        }
        .min(s.len()),
    )
}

/// A row an expression is evaluated on: a row of a batch, or a row of owned values.
pub trait RowRef<'a>: Copy {
    fn datum(&self, col: usize) -> Datum<'a>;
}

impl<'a> RowRef<'a> for (BatchView<'a>, usize) {
    #[inline]
    fn datum(&self, col: usize) -> Datum<'a> {
        self.0.datum(col, self.1)
    }
}

impl<'a> RowRef<'a> for &'a [crate::record::Value] {
    #[inline]
    fn datum(&self, col: usize) -> Datum<'a> {
        self[col].as_datum()
    }
}

/// A joined row: the left side's values, then the right side's.
#[derive(Clone, Copy)]
pub struct Joined<'a> {
    pub left: &'a [crate::record::Value],
    pub right: &'a [crate::record::Value],
}

impl<'a> RowRef<'a> for Joined<'a> {
    #[inline]
    fn datum(&self, col: usize) -> Datum<'a> {
        match self.left.get(col) {
            Some(v) => v.as_datum(),
            None => self.right[col - self.left.len()].as_datum(),
        }
    }
}

/// A bound, typed expression.
#[derive(Clone, Debug, PartialEq)]
pub enum Expr {
    Column { idx: usize, name: String, ty: DataType },
    Literal { value: Value, ty: DataType },
    Binary { op: BinOp, left: Box<Expr>, right: Box<Expr>, ty: DataType },
    Not(Box<Expr>),
    Neg(Box<Expr>),
    IsNull { expr: Box<Expr>, negated: bool },
    Like { expr: Box<Expr>, pattern: LikePattern, negated: bool },
    InList { expr: Box<Expr>, list: Vec<Expr>, negated: bool },
    Between { expr: Box<Expr>, low: Box<Expr>, high: Box<Expr>, negated: bool },
    Case { operand: Option<Box<Expr>>, whens: Vec<(Expr, Expr)>, otherwise: Option<Box<Expr>>, ty: DataType },
    Cast { expr: Box<Expr>, to: DataType },
    Call { func: Func, args: Vec<Expr>, ty: DataType },
}

impl Expr {
    pub fn ty(&self) -> DataType {
        match self {
            Expr::Column { ty, .. } | Expr::Literal { ty, .. } | Expr::Binary { ty, .. } => *ty,
            Expr::Case { ty, .. } | Expr::Call { ty, .. } => *ty,
            Expr::Cast { to, .. } => *to,
            Expr::Neg(e) => e.ty(),
            Expr::Not(_) | Expr::IsNull { .. } | Expr::Like { .. } | Expr::InList { .. } | Expr::Between { .. } => {
                DataType::Boolean
            }
        }
    }

    /// `a AND b`.
    pub fn and(a: Expr, b: Expr) -> Expr {
        Expr::Binary { op: BinOp::And, left: Box::new(a), right: Box::new(b), ty: DataType::Boolean }
    }

    /// The same expression with every column replaced by what `f` gives for it (index, name, type).
    pub fn map_columns(&self, f: &dyn Fn(usize, &str, DataType) -> Expr) -> Expr {
        let m = |e: &Expr| Box::new(e.map_columns(f));
        match self {
            Expr::Column { idx, name, ty } => f(*idx, name, *ty),
            Expr::Literal { .. } => self.clone(),
            Expr::Binary { op, left, right, ty } => Expr::Binary { op: *op, left: m(left), right: m(right), ty: *ty },
            Expr::Not(x) => Expr::Not(m(x)),
            Expr::Neg(x) => Expr::Neg(m(x)),
            Expr::IsNull { expr, negated } => Expr::IsNull { expr: m(expr), negated: *negated },
            Expr::Like { expr, pattern, negated } => {
                Expr::Like { expr: m(expr), pattern: pattern.clone(), negated: *negated }
            }
            Expr::InList { expr, list, negated } => {
                Expr::InList { expr: m(expr), list: list.iter().map(|x| x.map_columns(f)).collect(), negated: *negated }
            }
            Expr::Between { expr, low, high, negated } => {
                Expr::Between { expr: m(expr), low: m(low), high: m(high), negated: *negated }
            }
            Expr::Case { operand, whens, otherwise, ty } => Expr::Case {
                operand: operand.as_ref().map(|o| m(o)),
                whens: whens.iter().map(|(w, t)| (w.map_columns(f), t.map_columns(f))).collect(),
                otherwise: otherwise.as_ref().map(|o| m(o)),
                ty: *ty,
            },
            Expr::Cast { expr, to } => Expr::Cast { expr: m(expr), to: *to },
            Expr::Call { func, args, ty } => {
                Expr::Call { func: *func, args: args.iter().map(|x| x.map_columns(f)).collect(), ty: *ty }
            }
        }
    }

    /// The same expression over the rows `cols` computes: column `i` becomes `cols[i]`.
    pub fn substitute(&self, cols: &[Expr]) -> Expr {
        self.map_columns(&|idx, _, _| cols[idx].clone())
    }

    /// The same expression with every column index moved by `by` (a side of a join, within the joined row).
    pub fn shift(&self, by: isize) -> Expr {
        self.map_columns(&|idx, name, ty| Expr::Column {
            idx: (idx as isize + by) as usize,
            name: name.to_string(),
            ty,
        })
    }

    /// The columns the expression reads, in order, once each.
    pub fn columns(&self) -> Vec<usize> {
        let seen = std::cell::RefCell::new(Vec::new());
        self.map_columns(&|idx, name, ty| {
            let mut s = seen.borrow_mut();
            if !s.contains(&idx) {
                s.push(idx);
            }
            Expr::Column { idx, name: name.to_string(), ty }
        });
        seen.into_inner()
    }

    /// The column this expression reads directly, if it is a bare column.
    pub fn as_column(&self) -> Option<usize> {
        match self {
            Expr::Column { idx, .. } => Some(*idx),
            _ => None,
        }
    }

    /// Evaluates the expression on row `row` of `view`.
    #[inline]
    pub fn eval<'a>(&'a self, view: &BatchView<'a>, row: usize) -> Datum<'a> {
        self.eval_row((*view, row))
    }

    /// Evaluates the expression on a row: of a batch, or of owned values (a joined row in an operator's
    /// state).
    pub fn eval_row<'a, R: RowRef<'a>>(&'a self, r: R) -> Datum<'a> {
        match self {
            Expr::Column { idx, .. } => r.datum(*idx),
            Expr::Literal { value, .. } => value.as_datum(),
            Expr::Binary { op, left, right, ty } => eval_binary(*op, *ty, left, right, r),
            Expr::Not(e) => match e.eval_row(r) {
                Datum::Bool(b) => Datum::Bool(!b),
                _ => Datum::Null,
            },
            Expr::Neg(e) => match e.eval_row(r) {
                Datum::Int(v) => Datum::Int(wrap(v.wrapping_neg(), e.ty())),
                Datum::Double(v) => Datum::Double(-v),
                _ => Datum::Null,
            },
            Expr::IsNull { expr, negated } => Datum::Bool(expr.eval_row(r).is_null() != *negated),
            Expr::Like { expr, pattern, negated } => match expr.eval_row(r).as_bytes() {
                Some(s) => Datum::Bool(pattern.matches(s) != *negated),
                None => Datum::Null,
            },
            Expr::InList { expr, list, negated } => {
                let v = expr.eval_row(r);
                if v.is_null() {
                    return Datum::Null;
                }
                let mut saw_null = false;
                for item in list {
                    match compare(&v, &item.eval_row(r)) {
                        Some(std::cmp::Ordering::Equal) => return Datum::Bool(!negated),
                        None => saw_null = true,
                        _ => {}
                    }
                }
                if saw_null {
                    Datum::Null
                } else {
                    Datum::Bool(*negated)
                }
            }
            Expr::Between { expr, low, high, negated } => {
                let v = expr.eval_row(r);
                let ge = compare(&v, &low.eval_row(r)).map(|o| o.is_ge());
                let le = compare(&v, &high.eval_row(r)).map(|o| o.is_le());
                match and3(ge, le) {
                    Some(b) => Datum::Bool(b != *negated),
                    None => Datum::Null,
                }
            }
            Expr::Case { operand, whens, otherwise, ty } => {
                let subject = operand.as_ref().map(|o| o.eval_row(r));
                for (when, then) in whens {
                    let hit = match &subject {
                        Some(s) => compare(s, &when.eval_row(r)) == Some(std::cmp::Ordering::Equal),
                        None => when.eval_row(r) == Datum::Bool(true),
                    };
                    if hit {
                        return coerce(then.eval_row(r), *ty);
                    }
                }
                otherwise.as_ref().map_or(Datum::Null, |e| coerce(e.eval_row(r), *ty))
            }
            Expr::Cast { expr, to } => cast(expr.eval_row(r), expr.ty(), *to),
            Expr::Call { func, args, ty } => super::function::call(*func, *ty, args, r),
        }
    }

    /// Evaluates a boolean expression as a filter: only TRUE passes.
    #[inline]
    pub fn is_true(&self, view: &BatchView<'_>, row: usize) -> bool {
        self.eval(view, row) == Datum::Bool(true)
    }
}

fn and3(a: Option<bool>, b: Option<bool>) -> Option<bool> {
    match (a, b) {
        (Some(false), _) | (_, Some(false)) => Some(false),
        (Some(true), Some(true)) => Some(true),
        _ => None,
    }
}

fn or3(a: Option<bool>, b: Option<bool>) -> Option<bool> {
    match (a, b) {
        (Some(true), _) | (_, Some(true)) => Some(true),
        (Some(false), Some(false)) => Some(false),
        _ => None,
    }
}

fn as_bool(d: &Datum<'_>) -> Option<bool> {
    match d {
        Datum::Bool(b) => Some(*b),
        _ => None,
    }
}

/// Wraps an integer result to the width of its SQL type, as Java arithmetic does.
#[inline]
pub fn wrap(v: i64, ty: DataType) -> i64 {
    if ty == DataType::Int {
        v as i32 as i64
    } else {
        v
    }
}

pub fn as_f64(d: &Datum<'_>) -> Option<f64> {
    match d {
        Datum::Int(v) => Some(*v as f64),
        Datum::Double(v) => Some(*v),
        _ => None,
    }
}

fn eval_binary<'a, R: RowRef<'a>>(op: BinOp, ty: DataType, l: &'a Expr, r: &'a Expr, row: R) -> Datum<'a> {
    match op {
        BinOp::And => {
            let a = as_bool(&l.eval_row(row));
            if a == Some(false) {
                return Datum::Bool(false);
            }
            and3(a, as_bool(&r.eval_row(row))).map_or(Datum::Null, Datum::Bool)
        }
        BinOp::Or => {
            let a = as_bool(&l.eval_row(row));
            if a == Some(true) {
                return Datum::Bool(true);
            }
            or3(a, as_bool(&r.eval_row(row))).map_or(Datum::Null, Datum::Bool)
        }
        _ => {
            let (a, b) = (l.eval_row(row), r.eval_row(row));
            if a.is_null() || b.is_null() {
                return Datum::Null;
            }
            if op.is_comparison() {
                return match compare(&a, &b) {
                    Some(o) => Datum::Bool(match op {
                        BinOp::Eq => o.is_eq(),
                        BinOp::NotEq => o.is_ne(),
                        BinOp::Lt => o.is_lt(),
                        BinOp::LtEq => o.is_le(),
                        BinOp::Gt => o.is_gt(),
                        _ => o.is_ge(),
                    }),
                    None => Datum::Null,
                };
            }
            arithmetic(op, ty, a, b)
        }
    }
}

fn arithmetic<'a>(op: BinOp, ty: DataType, a: Datum<'a>, b: Datum<'a>) -> Datum<'a> {
    if op == BinOp::Concat {
        let mut s = a.as_bytes().unwrap_or_default().to_vec();
        s.extend_from_slice(b.as_bytes().unwrap_or_default());
        return Datum::OwnedStr(s.into_boxed_slice());
    }
    match (ty, &a, &b) {
        (DataType::Double, _, _) => {
            let (x, y) = (as_f64(&a).unwrap_or(f64::NAN), as_f64(&b).unwrap_or(f64::NAN));
            Datum::Double(match op {
                BinOp::Add => x + y,
                BinOp::Sub => x - y,
                BinOp::Mul => x * y,
                BinOp::Div => x / y,
                _ => x % y,
            })
        }
        (_, Datum::Int(x), Datum::Int(y)) => {
            let v = match op {
                BinOp::Add => x.wrapping_add(*y),
                BinOp::Sub => x.wrapping_sub(*y),
                BinOp::Mul => x.wrapping_mul(*y),
                BinOp::Div if *y == 0 => return Datum::Null,
                BinOp::Div => x.wrapping_div(*y),
                _ if *y == 0 => return Datum::Null,
                _ => x.wrapping_rem(*y),
            };
            Datum::Int(wrap(v, ty))
        }
        _ => Datum::Null,
    }
}

/// SQL comparison of two non-null values of comparable types; `None` when either is NULL.
pub fn compare(a: &Datum<'_>, b: &Datum<'_>) -> Option<std::cmp::Ordering> {
    match (a, b) {
        (Datum::Null, _) | (_, Datum::Null) => None,
        (Datum::Int(x), Datum::Int(y)) => Some(x.cmp(y)),
        (Datum::Bool(x), Datum::Bool(y)) => Some(x.cmp(y)),
        (Datum::Int(_) | Datum::Double(_), Datum::Int(_) | Datum::Double(_)) => as_f64(a)?.partial_cmp(&as_f64(b)?),
        _ => match (a.as_bytes(), b.as_bytes()) {
            (Some(x), Some(y)) => Some(x.cmp(y)),
            _ => None,
        },
    }
}

/// Converts a value to the (wider) type a CASE or COALESCE result has.
pub fn coerce(d: Datum<'_>, ty: DataType) -> Datum<'_> {
    match (d, ty) {
        (Datum::Int(v), DataType::Double) => Datum::Double(v as f64),
        (d, _) => d,
    }
}

/// CAST. A failed conversion (text that is not a number) is NULL, as Flink's TRY_CAST; Flink's CAST would fail
/// the job.
pub fn cast(d: Datum<'_>, from: DataType, to: DataType) -> Datum<'_> {
    use crate::record::timestamp::{parse_timestamp, write_timestamp};
    if d.is_null() || from == to {
        return d;
    }
    match to {
        DataType::Int | DataType::BigInt | DataType::Timestamp => match d {
            Datum::Int(v) => Datum::Int(wrap(v, to)),
            Datum::Double(v) if v.is_finite() => Datum::Int(wrap(v.trunc() as i64, to)),
            Datum::Bool(b) => Datum::Int(b as i64),
            Datum::Str(_) | Datum::OwnedStr(_) => {
                let s = std::str::from_utf8(d.as_bytes().unwrap_or_default()).unwrap_or("").trim();
                let parsed = if to == DataType::Timestamp { parse_timestamp(s) } else { s.parse::<i64>().ok() };
                parsed.map_or(Datum::Null, |v| Datum::Int(wrap(v, to)))
            }
            _ => Datum::Null,
        },
        DataType::Double => match d {
            Datum::Int(v) => Datum::Double(v as f64),
            Datum::Bool(b) => Datum::Double(b as i64 as f64),
            Datum::Str(_) | Datum::OwnedStr(_) => std::str::from_utf8(d.as_bytes().unwrap_or_default())
                .ok()
                .and_then(|s| s.trim().parse::<f64>().ok())
                .map_or(Datum::Null, Datum::Double),
            other => other,
        },
        DataType::Boolean => match d {
            Datum::Int(v) => Datum::Bool(v != 0),
            Datum::Double(v) => Datum::Bool(v != 0.0),
            Datum::Str(_) | Datum::OwnedStr(_) => {
                match d.as_bytes().unwrap_or_default().to_ascii_lowercase().as_slice() {
                    b"true" => Datum::Bool(true),
                    b"false" => Datum::Bool(false),
                    _ => Datum::Null,
                }
            }
            other => other,
        },
        DataType::Varchar => {
            let mut out = Vec::new();
            match d {
                Datum::Int(v) if from == DataType::Timestamp => write_timestamp(v, &mut out),
                Datum::Int(v) => out.extend_from_slice(v.to_string().as_bytes()),
                Datum::Double(v) => crate::record::json::write_json_double(v, &mut out),
                Datum::Bool(b) => out.extend_from_slice(if b { b"TRUE" } else { b"FALSE" }),
                other => return other,
            }
            Datum::OwnedStr(out.into_boxed_slice())
        }
    }
}

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expr::Column { name, .. } => write!(f, "{name}"),
            Expr::Literal { value, ty } => match value {
                Value::Null => write!(f, "NULL"),
                Value::Int(v) if *ty == DataType::Timestamp => {
                    write!(f, "TIMESTAMP '{}'", crate::record::timestamp::format_timestamp(*v))
                }
                Value::Int(v) => write!(f, "{v}"),
                Value::Double(v) => write!(f, "{v:?}"),
                Value::Bool(v) => write!(f, "{}", if *v { "TRUE" } else { "FALSE" }),
                Value::Str(s) => write!(f, "'{}'", String::from_utf8_lossy(s).replace('\'', "''")),
            },
            Expr::Binary { op, left, right, .. } => write!(f, "({left} {} {right})", op.symbol()),
            Expr::Not(e) => write!(f, "NOT {e}"),
            Expr::Neg(e) => write!(f, "-{e}"),
            Expr::IsNull { expr, negated } => write!(f, "{expr} IS {}NULL", if *negated { "NOT " } else { "" }),
            Expr::Like { expr, pattern, negated } => {
                write!(f, "{expr} {}LIKE '{}'", if *negated { "NOT " } else { "" }, pattern.text)
            }
            Expr::InList { expr, list, negated } => {
                write!(f, "{expr} {}IN (", if *negated { "NOT " } else { "" })?;
                write_list(f, list)?;
                write!(f, ")")
            }
            Expr::Between { expr, low, high, negated } => {
                write!(f, "{expr} {}BETWEEN {low} AND {high}", if *negated { "NOT " } else { "" })
            }
            Expr::Case { operand, whens, otherwise, .. } => {
                write!(f, "CASE")?;
                if let Some(o) = operand {
                    write!(f, " {o}")?;
                }
                for (w, t) in whens {
                    write!(f, " WHEN {w} THEN {t}")?;
                }
                if let Some(e) = otherwise {
                    write!(f, " ELSE {e}")?;
                }
                write!(f, " END")
            }
            Expr::Cast { expr, to } => write!(f, "CAST({expr} AS {to})"),
            Expr::Call { func, args, .. } => {
                write!(f, "{}(", func.name())?;
                write_list(f, args)?;
                write!(f, ")")
            }
        }
    }
}

fn write_list(f: &mut fmt::Formatter<'_>, list: &[Expr]) -> fmt::Result {
    for (i, e) in list.iter().enumerate() {
        if i > 0 {
            write!(f, ", ")?;
        }
        write!(f, "{e}")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_patterns() {
        let cases = [
            ("a%", "abc", true),
            ("a%", "bac", false),
            ("%b%", "abc", true),
            ("_b_", "abc", true),
            ("_b_", "abcd", false),
            ("%", "", true),
            ("a_c", "aéc", true),
            ("100!%", "100%", true),
            ("100!%", "1000", false),
        ];
        for (p, s, want) in cases {
            let pat = LikePattern::compile(p, Some('!')).unwrap();
            assert_eq!(pat.matches(s.as_bytes()), want, "{s:?} LIKE {p:?}");
        }
    }

    #[test]
    fn three_valued_logic() {
        let t = Some(true);
        let f = Some(false);
        assert_eq!(and3(None, f), f);
        assert_eq!(and3(None, t), None);
        assert_eq!(or3(None, t), t);
        assert_eq!(or3(None, f), None);
    }

    #[test]
    fn casts() {
        assert_eq!(cast(Datum::Double(2.9), DataType::Double, DataType::BigInt), Datum::Int(2));
        assert_eq!(cast(Datum::Str(b" 42 "), DataType::Varchar, DataType::BigInt), Datum::Int(42));
        assert_eq!(cast(Datum::Str(b"x"), DataType::Varchar, DataType::BigInt), Datum::Null);
        assert_eq!(cast(Datum::Int(3_000_000_000), DataType::BigInt, DataType::Int), Datum::Int(-1_294_967_296));
        assert_eq!(
            cast(Datum::Int(0), DataType::Timestamp, DataType::Varchar),
            Datum::OwnedStr(Box::from(&b"1970-01-01 00:00:00.000"[..]))
        );
    }
}
