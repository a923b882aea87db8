//! Scalar functions: the common string and math functions of Flink SQL. Any NULL argument gives NULL,
//! except in COALESCE and IF.

use super::expr::{as_f64, coerce, Expr, Func};
use crate::record::types::{DataType, Datum};

/// Argument counts each function accepts, checked when the query is planned.
pub fn arity(func: Func) -> std::ops::RangeInclusive<usize> {
    match func {
        Func::Upper | Func::Lower | Func::CharLength | Func::Trim | Func::Ltrim | Func::Rtrim => 1..=1,
        Func::Abs | Func::Floor | Func::Ceil | Func::Sqrt | Func::Exp | Func::Ln | Func::Log10 | Func::Sign => 1..=1,
        Func::Round => 1..=2,
        Func::Power | Func::Position => 2..=2,
        Func::Substring => 2..=3,
        Func::Replace | Func::If => 3..=3,
        Func::Concat | Func::Coalesce => 1..=usize::MAX,
    }
}

/// Looks a function up by its SQL name.
pub fn lookup(name: &str) -> Option<Func> {
    Some(match name.to_ascii_uppercase().as_str() {
        "UPPER" => Func::Upper,
        "LOWER" => Func::Lower,
        "CHAR_LENGTH" | "CHARACTER_LENGTH" => Func::CharLength,
        "CONCAT" => Func::Concat,
        "SUBSTRING" | "SUBSTR" => Func::Substring,
        "TRIM" => Func::Trim,
        "LTRIM" => Func::Ltrim,
        "RTRIM" => Func::Rtrim,
        "REPLACE" => Func::Replace,
        "POSITION" => Func::Position,
        "ABS" => Func::Abs,
        "FLOOR" => Func::Floor,
        "CEIL" | "CEILING" => Func::Ceil,
        "ROUND" => Func::Round,
        "SQRT" => Func::Sqrt,
        "POWER" | "POW" => Func::Power,
        "EXP" => Func::Exp,
        "LN" => Func::Ln,
        "LOG10" => Func::Log10,
        "SIGN" => Func::Sign,
        "COALESCE" => Func::Coalesce,
        "IF" => Func::If,
        _ => return None,
    })
}

/// The result type of a call, or why the arguments don't fit.
pub fn result_type(func: Func, args: &[DataType]) -> Result<DataType, String> {
    let numeric = |i: usize| -> Result<DataType, String> {
        if args[i].is_numeric() {
            Ok(args[i])
        } else {
            Err(format!("{} takes a number, not {}", func.name(), args[i]))
        }
    };
    let string = |i: usize| -> Result<(), String> {
        if args[i] == DataType::Varchar {
            Ok(())
        } else {
            Err(format!("{} takes a string, not {}; CAST it to VARCHAR first", func.name(), args[i]))
        }
    };
    Ok(match func {
        Func::Upper | Func::Lower | Func::Trim | Func::Ltrim | Func::Rtrim => {
            string(0)?;
            DataType::Varchar
        }
        Func::Replace => {
            (0..3).try_for_each(string)?;
            DataType::Varchar
        }
        Func::Concat => {
            (0..args.len()).try_for_each(string)?;
            DataType::Varchar
        }
        Func::CharLength => {
            string(0)?;
            DataType::Int
        }
        Func::Position => {
            (0..2).try_for_each(string)?;
            DataType::Int
        }
        Func::Substring => {
            string(0)?;
            for i in 1..args.len() {
                if !args[i].is_integer() {
                    return Err(format!("SUBSTRING positions are integers, not {}", args[i]));
                }
            }
            DataType::Varchar
        }
        Func::Abs | Func::Floor | Func::Ceil => numeric(0)?,
        Func::Sign => numeric(0)?,
        Func::Round => {
            if args.len() == 2 && !args[1].is_integer() {
                return Err("ROUND's second argument is an integer number of digits".into());
            }
            numeric(0)?
        }
        Func::Sqrt | Func::Exp | Func::Ln | Func::Log10 => {
            numeric(0)?;
            DataType::Double
        }
        Func::Power => {
            numeric(0)?;
            numeric(1)?;
            DataType::Double
        }
        Func::Coalesce => common_type(args).ok_or("COALESCE arguments must all have one type")?,
        Func::If => {
            if args[0] != DataType::Boolean {
                return Err(format!("IF's condition must be BOOLEAN, not {}", args[0]));
            }
            common_type(&args[1..]).ok_or("IF's two results must have one type")?
        }
    })
}

/// The type values of these types can all be converted to without loss of meaning (numbers widen).
pub fn common_type(types: &[DataType]) -> Option<DataType> {
    let mut it = types.iter().copied();
    let mut acc = it.next()?;
    for t in it {
        acc = match (acc, t) {
            (a, b) if a == b => a,
            (a, b) if a.is_numeric() && b.is_numeric() => {
                if a == DataType::Double || b == DataType::Double {
                    DataType::Double
                } else {
                    DataType::BigInt
                }
            }
            _ => return None,
        };
    }
    Some(acc)
}

fn text<'d>(d: &'d Datum<'_>) -> &'d str {
    // Batches hold valid UTF-8 only (checked at ingress), so this never falls back.
    std::str::from_utf8(d.as_bytes().unwrap_or_default()).unwrap_or_default()
}

fn owned(s: String) -> Datum<'static> {
    Datum::OwnedStr(s.into_bytes().into_boxed_slice())
}

