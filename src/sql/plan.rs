//! Planning: one `INSERT INTO sink SELECT ...` statement → a [`JobPlan`] of physical operators.
//!
//! Stateless queries become one [`Calc`] (filter + projection). Windowed aggregations become
//! a pre-aggregation `Calc` (evaluated where the rows are read: keys, then the event time, then aggregate
//! arguments), an exchange by key, a [`WindowAggPlan`] (incremental accumulators per key and slice), and a
//! post-aggregation `Calc` (HAVING + the SELECT list) over the aggregate's rows
//! `[keys..., window_start, window_end, aggregates...]`.
//!
//! Invariant: planning is pure: it reads the statement and the catalog, nothing else.

use std::fmt;

use sqlparser::ast::{self, Spanned};

use super::expr::{BinOp, Expr, LikePattern};
use super::function;
use super::{interval_ms, SqlError, WatermarkSpec};
use crate::record::types::{parse_type, DataType, Field, Schema, Value};
use crate::window::WindowSpec;

/// What planning knows of a source table.
#[derive(Debug, Clone)]
pub struct TableInfo {
    pub schema: Schema,
    pub watermark: Option<WatermarkSpec>,
}

/// Filter then projection, over one input schema.
#[derive(Debug, Clone)]
pub struct Calc {
    pub filter: Option<Expr>,
    pub exprs: Vec<Expr>,
    pub schema: Schema,
}

impl Calc {
    /// Input columns the calc reads.
    pub fn used_columns(&self, n_input: usize) -> Vec<bool> {
        let mut used = vec![false; n_input];
        for e in self.filter.iter().chain(&self.exprs) {
            mark_columns(e, &mut used);
        }
        used
    }
}

fn mark_columns(e: &Expr, used: &mut [bool]) {
    match e {
        Expr::Column { idx, .. } => used[*idx] = true,
        Expr::Literal { .. } => {}
        Expr::Binary { left, right, .. } => {
            mark_columns(left, used);
            mark_columns(right, used);
        }
        Expr::Not(x) | Expr::Neg(x) | Expr::Cast { expr: x, .. } => mark_columns(x, used),
        Expr::IsNull { expr, .. } | Expr::Like { expr, .. } => mark_columns(expr, used),
        Expr::InList { expr, list, .. } => {
            mark_columns(expr, used);
            list.iter().for_each(|x| mark_columns(x, used));
        }
        Expr::Between { expr, low, high, .. } => {
            for x in [expr, low, high] {
                mark_columns(x, used);
            }
        }
        Expr::Case { operand, whens, otherwise, .. } => {
            operand.iter().chain(otherwise.iter()).for_each(|x| mark_columns(x, used));
            for (w, t) in whens {
                mark_columns(w, used);
                mark_columns(t, used);
            }
        }
        Expr::Call { args, .. } => args.iter().for_each(|x| mark_columns(x, used)),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AggKind {
    Count,
    Sum,
    Min,
    Max,
    Avg,
}

/// One aggregate of a window aggregation.
#[derive(Debug, Clone, PartialEq)]
pub struct AggCall {
    pub kind: AggKind,
    /// The argument's column in the pre-aggregation rows; `None` for COUNT(*).
    pub arg: Option<usize>,
    pub arg_ty: Option<DataType>,
    pub distinct: bool,
    /// The result type (Flink's: COUNT is BIGINT; SUM, MIN, MAX, AVG keep the argument's type).
    pub ty: DataType,
    pub text: String,
    /// The global half of a two-phase aggregation: `arg` is the first column of the partial accumulator a
    /// local aggregation wrote for this aggregate (`operator::accumulator::partial_types`), merged rather
    /// than added.
    pub partial: bool,
}

#[derive(Debug, Clone)]
pub struct WindowAggPlan {
    pub spec: WindowSpec,
    /// Rows arriving at the aggregation: `[keys..., event time, aggregate arguments...]`.
    pub input: Schema,
    pub n_keys: usize,
    pub time_col: usize,
    pub aggs: Vec<AggCall>,
    /// The aggregation's output rows: `[keys..., window_start, window_end, aggregates...]`.
    pub output: Schema,
    /// HAVING and the SELECT list, over `output`.
    pub post: Calc,
    /// The global half of a two-phase aggregation: the input column counting the rows each partial row
    /// stands for, so that late rows are counted as rows.
    pub rows_col: Option<usize>,
    /// Keys that only repeat the bounds of the windows the input rows carry (a cascaded window aggregation
    /// keeps the start as a key): with no other key, there is one group per window.
    pub carried_keys: usize,
}

pub(super) fn unquote(name: &ast::ObjectName) -> String {
    name.to_string().replace('`', "")
}

pub(super) fn function_args(f: &ast::Function) -> Result<Vec<&ast::Expr>, SqlError> {
    match &f.args {
        ast::FunctionArguments::None => Ok(Vec::new()),
        ast::FunctionArguments::List(list) => list
            .args
            .iter()
            .map(|a| match a {
                ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Expr(e)) => Ok(e),
                other => Err(SqlError::of(other, format!("argument `{other}` is not supported here"))),
            })
            .collect(),
        ast::FunctionArguments::Subquery(q) => Err(SqlError::of(q.as_ref(), "subqueries are not supported")),
    }
}

pub(super) fn function_name(f: &ast::Function) -> String {
    unquote(&f.name).to_ascii_uppercase()
}

pub(super) fn is_aggregate_name(name: &str) -> bool {
    matches!(name, "COUNT" | "SUM" | "MIN" | "MAX" | "AVG")
}

pub(super) fn contains_aggregate(e: &ast::Expr) -> bool {
    let mut found = false;
    let _ = ast::visit_expressions(e, |x| {
        if let ast::Expr::Function(f) = x {
            if is_aggregate_name(&function_name(f)) {
                found = true;
                return std::ops::ControlFlow::Break(());
            }
        }
        std::ops::ControlFlow::Continue(())
    });
    found
}

pub(super) fn is_aggregation(select: &ast::Select) -> bool {
    let grouped = matches!(&select.group_by, ast::GroupByExpr::Expressions(e, _) if !e.is_empty());
    grouped
        || select.having.is_some()
        || select.projection.iter().any(|item| match item {
            ast::SelectItem::UnnamedExpr(e) | ast::SelectItem::ExprWithAlias { expr: e, .. } => contains_aggregate(e),
            _ => false,
        })
}

/// Resolves names while binding an expression.
pub(super) trait Scope {
    /// Binds `e` wholesale if this scope gives it a meaning of its own (a grouped expression, an aggregate).
    fn resolve(&mut self, e: &ast::Expr) -> Result<Option<Expr>, SqlError>;
    fn column(&mut self, parts: &[ast::Ident]) -> Result<Expr, SqlError>;
}

/// A column of a relation as queries name it: `qualifier.name` (the table, view or alias it comes from).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColRef {
    pub qualifier: Option<String>,
    pub name: String,
    pub ty: DataType,
}

