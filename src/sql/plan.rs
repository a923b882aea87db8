//! Planning: one `INSERT INTO sink SELECT ...` statement → a [`JobPlan`] of physical operators.
//!
//! Stateless queries become one [`Calc`] (filter + projection). Windowed aggregations become
//! a pre-aggregation `Calc` (evaluated where the rows are read: keys, then the event time, then aggregate
//! arguments), an exchange by key, a [`WindowAggPlan`] (incremental accumulators per key and slice), and a
//! post-aggregation `Calc` (HAVING + the SELECT list) over the aggregate's rows
//! `[keys..., window_start, window_end, aggregates...]`.
//!
//! Invariant: planning is pure: it reads the statement and the catalog, nothing else.

use std::collections::BTreeMap;
use std::fmt;

use sqlparser::ast::{self, Spanned};

use super::expr::{BinOp, Expr, LikePattern};
use super::function;
use super::physical::{Distribution, Input, JobPlan, Node, NodeOp};
use super::{interval_ms, parse_statement, SqlError, WatermarkSpec};
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
}

/// The one job shape planned so far: a calc over the source's rows (the whole query when stateless, the
/// pre-aggregation otherwise), then optionally a window aggregation keyed by the calc's first columns.
struct Shape {
    calc: Calc,
    window: Option<WindowAggPlan>,
}

impl Shape {
    /// The job's DAG: scan → calc → [hash by keys → window aggregate] → sink.
    fn into_plan(self, source: String, source_schema: &Schema, sink: String) -> JobPlan {
        let mut nodes = vec![Node { op: NodeOp::Scan { source }, inputs: Vec::new(), schema: source_schema.clone() }];
        let calc_schema = self.calc.schema.clone();
        nodes.push(Node {
            op: NodeOp::Calc(self.calc),
            inputs: vec![Input { node: 0, dist: Distribution::Forward }],
            schema: calc_schema,
        });
        let out_schema = match self.window {
            None => nodes[1].schema.clone(),
            Some(w) => {
                let keys = (0..w.n_keys).collect();
                let out = w.post.schema.clone();
                nodes.push(Node {
                    op: NodeOp::WindowAgg(w),
                    inputs: vec![Input { node: 1, dist: Distribution::Hash(keys) }],
                    schema: out.clone(),
                });
                out
            }
        };
        let last = nodes.len() - 1;
        nodes.push(Node {
            op: NodeOp::Sink,
            inputs: vec![Input { node: last, dist: Distribution::Forward }],
            schema: out_schema.clone(),
        });
        JobPlan { sink, nodes, out_schema }
    }
}

/// Plans one job's statement.
pub fn plan_job(sql: &str, tables: &BTreeMap<String, TableInfo>, sinks: &[String]) -> Result<JobPlan, SqlError> {
    let stmt = parse_statement(sql)?;
    let ast::Statement::Insert(insert) = &stmt else {
        return Err(SqlError::of(&stmt, "a job is one INSERT INTO <sink> SELECT ... statement"));
    };
    let sink = match &insert.table {
        ast::TableObject::TableName(name) => unquote(name),
        other => return Err(SqlError::of(&stmt, format!("cannot insert into `{other}`; name a sink"))),
    };
    if !sinks.contains(&sink) {
        return Err(SqlError::of(&insert.table, format!("unknown sink `{sink}`; defined sinks: {}", sinks.join(", "))));
    }
    if !insert.columns.is_empty() {
        return Err(SqlError::of(
            &stmt,
            "INSERT with a column list is not supported; name the columns with AS in the SELECT",
        ));
    }
    let query = insert.source.as_ref().ok_or_else(|| SqlError::of(&stmt, "INSERT needs a SELECT"))?;
    if query.with.is_some() || query.order_by.is_some() || query.limit_clause.is_some() {
        return Err(SqlError::of(query.as_ref(), "WITH, ORDER BY and LIMIT are not supported in a streaming job"));
    }
    let ast::SetExpr::Select(select) = query.body.as_ref() else {
        return Err(SqlError::of(query.as_ref(), "only a plain SELECT is supported (no UNION, VALUES or subquery)"));
    };
    let from = from_clause(select, tables)?;
    let shape = if is_aggregation(select) {
        plan_window_aggregation(select, &from)?
    } else {
        if let Some(tvf) = &from.tvf {
            return Err(SqlError::at(tvf.span, "a window table function needs GROUP BY window_start, window_end"));
        }
        plan_stateless(select, &from)?
    };
    let plan = shape.into_plan(from.source.clone(), &from.info.schema, sink);
    debug_assert!(plan.check().is_ok(), "{:?}", plan.check());
    Ok(plan)
}