/// Evaluates a call whose argument types were checked by [`result_type`].
pub fn call<'a, R: super::expr::RowRef<'a>>(func: Func, ty: DataType, args: &'a [Expr], r: R) -> Datum<'a> {
    match func {
        Func::Coalesce => {
            return args.iter().map(|a| a.eval_row(r)).find(|d| !d.is_null()).map_or(Datum::Null, |d| coerce(d, ty))
        }
        Func::If => {
            let pick = if args[0].eval_row(r) == Datum::Bool(true) { &args[1] } else { &args[2] };
            return coerce(pick.eval_row(r), ty);
        }
        _ => {}
    }
    let vals: smallvec_lite::Args<'a> = args.iter().map(|a| a.eval_row(r)).collect();
    if vals.iter().any(Datum::is_null) {
        return Datum::Null;
    }
    let num = |i: usize| as_f64(&vals[i]).unwrap_or(f64::NAN);
    match func {
        Func::Upper => owned(text(&vals[0]).to_uppercase()),
        Func::Lower => owned(text(&vals[0]).to_lowercase()),
        Func::Trim => owned(text(&vals[0]).trim_matches(' ').to_string()),
        Func::Ltrim => owned(text(&vals[0]).trim_start_matches(' ').to_string()),
        Func::Rtrim => owned(text(&vals[0]).trim_end_matches(' ').to_string()),
        Func::Replace => owned(text(&vals[0]).replace(text(&vals[1]), text(&vals[2]))),
        Func::Concat => owned(vals.iter().map(text).collect()),
        Func::CharLength => Datum::Int(text(&vals[0]).chars().count() as i64),
        Func::Position => {
            let (needle, hay) = (text(&vals[0]), text(&vals[1]));
            Datum::Int(hay.find(needle).map_or(0, |b| hay[..b].chars().count() as i64 + 1))
        }
        Func::Substring => {
            let s = text(&vals[0]);
            let Datum::Int(start) = vals[1] else { return Datum::Null };
            let len = match vals.get(2) {
                Some(Datum::Int(l)) if *l < 0 => return Datum::Null,
                Some(Datum::Int(l)) => Some(*l as usize),
                _ => None,
            };
            // SQL positions are 1-based; a start before 1 eats into the length, as in Flink.
            let n = s.chars().count() as i64;
            let from = if start > 0 {
                start - 1
            } else if start < 0 {
                (n + start).max(0)
            } else {
                0
            };
            let it = s.chars().skip(from as usize);
            owned(match len {
                Some(l) => it.take(l).collect(),
                None => it.collect(),
            })
        }
        Func::Abs => match vals[0] {
            Datum::Int(v) => Datum::Int(v.wrapping_abs()),
            _ => Datum::Double(num(0).abs()),
        },
        Func::Sign => match vals[0] {
            Datum::Int(v) => Datum::Int(v.signum()),
            _ => Datum::Double(if num(0) == 0.0 { 0.0 } else { num(0).signum() }),
        },
        Func::Floor => match vals[0] {
            Datum::Int(v) => Datum::Int(v),
            _ => Datum::Double(num(0).floor()),
        },
        Func::Ceil => match vals[0] {
            Datum::Int(v) => Datum::Int(v),
            _ => Datum::Double(num(0).ceil()),
        },
        Func::Round => {
            let digits = match vals.get(1) {
                Some(Datum::Int(d)) => *d as i32,
                _ => 0,
            };
            match vals[0] {
                Datum::Int(v) if digits >= 0 => Datum::Int(v),
                Datum::Int(v) => {
                    let m = 10i64.saturating_pow((-digits) as u32);
                    Datum::Int(((v as f64 / m as f64).round() as i64).wrapping_mul(m))
                }
                _ => {
                    let m = 10f64.powi(digits);
                    Datum::Double((num(0) * m).round() / m)
                }
            }
        }
        Func::Sqrt => Datum::Double(num(0).sqrt()),
        Func::Exp => Datum::Double(num(0).exp()),
        Func::Ln => Datum::Double(num(0).ln()),
        Func::Log10 => Datum::Double(num(0).log10()),
        Func::Power => Datum::Double(num(0).powf(num(1))),
        Func::Coalesce | Func::If => unreachable!("handled above"),
    }
}

/// Function arguments without a heap allocation for the common small counts.
mod smallvec_lite {
    use crate::record::types::Datum;

    pub struct Args<'a> {
        inline: [Datum<'a>; 3],
        len: usize,
        spill: Vec<Datum<'a>>,
    }

    impl<'a> FromIterator<Datum<'a>> for Args<'a> {
        fn from_iter<I: IntoIterator<Item = Datum<'a>>>(iter: I) -> Self {
            let mut args = Args { inline: [Datum::Null, Datum::Null, Datum::Null], len: 0, spill: Vec::new() };
            for d in iter {
                if args.len < 3 && args.spill.is_empty() {
                    args.inline[args.len] = d;
                    args.len += 1;
                } else {
                    if args.spill.is_empty() {
                        args.spill.extend(args.inline.iter().cloned());
                    }
                    args.spill.push(d);
                }
            }
            args
        }
    }

    impl<'a> std::ops::Deref for Args<'a> {
        type Target = [Datum<'a>];
        fn deref(&self) -> &[Datum<'a>] {
            if self.spill.is_empty() {
                &self.inline[..self.len]
            } else {
                &self.spill
            }
        }
    }
}