impl ColRef {
    pub fn of_schema(schema: &Schema, qualifier: Option<&str>) -> Vec<ColRef> {
        schema
            .fields
            .iter()
            .map(|f| ColRef { qualifier: qualifier.map(str::to_string), name: f.name.clone(), ty: f.ty })
            .collect()
    }
}

/// The columns of a relation (a table, a subquery, a join's two sides): names resolve by name, or by
/// `qualifier.name`.
pub struct RelScope<'s> {
    /// How messages name the relation ("table `bid`", "the join of `a` and `b`").
    pub what: String,
    pub cols: &'s [ColRef],
}

impl RelScope<'_> {
    /// The index of the column `parts` names (`name` or `qualifier.name`).
    pub fn lookup(&self, parts: &[ast::Ident]) -> Result<usize, SqlError> {
        let (qualifier, id) = match parts {
            [id] => (None, id),
            [.., q, id] => (Some(q), id),
            [] => return Err(SqlError::nowhere("an empty column name")),
        };
        let matches: Vec<usize> = self
            .cols
            .iter()
            .enumerate()
            .filter(|(_, c)| c.name.eq_ignore_ascii_case(&id.value))
            .filter(|(_, c)| match qualifier {
                None => true,
                Some(q) => c.qualifier.as_deref().is_some_and(|cq| cq.eq_ignore_ascii_case(&q.value)),
            })
            .map(|(i, _)| i)
            .collect();
        match matches.as_slice() {
            [one] => Ok(*one),
            [] => {
                let names: Vec<String> = self
                    .cols
                    .iter()
                    .map(|c| match &c.qualifier {
                        Some(q) if qualifier.is_some() => format!("{q}.{}", c.name),
                        _ => c.name.clone(),
                    })
                    .collect();
                let written = parts.iter().map(|p| p.value.as_str()).collect::<Vec<_>>().join(".");
                Err(SqlError::at(
                    parts[0].span,
                    format!("unknown column `{written}` in {}; its columns are: {}", self.what, names.join(", ")),
                ))
            }
            [first, ..] => {
                // The same column of one relation twice (`SELECT *` of a view naming it twice) is not ambiguous.
                let exact = matches.iter().filter(|&&i| self.cols[i].name == id.value).count();
                if exact == 1 {
                    return Ok(*matches.iter().find(|&&i| self.cols[i].name == id.value).expect("counted"));
                }
                let from: Vec<String> =
                    matches.iter().map(|&i| self.cols[i].qualifier.clone().unwrap_or_else(|| "?".into())).collect();
                let _ = first;
                Err(SqlError::at(
                    id.span,
                    format!(
                        "column `{}` is ambiguous: {} have it; write which one, e.g. {}.{}",
                        id.value,
                        from.join(" and "),
                        from[0],
                        id.value
                    ),
                ))
            }
        }
    }
}

impl Scope for RelScope<'_> {
    fn resolve(&mut self, e: &ast::Expr) -> Result<Option<Expr>, SqlError> {
        if let ast::Expr::Function(f) = e {
            let name = function_name(f);
            if is_aggregate_name(&name) {
                return Err(SqlError::of(e, format!("aggregate {name} is not allowed here; aggregates belong in the SELECT list or HAVING of a GROUP BY")));
            }
        }
        Ok(None)
    }

    fn column(&mut self, parts: &[ast::Ident]) -> Result<Expr, SqlError> {
        let idx = self.lookup(parts)?;
        let c = &self.cols[idx];
        Ok(Expr::Column { idx, name: c.name.clone(), ty: c.ty })
    }
}

/// Binds a scalar expression over the columns of `schema`, named `table` in messages (e.g. a sink's partition
/// key over a job's output rows).
pub fn bind_scalar(text: &str, table: &str, schema: &Schema) -> Result<Expr, SqlError> {
    let e = super::parse_expr(text)?;
    let cols = ColRef::of_schema(schema, Some(table));
    bind(&e, &mut RelScope { what: format!("table `{table}`"), cols: &cols })
}

pub(super) fn literal(value: Value, ty: DataType) -> Expr {
    Expr::Literal { value, ty }
}