struct From<'t> {
    source: String,
    info: &'t TableInfo,
    tvf: Option<Tvf>,
}

struct Tvf {
    spec: WindowSpec,
    time_col: usize,
    span: sqlparser::tokenizer::Span,
}

fn unquote(name: &ast::ObjectName) -> String {
    name.to_string().replace('`', "")
}

fn lookup_table<'t>(
    name: &str,
    node: &impl Spanned,
    tables: &'t BTreeMap<String, TableInfo>,
) -> Result<&'t TableInfo, SqlError> {
    tables.get(name).ok_or_else(|| {
        let known: Vec<&str> = tables.keys().map(String::as_str).collect();
        SqlError::of(node, format!("unknown table `{name}`; defined sources: {}", known.join(", ")))
    })
}

fn from_clause<'t>(select: &ast::Select, tables: &'t BTreeMap<String, TableInfo>) -> Result<From<'t>, SqlError> {
    let [twj] = select.from.as_slice() else {
        return Err(SqlError::of(select, "a query reads exactly one table (joins come later)"));
    };
    if !twj.joins.is_empty() {
        return Err(SqlError::of(&twj.joins[0], "joins are not supported yet"));
    }
    match &twj.relation {
        ast::TableFactor::Table { name, args: None, .. } => {
            let source = unquote(name);
            let info = lookup_table(&source, name, tables)?;
            Ok(From { source, info, tvf: None })
        }
        ast::TableFactor::TableFunction { expr, .. } => window_tvf(expr, tables),
        other => Err(SqlError::of(other, "only a table name or TABLE(TUMBLE|HOP|CUMULATE(...)) may follow FROM")),
    }
}

fn function_args(f: &ast::Function) -> Result<Vec<&ast::Expr>, SqlError> {
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

fn function_name(f: &ast::Function) -> String {
    unquote(&f.name).to_ascii_uppercase()
}

/// `TUMBLE(TABLE t, DESCRIPTOR(ts), size)`, `HOP(TABLE t, DESCRIPTOR(ts), slide, size)`,
/// `CUMULATE(TABLE t, DESCRIPTOR(ts), step, size)`.
fn window_tvf<'t>(expr: &ast::Expr, tables: &'t BTreeMap<String, TableInfo>) -> Result<From<'t>, SqlError> {
    let ast::Expr::Function(f) = expr else {
        return Err(SqlError::of(expr, "TABLE(...) must hold a window function: TUMBLE, HOP or CUMULATE"));
    };
    let name = function_name(f);
    let args = function_args(f)?;
    let usage = match name.as_str() {
        "TUMBLE" => "TUMBLE(TABLE t, DESCRIPTOR(ts), size)",
        "HOP" => "HOP(TABLE t, DESCRIPTOR(ts), slide, size)",
        "CUMULATE" => "CUMULATE(TABLE t, DESCRIPTOR(ts), step, max_size)",
        _ => {
            return Err(SqlError::of(
                expr,
                format!("`{name}` is not a window table function; use TUMBLE, HOP or CUMULATE"),
            ))
        }
    };
    let n_intervals = if name == "TUMBLE" { 1 } else { 2 };
    if args.len() != 2 + n_intervals {
        return Err(SqlError::of(expr, format!("{name} takes {} arguments: {usage}", 2 + n_intervals)));
    }
    let (source, table_node) = match args[0] {
        ast::Expr::Prefixed { prefix, value } if prefix.value == "TABLE" => match value.as_ref() {
            ast::Expr::Identifier(id) => (id.value.clone(), value.as_ref()),
            other => return Err(SqlError::of(other, format!("expected a table name; usage: {usage}"))),
        },
        other => return Err(SqlError::of(other, format!("the first argument is TABLE <name>; usage: {usage}"))),
    };
    let info = lookup_table(&source, table_node, tables)?;
    let time_col = match args[1] {
        ast::Expr::Function(d) if function_name(d) == "DESCRIPTOR" => match function_args(d)?.as_slice() {
            [ast::Expr::Identifier(id)] => time_attribute(&id.value, id.span, &source, info)?,
            _ => return Err(SqlError::of(args[1], "DESCRIPTOR takes one column name")),
        },
        other => {
            return Err(SqlError::of(other, format!("the second argument is DESCRIPTOR(time column); usage: {usage}")))
        }
    };
    let a = interval_ms(args[2])?;
    let spec = match name.as_str() {
        "TUMBLE" => WindowSpec::Tumble { size_ms: a },
        "HOP" => WindowSpec::Hop { slide_ms: a, size_ms: interval_ms(args[3])? },
        _ => WindowSpec::Cumulate { step_ms: a, size_ms: interval_ms(args[3])? },
    };
    spec.validate().map_err(|m| SqlError::of(expr, m))?;
    Ok(From { source, info, tvf: Some(Tvf { spec, time_col, span: expr.span() }) })
}

/// Checks that `name` is the source's event-time column (the one its watermark is declared on).
fn time_attribute(
    name: &str,
    node: sqlparser::tokenizer::Span,
    source: &str,
    info: &TableInfo,
) -> Result<usize, SqlError> {
    let col = info
        .schema
        .index_of(name)
        .ok_or_else(|| SqlError::at(node, format!("unknown column `{name}` in table `{source}`")))?;
    match info.watermark {
        Some(w) if w.column == col => Ok(col),
        Some(w) => Err(SqlError::at(
            node,
            format!("`{name}` is not an event-time column; windows run on `{}`, the watermark column of `{source}`", info.schema.fields[w.column].name),
        )),
        None => Err(SqlError::at(
            node,
            format!("table `{source}` has no watermark, so it has no event time; add watermark = \"{name} - INTERVAL '5' SECOND\" to [sources.{source}]"),
        )),
    }
}

fn is_aggregate_name(name: &str) -> bool {
    matches!(name, "COUNT" | "SUM" | "MIN" | "MAX" | "AVG")
}

fn contains_aggregate(e: &ast::Expr) -> bool {
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

fn is_aggregation(select: &ast::Select) -> bool {
    let grouped = matches!(&select.group_by, ast::GroupByExpr::Expressions(e, _) if !e.is_empty());
    grouped
        || select.having.is_some()
        || select.projection.iter().any(|item| match item {
            ast::SelectItem::UnnamedExpr(e) | ast::SelectItem::ExprWithAlias { expr: e, .. } => contains_aggregate(e),
            _ => false,
        })
}

/// Resolves names while binding an expression.
trait Scope {
    /// Binds `e` wholesale if this scope gives it a meaning of its own (a grouped expression, an aggregate).
    fn resolve(&mut self, e: &ast::Expr) -> Result<Option<Expr>, SqlError>;
    fn column(&mut self, id: &ast::Ident) -> Result<Expr, SqlError>;
}

/// The columns of a source table.
struct TableScope<'s> {
    table: &'s str,
    schema: &'s Schema,
}

impl Scope for TableScope<'_> {
    fn resolve(&mut self, e: &ast::Expr) -> Result<Option<Expr>, SqlError> {
        if let ast::Expr::Function(f) = e {
            let name = function_name(f);
            if is_aggregate_name(&name) {
                return Err(SqlError::of(e, format!("aggregate {name} is not allowed here; aggregates belong in the SELECT list or HAVING of a windowed GROUP BY")));
            }
        }
        Ok(None)
    }

    fn column(&mut self, id: &ast::Ident) -> Result<Expr, SqlError> {
        let idx = self.schema.index_of(&id.value).ok_or_else(|| {
            SqlError::at(
                id.span,
                format!(
                    "unknown column `{}` in table `{}`; its columns are: {}",
                    id.value,
                    self.table,
                    super::column_list(self.schema)
                ),
            )
        })?;
        let f = &self.schema.fields[idx];
        Ok(Expr::Column { idx, name: f.name.clone(), ty: f.ty })
    }
}