/// Binds an expression, checking types, in a scope.
pub(super) fn bind(e: &ast::Expr, scope: &mut dyn Scope) -> Result<Expr, SqlError> {
    if let Some(bound) = scope.resolve(e)? {
        return Ok(bound);
    }
    use ast::Expr as A;
    Ok(match e {
        A::Identifier(id) => scope.column(std::slice::from_ref(id))?,
        A::CompoundIdentifier(parts) => scope.column(parts)?,
        A::Nested(inner) => bind(inner, scope)?,
        A::Value(v) => bind_value(&v.value, e)?,
        A::TypedString(ts) => {
            let text = match &ts.value.value {
                ast::Value::SingleQuotedString(s) => s.clone(),
                other => other.to_string(),
            };
            match parse_type(&ts.data_type.to_string()) {
                Some(DataType::Timestamp) => {
                    let ms = crate::record::timestamp::parse_timestamp(&text).ok_or_else(|| {
                        SqlError::of(e, format!("'{text}' is not a timestamp (yyyy-MM-dd HH:mm:ss[.SSS])"))
                    })?;
                    literal(Value::Int(ms), DataType::Timestamp)
                }
                _ => {
                    return Err(SqlError::of(e, format!("typed literal `{e}` is not supported; only TIMESTAMP '...'")))
                }
            }
        }
        A::BinaryOp { left, op, right } => bind_binary(e, left, op, right, scope)?,
        A::UnaryOp { op, expr } => {
            let x = bind(expr, scope)?;
            match op {
                ast::UnaryOperator::Not => Expr::Not(Box::new(expect_type(x, DataType::Boolean, expr.as_ref())?)),
                ast::UnaryOperator::Minus if x.ty().is_numeric() => Expr::Neg(Box::new(x)),
                ast::UnaryOperator::Plus if x.ty().is_numeric() => x,
                _ => return Err(SqlError::of(e, format!("operator {op} does not apply to {}", x.ty()))),
            }
        }
        A::IsNull(x) => Expr::IsNull { expr: Box::new(bind(x, scope)?), negated: false },
        A::IsNotNull(x) => Expr::IsNull { expr: Box::new(bind(x, scope)?), negated: true },
        A::Like { negated, any: false, expr, pattern, escape_char } => {
            let x = expect_type(bind(expr, scope)?, DataType::Varchar, expr.as_ref())?;
            let text = match pattern.as_ref() {
                A::Value(v) => match &v.value {
                    ast::Value::SingleQuotedString(s) => s.clone(),
                    _ => return Err(SqlError::of(pattern.as_ref(), "a LIKE pattern must be a string literal")),
                },
                other => return Err(SqlError::of(other, "a LIKE pattern must be a string literal")),
            };
            let escape = match escape_char {
                None => None,
                Some(v) => match v.as_ref() {
                    ast::Expr::Value(ast::ValueWithSpan { value: ast::Value::SingleQuotedString(s), .. })
                        if s.chars().count() == 1 =>
                    {
                        s.chars().next()
                    }
                    _ => return Err(SqlError::of(e, "a LIKE ESCAPE is a one-character string")),
                },
            };
            let pattern = LikePattern::compile(&text, escape).map_err(|m| SqlError::of(e, m))?;
            Expr::Like { expr: Box::new(x), pattern, negated: *negated }
        }
        A::In { expr, target: ast::InTarget::List(list), negated, .. } => {
            let x = bind(expr, scope)?;
            let list = list
                .iter()
                .map(|item| {
                    let b = bind(item, scope)?;
                    check_comparable(x.ty(), b.ty(), item)?;
                    Ok(b)
                })
                .collect::<Result<Vec<_>, SqlError>>()?;
            Expr::InList { expr: Box::new(x), list, negated: *negated }
        }
        A::Between { expr, negated, low, high } => {
            let x = bind(expr, scope)?;
            let (l, h) = (bind(low, scope)?, bind(high, scope)?);
            check_comparable(x.ty(), l.ty(), low.as_ref())?;
            check_comparable(x.ty(), h.ty(), high.as_ref())?;
            Expr::Between { expr: Box::new(x), low: Box::new(l), high: Box::new(h), negated: *negated }
        }
        A::Case { operand, conditions, else_result, .. } => {
            let operand = operand.as_ref().map(|o| bind(o, scope)).transpose()?;
            let mut whens = Vec::new();
            for cw in conditions {
                let w = bind(&cw.condition, scope)?;
                match &operand {
                    Some(o) => check_comparable(o.ty(), w.ty(), &cw.condition)?,
                    None => {
                        expect_type(w.clone(), DataType::Boolean, &cw.condition)?;
                    }
                }
                whens.push((w, bind(&cw.result, scope)?));
            }
            let otherwise = else_result.as_ref().map(|x| bind(x, scope)).transpose()?;
            let types: Vec<DataType> = whens
                .iter()
                .map(|(_, t)| t)
                .chain(otherwise.iter())
                .filter(|x| !is_null_literal(x))
                .map(Expr::ty)
                .collect();
            let ty = function::common_type(&types)
                .ok_or_else(|| SqlError::of(e, "the THEN and ELSE results of a CASE must have one type"))?;
            Expr::Case { operand: operand.map(Box::new), whens, otherwise: otherwise.map(Box::new), ty }
        }
        A::Cast { expr, data_type, .. } => {
            let to = parse_type(&data_type.to_string()).ok_or_else(|| {
                SqlError::of(
                    e,
                    format!("cannot CAST to {data_type}; types: BIGINT, INT, DOUBLE, BOOLEAN, VARCHAR, TIMESTAMP(3)"),
                )
            })?;
            Expr::Cast { expr: Box::new(bind(expr, scope)?), to }
        }
        A::Substring { expr, substring_from, substring_for, .. } => {
            let mut args = vec![bind(expr, scope)?];
            args.push(match substring_from {
                Some(f) => bind(f, scope)?,
                None => literal(Value::Int(1), DataType::Int),
            });
            if let Some(f) = substring_for {
                args.push(bind(f, scope)?);
            }
            call(function::lookup("SUBSTRING").expect("known"), args, e)?
        }
        A::Trim { expr, trim_where, trim_what, .. } => {
            if trim_what.is_some() {
                return Err(SqlError::of(e, "TRIM of characters other than spaces is not supported"));
            }
            let name = match trim_where {
                None | Some(ast::TrimWhereField::Both) => "TRIM",
                Some(ast::TrimWhereField::Leading) => "LTRIM",
                Some(ast::TrimWhereField::Trailing) => "RTRIM",
            };
            call(function::lookup(name).expect("known"), vec![bind(expr, scope)?], e)?
        }
        A::Position { expr, r#in } => {
            call(function::lookup("POSITION").expect("known"), vec![bind(expr, scope)?, bind(r#in, scope)?], e)?
        }
        A::Ceil { expr, field: ast::CeilFloorKind::DateTimeField(ast::DateTimeField::NoDateTime) } => {
            call(function::lookup("CEIL").expect("known"), vec![bind(expr, scope)?], e)?
        }
        A::Floor { expr, field: ast::CeilFloorKind::DateTimeField(ast::DateTimeField::NoDateTime) } => {
            call(function::lookup("FLOOR").expect("known"), vec![bind(expr, scope)?], e)?
        }
        A::Function(f) => bind_function(f, e, scope)?,
        A::Interval(_) => {
            return Err(SqlError::of(e, "an interval can only be added to or subtracted from a timestamp"))
        }
        other => return Err(SqlError::of(other, format!("`{other}` is not supported"))),
    })
}

fn is_null_literal(e: &Expr) -> bool {
    matches!(e, Expr::Literal { value: Value::Null, .. })
}

fn bind_value(v: &ast::Value, node: &ast::Expr) -> Result<Expr, SqlError> {
    Ok(match v {
        ast::Value::Number(n, _) => {
            if let Ok(i) = n.parse::<i64>() {
                let ty = if i32::try_from(i).is_ok() { DataType::Int } else { DataType::BigInt };
                literal(Value::Int(i), ty)
            } else {
                let d: f64 = n.parse().map_err(|_| SqlError::of(node, format!("`{n}` is not a number")))?;
                literal(Value::Double(d), DataType::Double)
            }
        }
        ast::Value::SingleQuotedString(s) => literal(Value::Str(s.as_bytes().into()), DataType::Varchar),
        ast::Value::Boolean(b) => literal(Value::Bool(*b), DataType::Boolean),
        ast::Value::Null => literal(Value::Null, DataType::Varchar),
        other => return Err(SqlError::of(node, format!("literal `{other}` is not supported"))),
    })
}

pub(super) fn expect_type(x: Expr, ty: DataType, node: &impl Spanned) -> Result<Expr, SqlError> {
    if x.ty() == ty || is_null_literal(&x) {
        Ok(x)
    } else {
        Err(SqlError::of(node, format!("expected {ty}, but `{x}` is {}", x.ty())))
    }
}

fn check_comparable(a: DataType, b: DataType, node: &impl Spanned) -> Result<(), SqlError> {
    if a == b || (a.is_numeric() && b.is_numeric()) {
        Ok(())
    } else {
        Err(SqlError::of(node, format!("cannot compare {a} with {b}; CAST one side")))
    }
}

fn bind_binary(
    e: &ast::Expr,
    left: &ast::Expr,
    op: &ast::BinaryOperator,
    right: &ast::Expr,
    scope: &mut dyn Scope,
) -> Result<Expr, SqlError> {
    use ast::BinaryOperator as B;
    // Timestamp arithmetic with an interval literal.
    if let (B::Plus | B::Minus, ast::Expr::Interval(_)) = (op, right) {
        let l = expect_type(bind(left, scope)?, DataType::Timestamp, left)?;
        let ms = interval_ms(right)?;
        let op = if matches!(op, B::Plus) { BinOp::Add } else { BinOp::Sub };
        return Ok(Expr::Binary {
            op,
            left: Box::new(l),
            right: Box::new(literal(Value::Int(ms), DataType::BigInt)),
            ty: DataType::Timestamp,
        });
    }
    let (l, r) = (bind(left, scope)?, bind(right, scope)?);
    let op = match op {
        B::Plus => BinOp::Add,
        B::Minus => BinOp::Sub,
        B::Multiply => BinOp::Mul,
        B::Divide => BinOp::Div,
        B::Modulo => BinOp::Mod,
        B::Eq => BinOp::Eq,
        B::NotEq => BinOp::NotEq,
        B::Lt => BinOp::Lt,
        B::LtEq => BinOp::LtEq,
        B::Gt => BinOp::Gt,
        B::GtEq => BinOp::GtEq,
        B::And => BinOp::And,
        B::Or => BinOp::Or,
        B::StringConcat => BinOp::Concat,
        other => return Err(SqlError::of(e, format!("operator {other} is not supported"))),
    };
    binary(op, l, r, e)
}

fn binary(op: BinOp, l: Expr, r: Expr, node: &impl Spanned) -> Result<Expr, SqlError> {
    let (lt, rt) = (l.ty(), r.ty());
    let ty = match op {
        BinOp::And | BinOp::Or => {
            let l = expect_type(l, DataType::Boolean, node)?;
            let r = expect_type(r, DataType::Boolean, node)?;
            return Ok(Expr::Binary { op, left: Box::new(l), right: Box::new(r), ty: DataType::Boolean });
        }
        _ if op.is_comparison() => {
            check_comparable(lt, rt, node)?;
            DataType::Boolean
        }
        BinOp::Concat if lt == DataType::Varchar && rt == DataType::Varchar => DataType::Varchar,
        _ if lt.is_numeric() && rt.is_numeric() => {
            function::common_type(&[lt, rt]).expect("numbers have a common type")
        }
        _ => return Err(SqlError::of(node, format!("operator {op:?} does not apply to {lt} and {rt}"))),
    };
    let ty = if ty == DataType::BigInt && lt == DataType::Int && rt == DataType::Int { DataType::Int } else { ty };
    Ok(Expr::Binary { op, left: Box::new(l), right: Box::new(r), ty })
}

fn call(func: super::expr::Func, args: Vec<Expr>, node: &impl Spanned) -> Result<Expr, SqlError> {
    let arity = function::arity(func);
    if !arity.contains(&args.len()) {
        let want =
            if arity.start() == arity.end() { arity.start().to_string() } else { format!("{} or more", arity.start()) };
        return Err(SqlError::of(node, format!("{} takes {want} argument(s), not {}", func.name(), args.len())));
    }
    let types: Vec<DataType> = args.iter().map(Expr::ty).collect();
    let ty = function::result_type(func, &types).map_err(|m| SqlError::of(node, m))?;
    Ok(Expr::Call { func, args, ty })
}

fn bind_function(f: &ast::Function, e: &ast::Expr, scope: &mut dyn Scope) -> Result<Expr, SqlError> {
    let name = function_name(f);
    let args = function_args(f)?.into_iter().map(|a| bind(a, scope)).collect::<Result<Vec<_>, _>>()?;
    if name == "MOD" {
        let [a, b]: [Expr; 2] = args.try_into().map_err(|_| SqlError::of(e, "MOD takes two arguments"))?;
        if !a.ty().is_integer() || !b.ty().is_integer() {
            return Err(SqlError::of(e, "MOD takes two integers"));
        }
        return binary(BinOp::Mod, a, b, e);
    }
    if matches!(
        name.as_str(),
        "TUMBLE"
            | "HOP"
            | "SESSION"
            | "TUMBLE_START"
            | "TUMBLE_END"
            | "HOP_START"
            | "HOP_END"
            | "SESSION_START"
            | "SESSION_END"
    ) {
        return Err(SqlError::of(
            e,
            format!(
                "{name}(...) is only allowed with a GROUP BY {}(...) window",
                name.split('_').next().unwrap_or(&name)
            ),
        ));
    }
    let func = function::lookup(&name).ok_or_else(|| SqlError::of(e, format!("unknown function {name}")))?;
    call(func, args, e)
}

/// The output name of a SELECT item: its alias, a bare column's name, or Flink's `EXPR$<i>`.
pub(super) fn output_name(item_expr: &ast::Expr, alias: Option<&ast::Ident>, idx: usize) -> String {
    match (alias, item_expr) {
        (Some(a), _) => a.value.clone(),
        (None, ast::Expr::Identifier(id)) => id.value.clone(),
        (None, ast::Expr::CompoundIdentifier(parts)) => parts.last().map_or(String::new(), |p| p.value.clone()),
        _ => format!("EXPR${idx}"),
    }
}

/// Binds the SELECT list; `*` expands to the relation's columns (`star`), `q.*` to those of `q`. Items are
/// bound by `item` (which may map some of them, e.g. `ROW_NUMBER() OVER (...)`, to columns of its own).
pub(super) fn bind_projection(
    select: &ast::Select,
    scope: &mut dyn Scope,
    star: &[ColRef],
) -> Result<(Vec<Expr>, Schema), SqlError> {
    let mut exprs = Vec::new();
    let mut fields: Vec<Field> = Vec::new();
    let add = |exprs: &mut Vec<Expr>, fields: &mut Vec<Field>, name: String, e: Expr, node: &dyn Spanned| {
        if fields.iter().any(|f| f.name.eq_ignore_ascii_case(&name)) {
            return Err(SqlError::at(
                node.span(),
                format!("two output columns are named `{name}`; rename one with AS"),
            ));
        }
        fields.push(Field { name, ty: e.ty() });
        exprs.push(e);
        Ok(())
    };
    for item in &select.projection {
        let (expr, alias) = match item {
            ast::SelectItem::UnnamedExpr(e) => (e, None),
            ast::SelectItem::ExprWithAlias { expr, alias } => (expr, Some(alias)),
            ast::SelectItem::Wildcard(_) | ast::SelectItem::QualifiedWildcard(..) => {
                let qualifier = match item {
                    ast::SelectItem::QualifiedWildcard(ast::SelectItemQualifiedWildcardKind::ObjectName(n), _) => {
                        Some(unquote(n))
                    }
                    ast::SelectItem::QualifiedWildcard(..) => {
                        return Err(SqlError::of(item, format!("`{item}` is not supported in the SELECT list")))
                    }
                    _ => None,
                };
                let mut any = false;
                for (idx, c) in star.iter().enumerate() {
                    let wanted = match &qualifier {
                        None => true,
                        Some(q) => c.qualifier.as_deref().is_some_and(|cq| cq.eq_ignore_ascii_case(q)),
                    };
                    if wanted {
                        any = true;
                        let e = Expr::Column { idx, name: c.name.clone(), ty: c.ty };
                        add(&mut exprs, &mut fields, c.name.clone(), e, item)?;
                    }
                }
                if !any {
                    return Err(SqlError::of(item, format!("`{item}` names no relation of the FROM clause")));
                }
                continue;
            }
            other => return Err(SqlError::of(other, format!("`{other}` is not supported in the SELECT list"))),
        };
        let bound = bind(expr, scope)?;
        let name = output_name(expr, alias, exprs.len());
        add(&mut exprs, &mut fields, name, bound, expr)?;
    }
    Ok((exprs, Schema::new(fields)))
}

pub(super) fn bind_filter(e: &ast::Expr, scope: &mut dyn Scope) -> Result<Expr, SqlError> {
    let bound = bind(e, scope)?;
    expect_type(bound, DataType::Boolean, e)
}

/// How the query names its window's bounds.
pub(super) enum WindowSyntax {
    /// `window_start`, `window_end`, `window_time` columns of a window TVF.
    Tvf,
    /// `TUMBLE_START(ts, ...)` and friends, with the group window's arguments as written.
    Group { family: &'static str, args: Vec<String> },
    /// GROUP BY the window bounds its input rows carry (a cascaded window aggregation): the start stays a grouped
    /// column, the end (its text as written) is the aggregation's window end.
    Cascade { end: String },
    /// No window: an unbounded aggregation.
    Unbounded,
}

/// Binding inside an aggregation: grouped expressions, window bounds and aggregates get columns of the
/// aggregation's output; aggregate arguments are bound against the input relation and collected for the
/// pre-aggregation calc, whose rows are `[keys..., event time (windows only), arguments...]`.
pub(super) struct AggScope<'s> {
    pub table: RelScope<'s>,
    pub syntax: WindowSyntax,
    /// Grouped expressions as written (normalized text), bound against the table.
    pub keys: Vec<(String, Expr)>,
    /// Aggregate arguments, bound against the table (pre-calc columns after keys and time).
    pub args: Vec<(String, Expr)>,
    pub aggs: Vec<(String, AggCall)>,
}

pub(super) fn norm(e: &ast::Expr) -> String {
    e.to_string().replace('`', "").to_ascii_lowercase()
}

impl AggScope<'_> {
    /// Columns of the pre-aggregation rows before the arguments: the keys, and the event time of a window.
    fn arg_base(&self) -> usize {
        self.keys.len() + usize::from(!matches!(self.syntax, WindowSyntax::Unbounded))
    }

    /// Columns of the aggregation's rows before the aggregates: the keys, and a window's start and end.
    fn agg_base(&self) -> usize {
        self.keys.len() + if matches!(self.syntax, WindowSyntax::Unbounded) { 0 } else { 2 }
    }

    fn window_col(&self, end: bool, time: bool) -> Expr {
        let idx = self.keys.len() + usize::from(end);
        let name = if end { "window_end" } else { "window_start" };
        let col = Expr::Column { idx, name: name.to_string(), ty: DataType::Timestamp };
        if time {
            Expr::Binary {
                op: BinOp::Sub,
                left: Box::new(col),
                right: Box::new(literal(Value::Int(1), DataType::BigInt)),
                ty: DataType::Timestamp,
            }
        } else {
            col
        }
    }

    fn aggregate(&mut self, f: &ast::Function, e: &ast::Expr, name: &str) -> Result<Expr, SqlError> {
        let kind = match name {
            "COUNT" => AggKind::Count,
            "SUM" => AggKind::Sum,
            "MIN" => AggKind::Min,
            "MAX" => AggKind::Max,
            _ => AggKind::Avg,
        };
        let list = match &f.args {
            ast::FunctionArguments::List(l) => l,
            _ => return Err(SqlError::of(e, format!("{name} takes one argument"))),
        };
        let distinct = matches!(list.duplicate_treatment, Some(ast::DuplicateTreatment::Distinct));
        if f.filter.is_some() || f.over.is_some() {
            return Err(SqlError::of(e, "FILTER and OVER on aggregates are not supported"));
        }
        let (arg, arg_ty) = match list.args.as_slice() {
            [ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Wildcard)] if kind == AggKind::Count && !distinct => {
                (None, None)
            }
            [ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Expr(a))] => {
                if contains_aggregate(a) {
                    return Err(SqlError::of(a, "aggregates cannot be nested"));
                }
                let bound = bind(a, &mut self.table)?;
                let ty = bound.ty();
                if matches!(kind, AggKind::Sum | AggKind::Avg) && !ty.is_numeric() {
                    return Err(SqlError::of(a, format!("{name} takes a number, not {ty}")));
                }
                let text = bound.to_string();
                let pos = match self.args.iter().position(|(t, _)| *t == text) {
                    Some(p) => p,
                    None => {
                        self.args.push((text, bound));
                        self.args.len() - 1
                    }
                };
                (Some(self.arg_base() + pos), Some(ty))
            }
            _ => {
                return Err(SqlError::of(
                    e,
                    format!("{name} takes one argument{}", if kind == AggKind::Count { " or *" } else { "" }),
                ))
            }
        };
        if distinct && kind != AggKind::Count {
            return Err(SqlError::of(e, format!("{name}(DISTINCT ...) is not supported; only COUNT(DISTINCT ...)")));
        }
        let ty = match (kind, arg_ty) {
            (AggKind::Count, _) => DataType::BigInt,
            (_, Some(t)) => t,
            (_, None) => unreachable!("only COUNT(*) has no argument"),
        };
        let text = norm(e);
        let pos = match self.aggs.iter().position(|(t, _)| *t == text) {
            Some(p) => p,
            None => {
                self.aggs.push((
                    text.clone(),
                    AggCall { kind, arg, arg_ty, distinct, ty, text: e.to_string(), partial: false },
                ));
                self.aggs.len() - 1
            }
        };
        Ok(Expr::Column { idx: self.agg_base() + pos, name: e.to_string(), ty })
    }

    fn window_property(&self, f: &ast::Function, e: &ast::Expr, name: &str) -> Result<Option<Expr>, SqlError> {
        let Some((family, prop)) = name.split_once('_') else { return Ok(None) };
        if !matches!(family, "TUMBLE" | "HOP" | "SESSION") || !matches!(prop, "START" | "END" | "ROWTIME") {
            return Ok(None);
        }
        match &self.syntax {
            WindowSyntax::Group { family: f2, args } if *f2 == family => {
                let given: Vec<String> = function_args(f)?.into_iter().map(norm).collect();
                if given != *args {
                    return Err(SqlError::of(e, format!("{name} must repeat the GROUP BY {family}(...) arguments exactly: {family}({})", args.join(", "))));
                }
                Ok(Some(self.window_col(prop != "START", prop == "ROWTIME")))
            }
            WindowSyntax::Group { family: f2, .. } => {
                Err(SqlError::of(e, format!("{name} does not match the query's {f2}(...) window")))
            }
            WindowSyntax::Tvf | WindowSyntax::Cascade { .. } => Err(SqlError::of(e, format!("{name} belongs to GROUP BY {family}(...); with a window table function use window_start and window_end"))),
            WindowSyntax::Unbounded => Err(SqlError::of(e, format!("{name} needs GROUP BY {family}(...)"))),
        }
    }
}

impl Scope for AggScope<'_> {
    fn resolve(&mut self, e: &ast::Expr) -> Result<Option<Expr>, SqlError> {
        let text = norm(e);
        if matches!(&self.syntax, WindowSyntax::Cascade { end } if *end == text) {
            return Ok(Some(self.window_col(true, false)));
        }
        if let Some(idx) = self.keys.iter().position(|(t, _)| *t == text) {
            let (_, bound) = &self.keys[idx];
            return Ok(Some(Expr::Column { idx, name: bound.to_string(), ty: bound.ty() }));
        }
        match e {
            ast::Expr::Function(f) => {
                let name = function_name(f);
                if is_aggregate_name(&name) {
                    return self.aggregate(f, e, &name).map(Some);
                }
                self.window_property(f, e, &name)
            }
            ast::Expr::Identifier(id) if matches!(self.syntax, WindowSyntax::Tvf) => {
                Ok(match id.value.to_ascii_lowercase().as_str() {
                    "window_start" => Some(self.window_col(false, false)),
                    "window_end" => Some(self.window_col(true, false)),
                    "window_time" => Some(self.window_col(true, true)),
                    _ => None,
                })
            }
            _ => Ok(None),
        }
    }

    fn column(&mut self, parts: &[ast::Ident]) -> Result<Expr, SqlError> {
        match self.table.column(parts) {
            Ok(_) => Err(SqlError::at(
                parts[0].span,
                format!(
                    "column `{}` is neither grouped nor aggregated; add it to GROUP BY or use it inside an aggregate",
                    parts.iter().map(|p| p.value.as_str()).collect::<Vec<_>>().join(".")
                ),
            )),
            Err(e) => Err(e),
        }
    }
}