/// Binds a scalar expression over the columns of `schema`, named `table` in messages (e.g. a sink's partition
/// key over a job's output rows).
pub fn bind_scalar(text: &str, table: &str, schema: &Schema) -> Result<Expr, SqlError> {
    let e = super::parse_expr(text)?;
    bind(&e, &mut TableScope { table, schema })
}

fn literal(value: Value, ty: DataType) -> Expr {
    Expr::Literal { value, ty }
}

/// Binds an expression, checking types, in a scope.
fn bind(e: &ast::Expr, scope: &mut dyn Scope) -> Result<Expr, SqlError> {
    if let Some(bound) = scope.resolve(e)? {
        return Ok(bound);
    }
    use ast::Expr as A;
    Ok(match e {
        A::Identifier(id) => scope.column(id)?,
        A::CompoundIdentifier(parts) => scope.column(parts.last().expect("a compound identifier has parts"))?,
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

fn expect_type(x: Expr, ty: DataType, node: &impl Spanned) -> Result<Expr, SqlError> {
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
fn output_name(item_expr: &ast::Expr, alias: Option<&ast::Ident>, idx: usize) -> String {
    match (alias, item_expr) {
        (Some(a), _) => a.value.clone(),
        (None, ast::Expr::Identifier(id)) => id.value.clone(),
        (None, ast::Expr::CompoundIdentifier(parts)) => parts.last().map_or(String::new(), |p| p.value.clone()),
        _ => format!("EXPR${idx}"),
    }
}

/// Binds the SELECT list; `*` expands to the table's columns.
fn bind_projection(
    select: &ast::Select,
    scope: &mut dyn Scope,
    star: &Schema,
) -> Result<(Vec<Expr>, Schema), SqlError> {
    let mut exprs = Vec::new();
    let mut fields: Vec<Field> = Vec::new();
    for item in &select.projection {
        let (expr, alias) = match item {
            ast::SelectItem::UnnamedExpr(e) => (e, None),
            ast::SelectItem::ExprWithAlias { expr, alias } => (expr, Some(alias)),
            ast::SelectItem::Wildcard(_) => {
                for (idx, f) in star.fields.iter().enumerate() {
                    exprs.push(Expr::Column { idx, name: f.name.clone(), ty: f.ty });
                    fields.push(f.clone());
                }
                continue;
            }
            other => return Err(SqlError::of(other, format!("`{other}` is not supported in the SELECT list"))),
        };
        let bound = bind(expr, scope)?;
        let name = output_name(expr, alias, exprs.len());
        if fields.iter().any(|f| f.name == name) {
            return Err(SqlError::of(expr, format!("two output columns are named `{name}`; rename one with AS")));
        }
        fields.push(Field { name, ty: bound.ty() });
        exprs.push(bound);
    }
    Ok((exprs, Schema::new(fields)))
}

fn bind_filter(e: &ast::Expr, scope: &mut dyn Scope) -> Result<Expr, SqlError> {
    let bound = bind(e, scope)?;
    expect_type(bound, DataType::Boolean, e)
}

fn plan_stateless(select: &ast::Select, from: &From<'_>) -> Result<Shape, SqlError> {
    let mut scope = TableScope { table: &from.source, schema: &from.info.schema };
    let filter = select.selection.as_ref().map(|w| bind_filter(w, &mut scope)).transpose()?;
    let (exprs, schema) = bind_projection(select, &mut scope, &from.info.schema)?;
    Ok(Shape { calc: Calc { filter, exprs, schema }, window: None })
}

/// How the query names its window's bounds.
enum WindowSyntax {
    /// `window_start`, `window_end`, `window_time` columns of a window TVF.
    Tvf,
    /// `TUMBLE_START(ts, ...)` and friends, with the group window's arguments as written.
    Group { family: &'static str, args: Vec<String> },
}

/// Binding inside an aggregation: grouped expressions, window bounds and aggregates get columns of the
/// aggregation's output; aggregate arguments are bound against the table and collected for the pre-calc.
struct AggScope<'s> {
    table: TableScope<'s>,
    syntax: WindowSyntax,
    /// Grouped expressions as written (normalized text), bound against the table.
    keys: Vec<(String, Expr)>,
    /// Aggregate arguments, bound against the table (pre-calc columns after keys and time).
    args: Vec<(String, Expr)>,
    aggs: Vec<(String, AggCall)>,
}

fn norm(e: &ast::Expr) -> String {
    e.to_string().replace('`', "").to_ascii_lowercase()
}

impl AggScope<'_> {
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
                (Some(self.keys.len() + 1 + pos), Some(ty))
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
                self.aggs.push((text.clone(), AggCall { kind, arg, arg_ty, distinct, ty, text: e.to_string() }));
                self.aggs.len() - 1
            }
        };
        Ok(Expr::Column { idx: self.keys.len() + 2 + pos, name: e.to_string(), ty })
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
            WindowSyntax::Tvf => Err(SqlError::of(e, format!("{name} belongs to GROUP BY {family}(...); with a window table function use window_start and window_end"))),
        }
    }
}