impl fmt::Display for Calc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(filter) = &self.filter {
            write!(f, "where {filter}; ")?;
        }
        write!(f, "select ")?;
        for (i, (e, field)) in self.exprs.iter().zip(&self.schema.fields).enumerate() {
            if i > 0 {
                write!(f, ", ")?;
            }
            if e.to_string() == field.name {
                write!(f, "{e}")?;
            } else {
                write!(f, "{e} AS {}", field.name)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql::binder::plan_job;
    use crate::sql::physical::{JobPlan, NodeOp};
    use std::collections::BTreeMap;

    fn tables() -> BTreeMap<String, TableInfo> {
        let schema = Schema::parse(crate::config::NEXMARK_BID_SCHEMA).unwrap();
        let watermark = Some(WatermarkSpec { column: 5, delay_ms: 4000 });
        let mut t = BTreeMap::new();
        t.insert("bid".to_string(), TableInfo { schema: schema.clone(), watermark });
        t.insert("raw".to_string(), TableInfo { schema, watermark: None });
        t
    }

    fn plan(sql: &str) -> Result<JobPlan, SqlError> {
        plan_job(sql, &tables(), &["out".to_string()])
    }

    /// Plans `sql` and checks the plan's shape through a compact description.
    fn check(sql: &str, want: &str) {
        let p = plan(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
        p.check().unwrap();
        let calc = p
            .nodes
            .iter()
            .find_map(|n| match &n.op {
                NodeOp::Calc(c) => Some(c),
                _ => None,
            })
            .unwrap();
        let mut got = format!("calc[{}]", calc);
        if let Some(w) = p.window() {
            let aggs: Vec<String> =
                w.aggs.iter().map(|a| format!("{:?}{}:{}", a.kind, if a.distinct { "D" } else { "" }, a.ty)).collect();
            got += &format!(" window[{} keys={} aggs={}] post[{}]", w.spec, w.n_keys, aggs.join(","), w.post);
        }
        let out: Vec<String> = p.out_schema.fields.iter().map(|f| format!("{}:{}", f.name, f.ty)).collect();
        got += &format!(" out[{}]", out.join(","));
        assert_eq!(got, want, "{sql}");
    }

    /// Planning `sql` fails at `line:column` with a message containing `want`.
    fn check_err(sql: &str, at: (u64, u64), want: &str) {
        let e = plan(sql).err().unwrap_or_else(|| panic!("{sql} planned"));
        assert!(e.message.contains(want), "{sql}: {e}");
        assert_eq!((e.line, e.column), at, "{sql}: {e}");
    }

    #[test]
    fn plans_the_nexmark_queries() {
        check(
            "INSERT INTO out SELECT auction, bidder, price, dateTime, extra FROM bid",
            "calc[select auction, bidder, price, dateTime, extra] out[auction:BIGINT,bidder:BIGINT,price:BIGINT,dateTime:TIMESTAMP(3),extra:VARCHAR]",
        );
        check(
            "INSERT INTO out SELECT auction, 0.908 * price AS price FROM bid",
            "calc[select auction, (0.908 * price) AS price] out[auction:BIGINT,price:DOUBLE]",
        );
        check(
            "INSERT INTO out SELECT auction, price FROM bid WHERE MOD(auction, 123) = 0",
            "calc[where ((auction % 123) = 0); select auction, price] out[auction:BIGINT,price:BIGINT]",
        );
        check(
            "INSERT INTO out SELECT auction, COUNT(*) AS n, window_end FROM TABLE(HOP(TABLE bid, DESCRIPTOR(dateTime), INTERVAL '2' SECOND, INTERVAL '10' SECOND)) GROUP BY auction, window_start, window_end",
            "calc[select auction, dateTime AS $rowtime] window[HOP(slide 2 s, size 10 s) keys=1 aggs=Count:BIGINT] post[select auction, COUNT(*) AS n, window_end] out[auction:BIGINT,n:BIGINT,window_end:TIMESTAMP(3)]",
        );
        check(
            "INSERT INTO out SELECT window_start, window_end, MAX(price) AS maxprice FROM TABLE(TUMBLE(TABLE bid, DESCRIPTOR(dateTime), INTERVAL '10' SECOND)) GROUP BY window_start, window_end",
            "calc[select dateTime AS $rowtime, price] window[TUMBLE(size 10 s) keys=0 aggs=Max:BIGINT] post[select window_start, window_end, MAX(price) AS maxprice] out[window_start:TIMESTAMP(3),window_end:TIMESTAMP(3),maxprice:BIGINT]",
        );
    }

    #[test]
    fn plans_group_windows_having_and_aggregates() {
        check(
            "INSERT INTO out SELECT channel, SESSION_START(dateTime, INTERVAL '5' SECOND) AS s, SESSION_END(dateTime, INTERVAL '5' SECOND) AS e, COUNT(DISTINCT bidder) AS d, AVG(price) AS a, SUM(price) + 1 AS s1 FROM bid WHERE price > 10 GROUP BY channel, SESSION(dateTime, INTERVAL '5' SECOND) HAVING COUNT(*) > 2",
            "calc[where (price > 10); select channel, dateTime AS $rowtime, bidder, price] window[SESSION(gap 5 s) keys=1 aggs=CountD:BIGINT,Avg:BIGINT,Sum:BIGINT,Count:BIGINT] post[where (COUNT(*) > 2); select channel, window_start AS s, window_end AS e, COUNT(DISTINCT bidder) AS d, AVG(price) AS a, (SUM(price) + 1) AS s1] out[channel:VARCHAR,s:TIMESTAMP(3),e:TIMESTAMP(3),d:BIGINT,a:BIGINT,s1:BIGINT]",
        );
        check(
            "INSERT INTO out SELECT HOP_END(dateTime, INTERVAL '1' SECOND, INTERVAL '3' SECOND), MIN(url) FROM bid GROUP BY HOP(dateTime, INTERVAL '1' SECOND, INTERVAL '3' SECOND)",
            "calc[select dateTime AS $rowtime, url] window[HOP(slide 1 s, size 3 s) keys=0 aggs=Min:VARCHAR] post[select window_end AS EXPR$0, MIN(url) AS EXPR$1] out[EXPR$0:TIMESTAMP(3),EXPR$1:VARCHAR]",
        );
        check(
            "INSERT INTO out SELECT bidder % 10 AS b, window_start, COUNT(price) AS n FROM TABLE(CUMULATE(TABLE bid, DESCRIPTOR(dateTime), INTERVAL '1' SECOND, INTERVAL '4' SECOND)) GROUP BY bidder % 10, window_start, window_end",
            "calc[select (bidder % 10), dateTime AS $rowtime, price] window[CUMULATE(step 1 s, max size 4 s) keys=1 aggs=Count:BIGINT] post[select (bidder % 10) AS b, window_start, COUNT(price) AS n] out[b:BIGINT,window_start:TIMESTAMP(3),n:BIGINT]",
        );
    }

    #[test]
    fn plans_scalar_expressions() {
        check(
            "INSERT INTO out SELECT CASE WHEN price > 100 THEN 'hi' ELSE 'lo' END AS c, CAST(price AS DOUBLE) / 2 AS h, UPPER(channel) AS u, url LIKE '%item%' AS l, auction IN (1000, 1001) AS i, price BETWEEN 1 AND 5 AS b, dateTime - INTERVAL '1' MINUTE AS t, extra IS NOT NULL AS nn FROM bid",
            "calc[select CASE WHEN (price > 100) THEN 'hi' ELSE 'lo' END AS c, (CAST(price AS DOUBLE) / 2) AS h, UPPER(channel) AS u, url LIKE '%item%' AS l, auction IN (1000, 1001) AS i, price BETWEEN 1 AND 5 AS b, (dateTime - 60000) AS t, extra IS NOT NULL AS nn] out[c:VARCHAR,h:DOUBLE,u:VARCHAR,l:BOOLEAN,i:BOOLEAN,b:BOOLEAN,t:TIMESTAMP(3),nn:BOOLEAN]",
        );
        check("INSERT INTO out SELECT * FROM bid WHERE `price` > 5", "calc[where (price > 5); select auction, bidder, price, channel, url, dateTime, extra] out[auction:BIGINT,bidder:BIGINT,price:BIGINT,channel:VARCHAR,url:VARCHAR,dateTime:TIMESTAMP(3),extra:VARCHAR]");
    }

    #[test]
    fn rejects_bad_queries_at_their_position() {
        check_err("INSERT INTO out SELECT nope FROM bid", (1, 24), "unknown column `nope`");
        check_err("INSERT INTO nowhere SELECT price FROM bid", (1, 13), "unknown sink `nowhere`");
        check_err("INSERT INTO out SELECT price FROM bids", (1, 35), "unknown table `bids`");
        check_err("INSERT INTO out\nSELECT price + 'x' FROM bid", (2, 8), "does not apply to BIGINT and VARCHAR");
        check_err("INSERT INTO out SELECT price FROM bid WHERE price", (1, 45), "expected BOOLEAN");
        check_err(
            "INSERT INTO out SELECT price, COUNT(*) FROM bid GROUP BY TUMBLE(dateTime, INTERVAL '1' SECOND)",
            (1, 24),
            "neither grouped nor aggregated",
        );
        check_err(
            "INSERT INTO out SELECT COUNT(*) FROM raw GROUP BY TUMBLE(dateTime, INTERVAL '1' SECOND)",
            (1, 58),
            "has no watermark",
        );
        check_err(
            "INSERT INTO out SELECT TUMBLE_START(dateTime, INTERVAL '2' SECOND) FROM bid GROUP BY TUMBLE(dateTime, INTERVAL '1' SECOND)",
            (1, 24),
            "must repeat the GROUP BY TUMBLE",
        );
        check_err(
            "INSERT INTO out SELECT COUNT(*) FROM TABLE(TUMBLE(TABLE bid, DESCRIPTOR(price), INTERVAL '1' SECOND)) GROUP BY window_start, window_end",
            (1, 73),
            "not an event-time column",
        );
        check_err("INSERT INTO out SELECT price FROM bid WHERE COUNT(*) > 1", (1, 45), "not allowed here");
        check_err("INSERT INTO out SELECT a,, b FROM bid", (1, 26), "syntax error");
    }
}