impl Scope for AggScope<'_> {
    fn resolve(&mut self, e: &ast::Expr) -> Result<Option<Expr>, SqlError> {
        let text = norm(e);
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

    fn column(&mut self, id: &ast::Ident) -> Result<Expr, SqlError> {
        match self.table.column(id) {
            Ok(_) => Err(SqlError::at(
                id.span,
                format!(
                    "column `{}` is neither grouped nor aggregated; add it to GROUP BY or use it inside an aggregate",
                    id.value
                ),
            )),
            Err(e) => Err(e),
        }
    }
}

fn plan_window_aggregation(select: &ast::Select, from: &From<'_>) -> Result<Shape, SqlError> {
    let group_by: &[ast::Expr] = match &select.group_by {
        ast::GroupByExpr::Expressions(exprs, mods) if mods.is_empty() => exprs,
        other => return Err(SqlError::of(select, format!("`{other}` is not supported; GROUP BY a window and keys"))),
    };
    let table = TableScope { table: &from.source, schema: &from.info.schema };
    let mut keys_ast: Vec<&ast::Expr> = Vec::new();
    let mut window: Option<(WindowSpec, usize, WindowSyntax)> = None;
    let mut saw_start = false;
    let mut saw_end = false;
    for g in group_by {
        if let Some(tvf) = &from.tvf {
            if let ast::Expr::Identifier(id) = g {
                match id.value.to_ascii_lowercase().as_str() {
                    "window_start" => {
                        saw_start = true;
                        continue;
                    }
                    "window_end" => {
                        saw_end = true;
                        continue;
                    }
                    _ => {}
                }
            }
            let _ = tvf;
        } else if let ast::Expr::Function(f) = g {
            let name = function_name(f);
            if matches!(name.as_str(), "TUMBLE" | "HOP" | "SESSION") {
                if window.is_some() {
                    return Err(SqlError::of(g, "GROUP BY may hold only one window"));
                }
                window = Some(group_window(f, g, &name, from)?);
                continue;
            }
        }
        keys_ast.push(g);
    }
    let (spec, time_col, syntax) = match (&from.tvf, window) {
        (Some(tvf), _) => {
            if !(saw_start && saw_end) {
                return Err(SqlError::of(select, "a window table function aggregation must GROUP BY window_start, window_end"));
            }
            (tvf.spec, tvf.time_col, WindowSyntax::Tvf)
        }
        (None, Some(w)) => w,
        (None, None) => {
            return Err(SqlError::of(select, "GROUP BY without a window needs an updating result, which is not supported yet; group by a window: TUMBLE(ts, INTERVAL '1' MINUTE) or FROM TABLE(TUMBLE(...)) ... GROUP BY window_start, window_end"))
        }
    };
    let mut scope = AggScope { table, syntax, keys: Vec::new(), args: Vec::new(), aggs: Vec::new() };
    for k in keys_ast {
        if contains_aggregate(k) {
            return Err(SqlError::of(k, "aggregates cannot be grouped by"));
        }
        let bound = bind(k, &mut scope.table)?;
        scope.keys.push((norm(k), bound));
    }
    let filter = select.selection.as_ref().map(|w| bind_filter(w, &mut scope.table)).transpose()?;
    let (exprs, out_schema) = bind_projection(select, &mut scope, &Schema::default())?;
    let having = select.having.as_ref().map(|h| bind_filter(h, &mut scope)).transpose()?;

    let n_keys = scope.keys.len();
    // Aggregate arguments were numbered assuming they follow the keys and the time column.
    let mut pre_exprs: Vec<Expr> = scope.keys.iter().map(|(_, e)| e.clone()).collect();
    let tf = &from.info.schema.fields[time_col];
    pre_exprs.push(Expr::Column { idx: time_col, name: tf.name.clone(), ty: tf.ty });
    pre_exprs.extend(scope.args.iter().map(|(_, e)| e.clone()));
    let pre_fields = pre_exprs
        .iter()
        .enumerate()
        .map(|(i, e)| Field { name: if i == n_keys { "$rowtime".to_string() } else { e.to_string() }, ty: e.ty() })
        .collect();
    let mut agg_fields: Vec<Field> =
        scope.keys.iter().map(|(_, e)| Field { name: e.to_string(), ty: e.ty() }).collect();
    agg_fields.push(Field { name: "window_start".into(), ty: DataType::Timestamp });
    agg_fields.push(Field { name: "window_end".into(), ty: DataType::Timestamp });
    agg_fields.extend(scope.aggs.iter().map(|(_, a)| Field { name: a.text.clone(), ty: a.ty }));
    let pre_schema = Schema::new(pre_fields);
    Ok(Shape {
        calc: Calc { filter, exprs: pre_exprs, schema: pre_schema.clone() },
        window: Some(WindowAggPlan {
            spec,
            input: pre_schema,
            n_keys,
            time_col: n_keys,
            aggs: scope.aggs.into_iter().map(|(_, a)| a).collect(),
            output: Schema::new(agg_fields),
            post: Calc { filter: having, exprs, schema: out_schema },
        }),
    })
}

/// `TUMBLE(ts, size)`, `HOP(ts, slide, size)`, `SESSION(ts, gap)` in GROUP BY.
fn group_window(
    f: &ast::Function,
    e: &ast::Expr,
    name: &str,
    from: &From<'_>,
) -> Result<(WindowSpec, usize, WindowSyntax), SqlError> {
    let args = function_args(f)?;
    let usage = match name {
        "TUMBLE" => "TUMBLE(ts, INTERVAL '10' SECOND)",
        "HOP" => "HOP(ts, slide, size), e.g. HOP(ts, INTERVAL '2' SECOND, INTERVAL '10' SECOND)",
        _ => "SESSION(ts, INTERVAL '30' SECOND)",
    };
    let want = if name == "HOP" { 3 } else { 2 };
    if args.len() != want {
        return Err(SqlError::of(e, format!("{name} takes {want} arguments: {usage}")));
    }
    let time_col = match args[0] {
        ast::Expr::Identifier(id) => time_attribute(&id.value, id.span, &from.source, from.info)?,
        other => {
            return Err(SqlError::of(
                other,
                format!("the first argument of {name} is the event-time column; usage: {usage}"),
            ))
        }
    };
    let a = interval_ms(args[1])?;
    let spec = match name {
        "TUMBLE" => WindowSpec::Tumble { size_ms: a },
        "HOP" => WindowSpec::Hop { slide_ms: a, size_ms: interval_ms(args[2])? },
        _ => WindowSpec::Session { gap_ms: a },
    };
    spec.validate().map_err(|m| SqlError::of(e, m))?;
    let family = match name {
        "TUMBLE" => "TUMBLE",
        "HOP" => "HOP",
        _ => "SESSION",
    };
    Ok((spec, time_col, WindowSyntax::Group { family, args: args.into_iter().map(norm).collect() }))
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
        check_err("INSERT INTO out SELECT COUNT(*) FROM bid GROUP BY auction", (1, 17), "GROUP BY without a window");
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
