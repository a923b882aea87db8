//! Planning a job: one `INSERT INTO sink <query>` statement → a logical plan (`logical.rs`) → the physical
//! DAG (`physical.rs`).
//!
//! The binder walks the query: `WITH` (CTEs), views of the config, subqueries in FROM, window table
//! functions, joins (regular, interval, window), `WHERE`, `GROUP BY` (window or unbounded), `HAVING`,
//! `ROW_NUMBER() OVER (...)` filtered in the enclosing query (Top-N, deduplication, window Top-N), `UNION ALL`,
//! and the SELECT list. Each relation it builds knows its columns (with the names queries qualify them by),
//! its event-time attribute, and whether it is a changelog; operators that need append-only input or event
//! time check it here, with the position of the SQL that asks for it.
//!
//! A window table function is kept *pending* until what reads it is known: an aggregation grouped by
//! `window_start, window_end` becomes a window aggregate, a `ROW_NUMBER()` partitioned by them a window
//! Top-N, a join on them a window join; anything else materializes it (each row once per window).
//!
//! Invariant: pure; every error has the position of the SQL that caused it.

use std::collections::BTreeMap;

use sqlparser::ast::{self, Spanned};

use super::expr::{BinOp, Expr};
use super::logical::{lower, LNode, LOp, WindowCols};
use super::ops::{
    GroupAggPlan, IntervalJoinPlan, JoinKind, JoinPlan, JoinSides, RankKind, RankPlan, RankTime, WindowJoinPlan,
    WindowRankPlan,
};
use super::physical::JobPlan;
use super::plan::{
    bind, bind_filter, bind_projection, contains_aggregate, function_args, function_name, is_aggregation, literal,
    norm, unquote, AggScope, Calc, ColRef, RelScope, Scope, TableInfo, WindowAggPlan, WindowSyntax,
};
use super::two_phase::AggPhaseStrategy;
use super::{interval_ms, parse_statement, SqlError};
use crate::record::types::{DataType, Field, Schema, Value};
use crate::window::WindowSpec;

/// What a job's SQL may refer to.
pub struct Catalog<'c> {
    pub tables: &'c BTreeMap<String, TableInfo>,
    /// `[[views]]`: name → the SELECT that defines it.
    pub views: &'c BTreeMap<String, String>,
    pub sinks: &'c [String],
    /// `[runtime] state_ttl` (or the job's own): how long unbounded state lives without being written.
    pub state_ttl_ms: Option<i64>,
    /// `[runtime] agg_phase_strategy`: which aggregations run in two phases.
    pub agg_phases: AggPhaseStrategy,
}

/// A planned job and what planning noticed.
pub struct Planned {
    pub plan: JobPlan,
    /// Things that run but that a user should know (e.g. a regular join without a state TTL keeps every row
    /// forever), with their SQL positions.
    pub warnings: Vec<String>,
}

/// Plans one job's statement with only source tables (no views, no state TTL).
pub fn plan_job(sql: &str, tables: &BTreeMap<String, TableInfo>, sinks: &[String]) -> Result<JobPlan, SqlError> {
    let views = BTreeMap::new();
    plan_job_with(
        sql,
        &Catalog { tables, views: &views, sinks, state_ttl_ms: None, agg_phases: AggPhaseStrategy::Auto },
    )
    .map(|p| p.plan)
}

/// Plans one job's statement.
pub fn plan_job_with(sql: &str, cat: &Catalog<'_>) -> Result<Planned, SqlError> {
    let stmt = parse_statement(sql)?;
    let ast::Statement::Insert(insert) = &stmt else {
        return Err(SqlError::of(&stmt, "a job is one INSERT INTO <sink> SELECT ... statement"));
    };
    let sink = match &insert.table {
        ast::TableObject::TableName(name) => unquote(name),
        other => return Err(SqlError::of(&stmt, format!("cannot insert into `{other}`; name a sink"))),
    };
    if !cat.sinks.contains(&sink) {
        return Err(SqlError::of(
            &insert.table,
            format!("unknown sink `{sink}`; defined sinks: {}", cat.sinks.join(", ")),
        ));
    }
    if !insert.columns.is_empty() {
        return Err(SqlError::of(
            &stmt,
            "INSERT with a column list is not supported; name the columns with AS in the SELECT",
        ));
    }
    let query = insert.source.as_ref().ok_or_else(|| SqlError::of(&stmt, "INSERT needs a SELECT"))?;
    let mut b = Binder { cat, ctes: Vec::new(), views_open: Vec::new(), warnings: Vec::new(), ranks: Vec::new() };
    let rel = b.query(query)?;
    let rel = materialize(rel);
    if let Some(e) = b.unlimited_rank(&rel.node) {
        return Err(e);
    }
    let plan = lower(rel.node, sink, cat.agg_phases);
    debug_assert!(plan.check().is_ok(), "{:?}", plan.check());
    Ok(Planned { plan, warnings: b.warnings })
}

/// A relation being planned: the logical node producing it, its columns as queries name them, and a window
/// table function not yet resolved (its columns are the input's, then `window_start, window_end,
/// window_time`).
#[derive(Debug, Clone)]
struct Rel {
    node: LNode,
    cols: Vec<ColRef>,
    window: Option<Pending>,
}

#[derive(Debug, Clone, Copy)]
struct Pending {
    spec: WindowSpec,
    time_col: usize,
}

const WINDOW_COLS: [&str; 3] = ["window_start", "window_end", "window_time"];

/// Each row once per window it is in: a pending window table function made real.
fn materialize(rel: Rel) -> Rel {
    let Some(p) = rel.window else { return rel };
    let width = rel.node.schema.len();
    let mut fields = rel.node.schema.fields.clone();
    fields.extend(WINDOW_COLS.iter().map(|n| Field { name: n.to_string(), ty: DataType::Timestamp }));
    let node = LNode {
        op: LOp::WindowAssign { spec: p.spec, time_col: p.time_col },
        inputs: vec![rel.node],
        schema: Schema::new(fields),
        rowtime: Some(width + 2),
        updating: None,
        window: Some(WindowCols { spec: p.spec, start: width, end: width + 1 }),
    };
    Rel { node, cols: rel.cols, window: None }
}

/// Gives a relation's columns the qualifier `q` (a table alias, a view's or CTE's name).
fn requalify(mut rel: Rel, q: &str) -> Rel {
    for c in &mut rel.cols {
        c.qualifier = Some(q.to_string());
    }
    rel
}

/// A calc over `rel`.
fn calc_over(rel: LNode, filter: Option<Expr>, exprs: Vec<Expr>, schema: Schema) -> LNode {
    let rowtime = rel.rowtime.and_then(|t| exprs.iter().position(|e| e.as_column() == Some(t)));
    let updating = rel.updating.clone();
    let window = project_window(rel.window, &exprs);
    LNode {
        op: LOp::Calc(Calc { filter, exprs, schema: schema.clone() }),
        inputs: vec![rel],
        schema,
        rowtime,
        updating,
        window,
    }
}

/// Where a projection's rows carry their window: where it passes the window's start and end on as they are.
fn project_window(w: Option<WindowCols>, exprs: &[Expr]) -> Option<WindowCols> {
    let w = w?;
    let at = |c: usize| exprs.iter().position(|e| e.as_column() == Some(c));
    Some(WindowCols { spec: w.spec, start: at(w.start)?, end: at(w.end)? })
}

/// A filter over `rel` (its columns unchanged).
fn filter_over(rel: LNode, filter: Expr) -> LNode {
    let exprs = rel
        .schema
        .fields
        .iter()
        .enumerate()
        .map(|(idx, f)| Expr::Column { idx, name: f.name.clone(), ty: f.ty })
        .collect();
    let schema = rel.schema.clone();
    calc_over(rel, Some(filter), exprs, schema)
}

fn and_all(conds: Vec<Expr>) -> Option<Expr> {
    conds.into_iter().reduce(Expr::and)
}

/// The conjuncts of a condition (`a AND b AND c` → a, b, c).
fn split_and(e: &ast::Expr) -> Vec<&ast::Expr> {
    match e {
        ast::Expr::BinaryOp { left, op: ast::BinaryOperator::And, right } => {
            let mut v = split_and(left);
            v.extend(split_and(right));
            v
        }
        ast::Expr::Nested(inner) => split_and(inner),
        other => vec![other],
    }
}

fn where_of(e: &impl Spanned) -> String {
    let s = e.span().start;
    if s.line == 0 {
        String::new()
    } else {
        format!(" (line {}, column {})", s.line, s.column)
    }
}

struct Binder<'c> {
    cat: &'c Catalog<'c>,
    /// The CTEs in scope, innermost last.
    ctes: Vec<(String, Rel)>,
    /// Views being bound (a view naming itself, directly or not, is an error).
    views_open: Vec<String>,
    warnings: Vec<String>,
    /// `ROW_NUMBER()`s bound so far, with where they are: one never filtered by a limit is an error.
    ranks: Vec<SqlError>,
}

/// Which side(s) of a join a condition reads.
enum Side {
    Left(Expr),
    Right(Expr),
    Both(Expr),
}

impl Binder<'_> {
    fn query(&mut self, q: &ast::Query) -> Result<Rel, SqlError> {
        let depth = self.ctes.len();
        if let Some(with) = &q.with {
            if with.recursive {
                return Err(SqlError::of(with, "WITH RECURSIVE is not supported"));
            }
            for cte in &with.cte_tables {
                let name = cte.alias.name.value.clone();
                let rel = self.query(&cte.query)?;
                let rel = self.rename_columns(requalify(rel, &name), &cte.alias.columns, &cte.alias)?;
                self.ctes.push((name, rel));
            }
        }
        if let Some(order) = &q.order_by {
            return Err(SqlError::of(
                order,
                "Sort on a non-time-attribute field is not supported: a streaming result has no order (ORDER BY \
                 belongs in ROW_NUMBER() OVER (...) for a Top-N)",
            ));
        }
        if let Some(limit) = &q.limit_clause {
            return Err(SqlError::of(
                limit,
                "LIMIT is not supported on a streaming result; rank the rows with ROW_NUMBER() OVER (PARTITION BY \
                 ... ORDER BY ...) and filter on it (Top-N)",
            ));
        }
        let rel = self.set_expr(&q.body);
        self.ctes.truncate(depth);
        rel
    }

    fn set_expr(&mut self, body: &ast::SetExpr) -> Result<Rel, SqlError> {
        match body {
            ast::SetExpr::Select(s) => self.select(s),
            ast::SetExpr::Query(q) => self.query(q),
            ast::SetExpr::SetOperation { op: ast::SetOperator::Union, set_quantifier, left, right } => {
                if !matches!(set_quantifier, ast::SetQuantifier::All) {
                    return Err(SqlError::of(
                        body,
                        "UNION without ALL (distinct rows) is not supported; use UNION ALL, or GROUP BY the columns",
                    ));
                }
                let (l, r) = (self.set_expr(left)?, self.set_expr(right)?);
                union(l, r, body)
            }
            other => Err(SqlError::of(other, format!("`{other}` is not supported; use SELECT or UNION ALL"))),
        }
    }

    fn rename_columns(
        &self,
        mut rel: Rel,
        names: &[ast::TableAliasColumnDef],
        node: &impl Spanned,
    ) -> Result<Rel, SqlError> {
        if names.is_empty() {
            return Ok(rel);
        }
        let rel_width = rel.cols.len() - if rel.window.is_some() { 3 } else { 0 };
        if names.len() != rel_width {
            return Err(SqlError::of(node, format!("{} column names for {rel_width} columns", names.len())));
        }
        for (c, n) in rel.cols.iter_mut().zip(names) {
            c.name = n.name.value.clone();
        }
        let mut fields = rel.node.schema.fields.clone();
        for (f, n) in fields.iter_mut().zip(names) {
            f.name = n.name.value.clone();
        }
        rel.node.schema = Schema::new(fields);
        Ok(rel)
    }

    // ----- FROM -----

    /// The relation of a FROM clause; returns the WHERE conjuncts the joins did not take.
    fn from<'q>(
        &mut self,
        from: &'q [ast::TableWithJoins],
        selection: Option<&'q ast::Expr>,
        select: &ast::Select,
    ) -> Result<(Rel, Vec<&'q ast::Expr>), SqlError> {
        let [first, rest @ ..] = from else {
            return Err(SqlError::of(select, "a query reads a table: add FROM"));
        };
        let mut conjuncts: Vec<&ast::Expr> = selection.map(split_and).unwrap_or_default();
        let mut rel = self.table_with_joins(first, &mut conjuncts)?;
        for twj in rest {
            let right = self.table_with_joins(twj, &mut conjuncts)?;
            rel = self.join(rel, right, JoinKind::Inner, &mut Vec::new(), &mut conjuncts, &twj.relation)?;
        }
        Ok((rel, conjuncts))
    }

    /// A relation and its JOINs; inner joins take the conditions of `where_conjuncts` that concern them.
    fn table_with_joins<'q>(
        &mut self,
        twj: &'q ast::TableWithJoins,
        where_conjuncts: &mut Vec<&'q ast::Expr>,
    ) -> Result<Rel, SqlError> {
        let mut rel = self.factor(&twj.relation)?;
        for j in &twj.joins {
            let right = self.factor(&j.relation)?;
            use ast::JoinOperator as J;
            let (kind, constraint) = match &j.join_operator {
                J::Join(c) | J::Inner(c) => (JoinKind::Inner, Some(c)),
                J::Left(c) | J::LeftOuter(c) => (JoinKind::Left, Some(c)),
                J::Right(c) | J::RightOuter(c) => (JoinKind::Right, Some(c)),
                J::FullOuter(c) => (JoinKind::Full, Some(c)),
                J::CrossJoin(_) => (JoinKind::Inner, None),
                other => return Err(SqlError::of(&j.relation, format!("`{other:?}` joins are not supported"))),
            };
            let mut conjuncts = match constraint {
                None | Some(ast::JoinConstraint::None) => Vec::new(),
                Some(ast::JoinConstraint::On(e)) => split_and(e),
                Some(_) => {
                    return Err(SqlError::of(
                        &j.relation,
                        "USING and NATURAL joins are not supported; write ON a.x = b.x",
                    ))
                }
            };
            rel = self.join(rel, right, kind, &mut conjuncts, where_conjuncts, &j.relation)?;
        }
        Ok(rel)
    }

    fn named(&mut self, name: &str, node: &impl Spanned) -> Result<Rel, SqlError> {
        if let Some((_, rel)) = self.ctes.iter().rev().find(|(n, _)| n.eq_ignore_ascii_case(name)) {
            return Ok(rel.clone());
        }
        if let Some((vname, sql)) = self.cat.views.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)) {
            if self.views_open.iter().any(|v| v == vname) {
                return Err(SqlError::of(node, format!("view `{vname}` refers to itself")));
            }
            let q = super::parse_query(sql).map_err(|e| in_view(vname, e))?;
            self.views_open.push(vname.clone());
            let outer = std::mem::take(&mut self.ctes);
            let rel = self.query(&q).map_err(|e| in_view(vname, e));
            self.ctes = outer;
            self.views_open.pop();
            return Ok(requalify(rel?, vname));
        }
        if let Some(info) = self.cat.tables.get(name) {
            let node = LNode::scan(name, info.schema.clone(), info.watermark.map(|w| w.column));
            let cols = ColRef::of_schema(&info.schema, Some(name));
            return Ok(Rel { node, cols, window: None });
        }
        let mut known: Vec<&str> = self.cat.tables.keys().map(String::as_str).collect();
        known.extend(self.cat.views.keys().map(String::as_str));
        known.extend(self.ctes.iter().map(|(n, _)| n.as_str()));
        Err(SqlError::of(node, format!("unknown table `{name}`; defined sources and views: {}", known.join(", "))))
    }

    fn factor(&mut self, f: &ast::TableFactor) -> Result<Rel, SqlError> {
        let (rel, alias) = match f {
            ast::TableFactor::Table { name, args: None, alias, .. } => (self.named(&unquote(name), name)?, alias),
            ast::TableFactor::Derived { subquery, alias, lateral: false, .. } => (self.query(subquery)?, alias),
            ast::TableFactor::TableFunction { expr, alias } => (self.window_tvf(expr)?, alias),
            ast::TableFactor::NestedJoin { table_with_joins, alias } => {
                (self.table_with_joins(table_with_joins, &mut Vec::new())?, alias)
            }
            other => {
                return Err(SqlError::of(
                    other,
                    "only a table, a view, a subquery or TABLE(TUMBLE|HOP|CUMULATE(...)) may follow FROM",
                ))
            }
        };
        match alias {
            None => Ok(rel),
            Some(a) => {
                let rel = requalify(rel, &a.name.value);
                self.rename_columns(rel, &a.columns, a)
            }
        }
    }

    /// `TUMBLE(TABLE t, DESCRIPTOR(ts), size)`, `HOP(TABLE t, DESCRIPTOR(ts), slide, size)`,
    /// `CUMULATE(TABLE t, DESCRIPTOR(ts), step, size)`: a pending window over `t`.
    fn window_tvf(&mut self, expr: &ast::Expr) -> Result<Rel, SqlError> {
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
        let (table, table_node) = match args[0] {
            ast::Expr::Prefixed { prefix, value } if prefix.value == "TABLE" => match value.as_ref() {
                ast::Expr::Identifier(id) => (id.value.clone(), value.as_ref()),
                other => return Err(SqlError::of(other, format!("expected a table name; usage: {usage}"))),
            },
            other => return Err(SqlError::of(other, format!("the first argument is TABLE <name>; usage: {usage}"))),
        };
        let rel = materialize(self.named(&table, table_node)?);
        let time_col = match args[1] {
            ast::Expr::Function(d) if function_name(d) == "DESCRIPTOR" => match function_args(d)?.as_slice() {
                [ast::Expr::Identifier(id)] => time_attribute(&rel, std::slice::from_ref(id), &table)?,
                _ => return Err(SqlError::of(args[1], "DESCRIPTOR takes one column name")),
            },
            other => {
                return Err(SqlError::of(
                    other,
                    format!("the second argument is DESCRIPTOR(time column); usage: {usage}"),
                ))
            }
        };
        let a = interval_ms(args[2])?;
        let spec = match name.as_str() {
            "TUMBLE" => WindowSpec::Tumble { size_ms: a },
            "HOP" => WindowSpec::Hop { slide_ms: a, size_ms: interval_ms(args[3])? },
            _ => WindowSpec::Cumulate { step_ms: a, size_ms: interval_ms(args[3])? },
        };
        spec.validate().map_err(|m| SqlError::of(expr, m))?;
        if let Some(why) = &rel.node.updating {
            return Err(SqlError::of(
                expr,
                format!("a window table function needs an append-only input, but `{table}` is updating: {why}"),
            ));
        }
        let mut cols = rel.cols.clone();
        let q = cols.first().and_then(|c| c.qualifier.clone());
        cols.extend(WINDOW_COLS.iter().map(|n| ColRef {
            qualifier: q.clone(),
            name: n.to_string(),
            ty: DataType::Timestamp,
        }));
        Ok(Rel { node: rel.node, cols, window: Some(Pending { spec, time_col }) })
    }

    // ----- joins -----

    /// Binds a condition against the two sides of a join: which side(s) it reads, bound over the joined row.
    /// `None` when it names columns of neither (it belongs to a later join of a FROM list).
    fn side_of(
        &self,
        c: &ast::Expr,
        left: &[ColRef],
        right: &[ColRef],
        all: &[ColRef],
    ) -> Result<Option<Side>, SqlError> {
        fn scope(cols: &[ColRef]) -> RelScope<'_> {
            RelScope { what: "the join".into(), cols }
        }
        if let Ok(e) = bind_filter(c, &mut scope(left)) {
            return Ok(Some(Side::Left(e)));
        }
        if let Ok(e) = bind_filter(c, &mut scope(right)) {
            return Ok(Some(Side::Right(e.shift(left.len() as isize))));
        }
        match bind_filter(c, &mut scope(all)) {
            Ok(e) => Ok(Some(Side::Both(e))),
            Err(e) if e.message.starts_with("unknown column") => Ok(None),
            Err(e) => Err(e),
        }
    }

    #[allow(clippy::too_many_arguments)]
    /// Joins two relations: `on` are the join's own conditions (all of them belong to it); `more` are
    /// conditions of the WHERE clause, which an inner join takes where they concern its sides.
    fn join<'q>(
        &mut self,
        left: Rel,
        right: Rel,
        kind: JoinKind,
        on: &mut Vec<&'q ast::Expr>,
        more: &mut Vec<&'q ast::Expr>,
        at: &impl Spanned,
    ) -> Result<Rel, SqlError> {
        let (mut left, mut right) = (left, right);
        let lw = left.cols.len();
        let all: Vec<ColRef> = left.cols.iter().chain(&right.cols).cloned().collect();
        let mut left_filters = Vec::new();
        let mut right_filters = Vec::new();
        let mut both = Vec::new();
        let n_on = on.len();
        let mut conjuncts: Vec<&ast::Expr> = std::mem::take(on);
        if kind == JoinKind::Inner {
            conjuncts.append(more);
        }
        let mut i = 0;
        let mut keep = Vec::new();
        while i < conjuncts.len() {
            let c = conjuncts[i];
            let all_mine = i < n_on;
            match self.side_of(c, &left.cols, &right.cols, &all)? {
                None if all_mine => {
                    // The real binding error, naming the column neither side has.
                    let e = bind_filter(c, &mut RelScope { what: "the join".into(), cols: &all }).err();
                    return Err(e.unwrap_or_else(|| SqlError::of(c, "a join condition that names neither side")));
                }
                None => keep.push(c),
                Some(Side::Left(e)) if kind == JoinKind::Inner => left_filters.push(e),
                Some(Side::Right(e)) if kind == JoinKind::Inner => right_filters.push(e.shift(-(lw as isize))),
                Some(Side::Left(e) | Side::Right(e) | Side::Both(e)) => both.push((e, c)),
            }
            i += 1;
        }
        // What concerns neither side goes back to the WHERE clause.
        more.extend(keep);
        // Conditions on one side of an inner join filter that side before the join (less state).
        left = push_filter(left, left_filters);
        right = push_filter(right, right_filters);
        let (left, right) = (materialize(left), materialize(right));
        let (l_rt, r_rt) = (left.node.rowtime, right.node.rowtime.map(|t| t + lw));
        let windows = match (left.node.window, right.node.window) {
            (Some(a), Some(b)) if a.spec == b.spec => Some((a, b)),
            _ => None,
        };
        let mut keys: Vec<(usize, usize)> = Vec::new();
        let mut same_window = [false; 2];
        let (mut lower, mut upper): (Option<i64>, Option<i64>) = (None, None);
        let mut residual = Vec::new();
        for (e, _) in both {
            if let Expr::Binary { op: BinOp::Eq, left: a, right: b, .. } = &e {
                if let (Some(x), Some(y)) = (a.as_column(), b.as_column()) {
                    let (x, y) = if x < lw { (x, y) } else { (y, x) };
                    if x < lw && y >= lw {
                        match windows {
                            Some((lwc, rwc)) if x == lwc.start && y - lw == rwc.start => same_window[0] = true,
                            Some((lwc, rwc)) if x == lwc.end && y - lw == rwc.end => {
                                same_window[1] = true;
                                keys.push((x, y - lw));
                            }
                            _ => keys.push((x, y - lw)),
                        }
                        continue;
                    }
                }
            }
            if let (Some(lt), Some(rt)) = (l_rt, r_rt) {
                if let Some((lo, hi)) = time_bounds(&e, lt, rt) {
                    lower = Some(lower.map_or(lo.unwrap_or(i64::MIN), |l| l.max(lo.unwrap_or(i64::MIN))));
                    upper = Some(upper.map_or(hi.unwrap_or(i64::MAX), |u| u.min(hi.unwrap_or(i64::MAX))));
                }
            }
            residual.push(e);
        }
        let (left_keys, right_keys): (Vec<usize>, Vec<usize>) = keys.iter().copied().unzip();
        let append_only = left.node.updating.is_none() && right.node.updating.is_none();
        // Window join: both sides carry windows of one window table function, joined on their start and end.
        if let (Some((lwc, rwc)), [true, true], true) = (windows, same_window, append_only) {
            let cols: Vec<ColRef> = left.cols.iter().chain(&right.cols).cloned().collect();
            let schema =
                Schema::new(left.node.schema.fields.iter().chain(&right.node.schema.fields).cloned().collect());
            let sides = JoinSides {
                kind,
                left_keys,
                right_keys,
                residual: and_all(residual),
                left: left.node.schema.clone(),
                right: right.node.schema.clone(),
            };
            let plan = WindowJoinPlan { sides, spec: lwc.spec, left_end: lwc.end, right_end: rwc.end };
            let rowtime = left.node.rowtime;
            let node = LNode {
                op: LOp::WindowJoin(plan),
                inputs: vec![left.node, right.node],
                schema,
                rowtime,
                updating: None,
                window: Some(lwc),
            };
            return Ok(Rel { node, cols, window: None });
        }
        let mut cols = left.cols.clone();
        cols.extend(right.cols.iter().cloned());
        let schema = Schema::new(left.node.schema.fields.iter().chain(&right.node.schema.fields).cloned().collect());
        let sides = JoinSides {
            kind,
            left_keys,
            right_keys,
            residual: and_all(residual),
            left: left.node.schema.clone(),
            right: right.node.schema.clone(),
        };
        // Interval join: both sides append-only with event time, bounded on both ends.
        if let (true, Some(lo), Some(hi), Some(lt), Some(rt)) = (append_only, lower, upper, l_rt, r_rt) {
            if lo > i64::MIN && hi < i64::MAX && lo <= hi {
                let plan = IntervalJoinPlan { sides, left_time: lt, right_time: rt - lw, lower_ms: lo, upper_ms: hi };
                let node = LNode {
                    op: LOp::IntervalJoin(plan),
                    inputs: vec![left.node, right.node],
                    schema,
                    rowtime: Some(lt),
                    updating: None,
                    window: None,
                };
                return Ok(Rel { node, cols, window: None });
            }
        }
        if sides.left_keys.is_empty() {
            self.warnings.push(format!(
                "a join without an equality between its sides{}: every row goes to one shard and is matched against \
                 every row of the other side",
                where_of(at)
            ));
        }
        if self.cat.state_ttl_ms.is_none() {
            self.warnings.push(format!(
                "the regular join{} keeps every row of both inputs until a state TTL expires it, and none is set: \
                 set [runtime] state_ttl (Flink's table.exec.state.ttl), or make it an interval or window join",
                where_of(at)
            ));
        }
        let updating = if kind != JoinKind::Inner {
            Some(format!("the {kind} JOIN{}", where_of(at)))
        } else {
            left.node.updating.clone().or_else(|| right.node.updating.clone())
        };
        let plan = JoinPlan {
            sides,
            left_retracting: left.node.updating.is_some(),
            right_retracting: right.node.updating.is_some(),
            ttl_ms: self.cat.state_ttl_ms,
        };
        let node = LNode {
            op: LOp::Join(plan),
            inputs: vec![left.node, right.node],
            schema,
            rowtime: None,
            updating,
            window: None,
        };
        Ok(Rel { node, cols, window: None })
    }

    // ----- SELECT -----

    fn select(&mut self, s: &ast::Select) -> Result<Rel, SqlError> {
        if s.distinct.is_some() {
            return Err(SqlError::of(s, "SELECT DISTINCT is not supported; GROUP BY the columns instead"));
        }
        let (mut rel, conjuncts) = self.from(&s.from, s.selection.as_ref(), s)?;
        // A filter on the row number of a ranking below sets its limit (Top-N, deduplication).
        let conjuncts = self.apply_rank_limits(&mut rel, conjuncts)?;
        if is_aggregation(s) {
            self.aggregate(s, rel, &conjuncts)
        } else if let Some(over) = row_number_item(s)? {
            self.rank(s, rel, &conjuncts, over)
        } else {
            let rel = materialize(rel);
            let filter = self.bind_conjuncts(&rel.cols, &conjuncts)?;
            let mut scope = RelScope { what: describe_cols(&rel.cols), cols: &rel.cols };
            let (exprs, schema) = bind_projection(s, &mut scope, &rel.cols)?;
            let cols = ColRef::of_schema(&schema, None);
            let node = calc_over(rel.node, filter, exprs, schema);
            Ok(Rel { node, cols, window: None })
        }
    }

    fn bind_conjuncts(&self, cols: &[ColRef], conjuncts: &[&ast::Expr]) -> Result<Option<Expr>, SqlError> {
        let mut scope = RelScope { what: describe_cols(cols), cols };
        let bound = conjuncts.iter().map(|c| bind_filter(c, &mut scope)).collect::<Result<Vec<_>, _>>()?;
        Ok(and_all(bound))
    }

    // ----- aggregation -----

    fn aggregate(&mut self, s: &ast::Select, rel: Rel, conjuncts: &[&ast::Expr]) -> Result<Rel, SqlError> {
        let group_by: &[ast::Expr] = match &s.group_by {
            ast::GroupByExpr::Expressions(exprs, mods) if mods.is_empty() => exprs,
            other => return Err(SqlError::of(s, format!("`{other}` is not supported; GROUP BY columns and a window"))),
        };
        let is_window_col = |g: &ast::Expr, name: &str| match g {
            ast::Expr::Identifier(id) => id.value.eq_ignore_ascii_case(name),
            ast::Expr::CompoundIdentifier(p) => p.last().is_some_and(|id| id.value.eq_ignore_ascii_case(name)),
            _ => false,
        };
        let tvf_grouped = rel.window.is_some()
            && group_by.iter().any(|g| is_window_col(g, "window_start"))
            && group_by.iter().any(|g| is_window_col(g, "window_end"));
        let rel = if tvf_grouped { rel } else { materialize(rel) };
        // What the aggregation binds against: for a window table function, its input's columns only.
        let width = if tvf_grouped { rel.node.schema.len() } else { rel.cols.len() };
        let input_cols: Vec<ColRef> = rel.cols[..width].to_vec();
        let cascade = if tvf_grouped { None } else { cascade_bounds(group_by, &rel) };
        let mut keys_ast: Vec<&ast::Expr> = Vec::new();
        let mut window: Option<(WindowSpec, Expr, WindowSyntax)> = None;
        for (i, g) in group_by.iter().enumerate() {
            if tvf_grouped && (is_window_col(g, "window_start") || is_window_col(g, "window_end")) {
                continue;
            }
            if let Some(c) = &cascade {
                if i == c.end_item {
                    continue;
                }
            }
            if let ast::Expr::Function(f) = g {
                let name = function_name(f);
                if matches!(name.as_str(), "TUMBLE" | "HOP" | "SESSION") {
                    if window.is_some() || tvf_grouped {
                        return Err(SqlError::of(g, "GROUP BY may hold only one window"));
                    }
                    window = Some(group_window(f, g, &name, &rel)?);
                    continue;
                }
            }
            keys_ast.push(g);
        }
        let window = match (tvf_grouped, window, rel.window, &cascade) {
            (true, _, Some(p), _) => {
                let tf = &rel.node.schema.fields[p.time_col];
                Some((p.spec, Expr::Column { idx: p.time_col, name: tf.name.clone(), ty: tf.ty }, WindowSyntax::Tvf))
            }
            (_, None, _, Some(c)) => {
                let end = norm(&group_by[c.end_item]);
                Some((WindowSpec::Tumble { size_ms: c.step_ms }, c.time.clone(), WindowSyntax::Cascade { end }))
            }
            (_, w, _, _) => w,
        };
        if let (Some(_), Some(why)) = (&window, &rel.node.updating) {
            return Err(SqlError::of(
                s,
                format!("a window aggregation needs an append-only input, but its input is updating: {why}"),
            ));
        }
        let syntax = window.as_ref().map_or(WindowSyntax::Unbounded, |w| match &w.2 {
            WindowSyntax::Tvf => WindowSyntax::Tvf,
            WindowSyntax::Group { family, args } => WindowSyntax::Group { family, args: args.clone() },
            WindowSyntax::Cascade { end } => WindowSyntax::Cascade { end: end.clone() },
            WindowSyntax::Unbounded => WindowSyntax::Unbounded,
        });
        let windowed = window.is_some();
        let table = RelScope { what: describe_cols(&input_cols), cols: &input_cols };
        let mut scope = AggScope { table, syntax, keys: Vec::new(), args: Vec::new(), aggs: Vec::new() };
        for k in keys_ast {
            if contains_aggregate(k) {
                return Err(SqlError::of(k, "aggregates cannot be grouped by"));
            }
            let bound = bind(k, &mut scope.table)?;
            scope.keys.push((norm(k), bound));
        }
        let filter = {
            let mut t = RelScope { what: describe_cols(&input_cols), cols: &input_cols };
            let bound = conjuncts.iter().map(|c| bind_filter(c, &mut t)).collect::<Result<Vec<_>, _>>()?;
            and_all(bound)
        };
        if s.projection
            .iter()
            .any(|i| matches!(i, ast::SelectItem::Wildcard(_) | ast::SelectItem::QualifiedWildcard(..)))
        {
            return Err(SqlError::of(
                s,
                "SELECT * is not allowed with GROUP BY; name the grouped columns and aggregates",
            ));
        }
        let (exprs, out_schema) = bind_projection(s, &mut scope, &[])?;
        let having = s.having.as_ref().map(|h| bind_filter(h, &mut scope)).transpose()?;
        let n_keys = scope.keys.len();
        let mut pre_exprs: Vec<Expr> = scope.keys.iter().map(|(_, e)| e.clone()).collect();
        if let Some((_, time, _)) = &window {
            pre_exprs.push(time.clone());
        }
        pre_exprs.extend(scope.args.iter().map(|(_, e)| e.clone()));
        let pre_fields = pre_exprs
            .iter()
            .enumerate()
            .map(|(i, e)| Field {
                name: if windowed && i == n_keys { "$rowtime".to_string() } else { e.to_string() },
                ty: e.ty(),
            })
            .collect();
        let mut agg_fields: Vec<Field> =
            scope.keys.iter().map(|(_, e)| Field { name: e.to_string(), ty: e.ty() }).collect();
        if windowed {
            agg_fields.push(Field { name: "window_start".into(), ty: DataType::Timestamp });
            agg_fields.push(Field { name: "window_end".into(), ty: DataType::Timestamp });
        }
        agg_fields.extend(scope.aggs.iter().map(|(_, a)| Field { name: a.text.clone(), ty: a.ty }));
        let pre_schema = Schema::new(pre_fields);
        let updating_in = rel.node.updating.is_some();
        let pre = calc_over(rel.node, filter, pre_exprs, pre_schema.clone());
        let scope_keys: Vec<String> = scope.keys.iter().map(|(t, _)| t.clone()).collect();
        let aggs = scope.aggs.into_iter().map(|(_, a)| a).collect();
        let post = Calc { filter: having, exprs, schema: out_schema.clone() };
        let (op, rowtime, updating, out_window) = match window {
            Some((spec, _, _)) => {
                // window_time (window_end - 1) stays an event-time attribute downstream, and the rows carry their
                // window where window_start and window_end are selected.
                let window_end = n_keys + 1;
                let rowtime = post.exprs.iter().position(|e| is_window_time(e, window_end));
                let carried = match &cascade {
                    // The input's windows, not the tumbling buckets of their ends.
                    Some(c) => {
                        let text = norm(&group_by[c.start_item]);
                        scope_keys.iter().position(|k| *k == text).map(|start| WindowCols {
                            spec: c.input.spec,
                            start,
                            end: window_end,
                        })
                    }
                    None => Some(WindowCols { spec, start: n_keys, end: window_end }),
                };
                let w = match spec {
                    WindowSpec::Session { .. } => None,
                    _ => project_window(carried, &post.exprs),
                };
                let plan = WindowAggPlan {
                    spec,
                    input: pre_schema,
                    n_keys,
                    time_col: n_keys,
                    aggs,
                    output: Schema::new(agg_fields),
                    post,
                    rows_col: None,
                    carried_keys: usize::from(cascade.is_some()),
                };
                (LOp::WindowAgg(plan), rowtime, None, w)
            }
            None => {
                let plan = GroupAggPlan {
                    input: pre_schema,
                    n_keys,
                    aggs,
                    output: Schema::new(agg_fields),
                    post,
                    retracting: updating_in,
                    ttl_ms: self.cat.state_ttl_ms,
                };
                let why = format!("the GROUP BY without a window{} (an updating aggregation)", where_of(s));
                (LOp::GroupAgg(plan), None, Some(why), None)
            }
        };
        let node = LNode { op, inputs: vec![pre], schema: out_schema.clone(), rowtime, updating, window: out_window };
        Ok(Rel { node, cols: ColRef::of_schema(&out_schema, None), window: None })
    }

    // ----- ranking -----

    fn rank(&mut self, s: &ast::Select, rel: Rel, conjuncts: &[&ast::Expr], over: &ast::Expr) -> Result<Rel, SqlError> {
        let ast::Expr::Function(f) = over else { unreachable!("row_number_item returns functions") };
        let Some(ast::WindowType::WindowSpec(spec)) = &f.over else {
            return Err(SqlError::of(over, "ROW_NUMBER() needs OVER (PARTITION BY ... ORDER BY ...)"));
        };
        if spec.window_frame.is_some() {
            return Err(SqlError::of(over, "a window frame is not supported with ROW_NUMBER()"));
        }
        if spec.order_by.is_empty() {
            return Err(SqlError::of(over, "ROW_NUMBER() needs ORDER BY inside OVER (...)"));
        }
        let mut rel = materialize(rel);
        if let Some(f) = self.bind_conjuncts(&rel.cols, conjuncts)? {
            rel.node = filter_over(rel.node, f);
        }
        let col_of = |e: &ast::Expr, what: &str| -> Result<usize, SqlError> {
            let mut scope = RelScope { what: describe_cols(&rel.cols), cols: &rel.cols };
            match bind(e, &mut scope)? {
                Expr::Column { idx, .. } => Ok(idx),
                _ => Err(SqlError::of(e, format!("{what} takes columns, not expressions; compute it in a subquery"))),
            }
        };
        let mut partition = Vec::new();
        for e in &spec.partition_by {
            partition.push(col_of(e, "PARTITION BY")?);
        }
        let mut order = Vec::new();
        let mut time: Option<(RankTime, bool)> = None;
        for o in &spec.order_by {
            let asc = !matches!(o.options.sort, Some(ast::OrderBySort::Desc));
            if let ast::Expr::Function(p) = &o.expr {
                if function_name(p) == "PROCTIME" {
                    if spec.order_by.len() > 1 {
                        return Err(SqlError::of(&o.expr, "PROCTIME() orders alone: ORDER BY PROCTIME() [ASC|DESC]"));
                    }
                    time = Some((RankTime::Processing, asc));
                    continue;
                }
            }
            let c = col_of(&o.expr, "ORDER BY")?;
            if spec.order_by.len() == 1 && Some(c) == rel.node.rowtime {
                time = Some((RankTime::Event(c), asc));
            }
            order.push((c, asc));
        }
        let per_window = rel.node.window.filter(|w| partition.contains(&w.start) && partition.contains(&w.end));
        let alias = s.projection.iter().find_map(|i| match i {
            ast::SelectItem::ExprWithAlias { expr, alias } if std::ptr::eq(expr, over) => Some(alias.value.clone()),
            _ => None,
        });
        let rn_name = alias.unwrap_or_else(|| "EXPR$rownum".into());
        let updating_in = rel.node.updating.clone();
        self.ranks.push(SqlError::of(
            over,
            "ROW_NUMBER() is supported as Top-N or deduplication only: filter on it in the enclosing query, e.g. \
             WHERE rn <= 10 (or rn = 1)",
        ));
        let mut fields = rel.node.schema.fields.clone();
        fields.push(Field { name: rn_name.clone(), ty: DataType::BigInt });
        let rank_col = fields.len() - 1;
        let input_window = rel.node.window;
        let node = match per_window {
            Some(w) => {
                if let Some(why) = &updating_in {
                    return Err(SqlError::of(
                        over,
                        format!("a window Top-N needs an append-only input, but it is updating: {why}"),
                    ));
                }
                // Rows of one window meet on one shard: the window's end is a key, its start is implied.
                partition.retain(|c| *c != w.start);
                let plan = WindowRankPlan { end_col: w.end, partition, order, limit: 0 };
                let rowtime = rel.node.rowtime;
                LNode {
                    op: LOp::WindowRank(plan),
                    inputs: vec![rel.node],
                    schema: Schema::new(fields),
                    rowtime,
                    updating: None,
                    window: input_window,
                }
            }
            None => {
                if matches!(time, Some((RankTime::Processing, _))) && order.is_empty() && updating_in.is_some() {
                    return Err(SqlError::of(over, "a deduplication needs an append-only input"));
                }
                // Top-N until the limit is known: one row by a time order is then a deduplication (`set_limit`).
                let plan = RankPlan {
                    kind: RankKind::TopN,
                    by_time: time,
                    partition,
                    order,
                    limit: 0,
                    emit_rank: true,
                    retracting: updating_in.is_some(),
                    ttl_ms: self.cat.state_ttl_ms,
                };
                let why = Some(format!("the ROW_NUMBER() Top-N{}", where_of(over)));
                LNode {
                    op: LOp::Rank(plan),
                    inputs: vec![rel.node],
                    schema: Schema::new(fields),
                    rowtime: None,
                    updating: why,
                    window: input_window,
                }
            }
        };
        let mut cols = rel.cols.clone();
        cols.push(ColRef { qualifier: None, name: rn_name, ty: DataType::BigInt });
        // The SELECT list over the ranked rows: ROW_NUMBER() OVER (...) is the row number column.
        let star: Vec<ColRef> = cols[..cols.len() - 1].to_vec();
        let mut scope =
            OverScope { inner: RelScope { what: describe_cols(&star), cols: &cols }, rank_col, over: norm(over) };
        let (exprs, schema) = bind_projection(s, &mut scope, &star)?;
        let out = calc_over(node, None, exprs, schema.clone());
        Ok(Rel { node: out, cols: ColRef::of_schema(&schema, None), window: None })
    }

    /// Finds, among `conjuncts` (a WHERE over `rel`), filters `rn <= N`, `rn < N` or `rn = 1` on the row
    /// number of a ranking directly below, and makes them the ranking's limit.
    fn apply_rank_limits<'q>(
        &mut self,
        rel: &mut Rel,
        conjuncts: Vec<&'q ast::Expr>,
    ) -> Result<Vec<&'q ast::Expr>, SqlError> {
        let mut rest = Vec::new();
        for c in conjuncts {
            let mut scope = RelScope { what: describe_cols(&rel.cols), cols: &rel.cols };
            let limit = match bind_filter(c, &mut scope) {
                Ok(Expr::Binary { op, left, right, .. }) => {
                    match (op, left.as_column(), literal_int(&right), literal_int(&left), right.as_column()) {
                        (BinOp::LtEq, Some(col), Some(n), _, _) | (BinOp::GtEq, _, _, Some(n), Some(col)) => {
                            Some((col, n))
                        }
                        (BinOp::Lt, Some(col), Some(n), _, _) | (BinOp::Gt, _, _, Some(n), Some(col)) => {
                            Some((col, n - 1))
                        }
                        (BinOp::Eq, Some(col), Some(1), _, _) | (BinOp::Eq, _, _, Some(1), Some(col)) => Some((col, 1)),
                        _ => None,
                    }
                }
                _ => None,
            };
            match limit {
                Some((col, n)) if set_limit(&mut rel.node, col, n) => {
                    if n < 1 {
                        return Err(SqlError::of(c, "a Top-N keeps at least one row: the limit must be 1 or more"));
                    }
                    self.ranks.pop();
                }
                _ => rest.push(c),
            }
        }
        Ok(rest)
    }

    /// A ranking whose limit no filter set, with where its ROW_NUMBER() is.
    fn unlimited_rank(&self, node: &LNode) -> Option<SqlError> {
        let unlimited = match &node.op {
            LOp::Rank(r) => r.limit == 0,
            LOp::WindowRank(r) => r.limit == 0,
            _ => false,
        };
        if unlimited {
            return Some(
                self.ranks
                    .last()
                    .cloned()
                    .unwrap_or_else(|| SqlError::nowhere("ROW_NUMBER() needs a filter on it (rn <= N)")),
            );
        }
        node.inputs.iter().find_map(|i| self.unlimited_rank(i))
    }
}

/// Maps `ROW_NUMBER() OVER (...)` (as written) to the ranking's row number column.
struct OverScope<'s> {
    inner: RelScope<'s>,
    rank_col: usize,
    over: String,
}

impl Scope for OverScope<'_> {
    fn resolve(&mut self, e: &ast::Expr) -> Result<Option<Expr>, SqlError> {
        if norm(e) == self.over {
            return Ok(Some(Expr::Column { idx: self.rank_col, name: "row_number".into(), ty: DataType::BigInt }));
        }
        self.inner.resolve(e)
    }

    fn column(&mut self, parts: &[ast::Ident]) -> Result<Expr, SqlError> {
        self.inner.column(parts)
    }
}

/// The one `ROW_NUMBER() OVER (...)` of a SELECT list, if any (another window function is an error).
fn row_number_item(s: &ast::Select) -> Result<Option<&ast::Expr>, SqlError> {
    let mut found = None;
    for item in &s.projection {
        let e = match item {
            ast::SelectItem::UnnamedExpr(e) | ast::SelectItem::ExprWithAlias { expr: e, .. } => e,
            _ => continue,
        };
        if let ast::Expr::Function(f) = e {
            if f.over.is_some() {
                let name = function_name(f);
                if !matches!(name.as_str(), "ROW_NUMBER") {
                    return Err(SqlError::of(
                        e,
                        format!("{name}() OVER (...) is not supported; ROW_NUMBER() is (Top-N, deduplication)"),
                    ));
                }
                if found.is_some() {
                    return Err(SqlError::of(e, "one ROW_NUMBER() per SELECT"));
                }
                found = Some(e);
            }
        }
    }
    Ok(found)
}

fn literal_int(e: &Expr) -> Option<i64> {
    match e {
        Expr::Literal { value: Value::Int(n), .. } => Some(*n),
        _ => None,
    }
}

/// Sets the limit of the ranking whose row number is column `col` of `node` (the ranking itself, or a calc
/// right above it passing the row number through); true if there was one. Decides deduplication then.
fn set_limit(node: &mut LNode, col: usize, limit: i64) -> bool {
    let rank_col = node.schema.len().wrapping_sub(1);
    match &mut node.op {
        LOp::Rank(r) if col == rank_col && r.limit == 0 => {
            r.limit = limit.max(0) as u64;
            match r.by_time {
                Some((time, asc)) if r.limit == 1 => {
                    r.kind = if asc { RankKind::KeepFirst(time) } else { RankKind::KeepLast(time) };
                }
                _ => {}
            }
            if matches!(r.kind, RankKind::KeepFirst(_)) {
                node.updating = None;
                node.rowtime = node.inputs[0].rowtime;
            }
            true
        }
        LOp::WindowRank(r) if col == rank_col && r.limit == 0 => {
            r.limit = limit.max(0) as u64;
            true
        }
        LOp::Calc(c) => {
            let Some(below) = c.exprs.get(col).and_then(Expr::as_column) else { return false };
            let done = set_limit(&mut node.inputs[0], below, limit);
            if done {
                node.updating = node.inputs[0].updating.clone();
                let inner_rt = node.inputs[0].rowtime;
                node.rowtime = inner_rt.and_then(|t| c.exprs.iter().position(|e| e.as_column() == Some(t)));
            }
            done
        }
        _ => false,
    }
}

/// `window_end - 1` over the aggregation's rows: the window's `window_time`.
/// A GROUP BY over the window bounds its input rows carry: the rows of one window share its end, so the
/// aggregation buckets them by end with a tumbling window of the windows' step (the end's time is `end - 1`), and
/// keeps the start as a grouped column.
struct Cascade {
    input: WindowCols,
    start_item: usize,
    end_item: usize,
    step_ms: i64,
    time: Expr,
}

fn cascade_bounds(group_by: &[ast::Expr], rel: &Rel) -> Option<Cascade> {
    let input = rel.node.window?;
    if rel.node.updating.is_some() {
        return None;
    }
    let step_ms = match input.spec {
        WindowSpec::Tumble { size_ms } => size_ms,
        WindowSpec::Hop { slide_ms, .. } => slide_ms,
        WindowSpec::Cumulate { step_ms, .. } => step_ms,
        WindowSpec::Session { .. } => return None,
    };
    let mut scope = RelScope { what: describe_cols(&rel.cols), cols: &rel.cols };
    let mut at = |col: usize| {
        group_by.iter().position(|g| {
            !matches!(g, ast::Expr::Function(_)) && bind(g, &mut scope).ok().and_then(|e| e.as_column()) == Some(col)
        })
    };
    let (start_item, end_item) = (at(input.start)?, at(input.end)?);
    if group_by.iter().any(
        |g| matches!(g, ast::Expr::Function(f) if matches!(function_name(f).as_str(), "TUMBLE" | "HOP" | "SESSION")),
    ) {
        return None;
    }
    let end = &rel.node.schema.fields[input.end];
    let time = Expr::Binary {
        op: BinOp::Sub,
        left: Box::new(Expr::Column { idx: input.end, name: end.name.clone(), ty: end.ty }),
        right: Box::new(literal(Value::Int(1), DataType::BigInt)),
        ty: DataType::Timestamp,
    };
    Some(Cascade { input, start_item, end_item, step_ms, time })
}

fn is_window_time(e: &Expr, window_end: usize) -> bool {
    matches!(e, Expr::Binary { op: BinOp::Sub, left, right, .. }
        if left.as_column() == Some(window_end) && literal_int(right) == Some(1))
}

/// Filters a join side before the join; a pending window keeps pending (the filter is on its input).
fn push_filter(rel: Rel, filters: Vec<Expr>) -> Rel {
    let Some(f) = and_all(filters) else { return rel };
    let width = rel.node.schema.len();
    if rel.window.is_some() && f.columns().iter().any(|c| *c >= width) {
        let rel = materialize(rel);
        let node = filter_over(rel.node, f);
        return Rel { node, ..rel };
    }
    let node = filter_over(rel.node, f);
    Rel { node, ..rel }
}

/// What a condition says of `left.time - right.time`, if it bounds it: (lower, upper), inclusive.
/// `lt` and `rt` are the two event-time columns in the joined row.
fn time_bounds(e: &Expr, lt: usize, rt: usize) -> Option<(Option<i64>, Option<i64>)> {
    // An expression `col ± c` over one time column: (column, c).
    fn offset(e: &Expr) -> Option<(usize, i64)> {
        match e {
            Expr::Column { idx, .. } => Some((*idx, 0)),
            Expr::Binary { op: BinOp::Add, left, right, .. } => Some((left.as_column()?, literal_int(right)?)),
            Expr::Binary { op: BinOp::Sub, left, right, .. } => Some((left.as_column()?, -literal_int(right)?)),
            _ => None,
        }
    }
    // `a op b` as a bound on l - r.
    let bound = |a: &Expr, op: BinOp, b: &Expr| -> Option<(Option<i64>, Option<i64>)> {
        let ((ca, oa), (cb, ob)) = (offset(a)?, offset(b)?);
        // a - b = (ca - cb) + (oa - ob) compared with 0.
        let (sign, k) = if ca == lt && cb == rt {
            (1, ob - oa)
        } else if ca == rt && cb == lt {
            (-1, oa - ob)
        } else {
            return None;
        };
        // l - r {op'} k, where op' is op for sign 1 and mirrored for sign -1.
        let op = if sign == 1 {
            op
        } else {
            match op {
                BinOp::Lt => BinOp::Gt,
                BinOp::LtEq => BinOp::GtEq,
                BinOp::Gt => BinOp::Lt,
                BinOp::GtEq => BinOp::LtEq,
                other => other,
            }
        };
        let k = if sign == 1 { k } else { -k };
        match op {
            BinOp::GtEq => Some((Some(k), None)),
            BinOp::Gt => Some((Some(k.saturating_add(1)), None)),
            BinOp::LtEq => Some((None, Some(k))),
            BinOp::Lt => Some((None, Some(k.saturating_sub(1)))),
            BinOp::Eq => Some((Some(k), Some(k))),
            _ => None,
        }
    };
    match e {
        Expr::Binary { op, left, right, .. } if op.is_comparison() => bound(left, *op, right),
        Expr::Between { expr, low, high, negated: false } => {
            let (lo, _) = bound(expr, BinOp::GtEq, low)?;
            let (_, hi) = bound(expr, BinOp::LtEq, high)?;
            Some((lo, hi))
        }
        _ => None,
    }
}

/// The column `id` of `rel` if it is its event-time attribute.
fn time_attribute(rel: &Rel, id: &[ast::Ident], table: &str) -> Result<usize, SqlError> {
    let scope = RelScope { what: format!("`{table}`"), cols: &rel.cols };
    let col = scope.lookup(id)?;
    let name = &id[id.len() - 1];
    match rel.node.rowtime {
        Some(t) if t == col => Ok(col),
        Some(t) => Err(SqlError::at(
            name.span,
            format!(
                "`{}` is not an event-time column; windows run on `{}`, the watermark column of `{table}`",
                name.value, rel.node.schema.fields[t].name
            ),
        )),
        None => Err(SqlError::at(
            name.span,
            format!(
                "`{table}` has no watermark, so no event time (or it was lost on the way: an expression over the \
                 time column is a plain timestamp); for a source, add watermark = \"{} - INTERVAL '5' SECOND\" to \
                 [sources.{table}]",
                name.value
            ),
        )),
    }
}

/// `TUMBLE(ts, size)`, `HOP(ts, slide, size)`, `SESSION(ts, gap)` in GROUP BY.
fn group_window(
    f: &ast::Function,
    e: &ast::Expr,
    name: &str,
    rel: &Rel,
) -> Result<(WindowSpec, Expr, WindowSyntax), SqlError> {
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
    let table = rel.cols.first().and_then(|c| c.qualifier.clone()).unwrap_or_else(|| "the FROM clause".into());
    let time_col = match args[0] {
        ast::Expr::Identifier(id) => time_attribute(rel, std::slice::from_ref(id), &table)?,
        ast::Expr::CompoundIdentifier(parts) => time_attribute(rel, parts, &table)?,
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
    let tf = &rel.node.schema.fields[time_col];
    let time = Expr::Column { idx: time_col, name: tf.name.clone(), ty: tf.ty };
    Ok((spec, time, WindowSyntax::Group { family, args: args.into_iter().map(norm).collect() }))
}

/// UNION ALL of two relations with the same column types (numbers of different widths meet at the wider).
fn union(l: Rel, r: Rel, at: &impl Spanned) -> Result<Rel, SqlError> {
    let (l, r) = (materialize(l), materialize(r));
    if l.cols.len() != r.cols.len() {
        return Err(SqlError::of(
            at,
            format!("the sides of UNION ALL have {} and {} columns", l.cols.len(), r.cols.len()),
        ));
    }
    let mut types = Vec::new();
    for (i, (a, b)) in l.node.schema.fields.iter().zip(&r.node.schema.fields).enumerate() {
        let ty = if a.ty == b.ty {
            a.ty
        } else if a.ty.is_numeric() && b.ty.is_numeric() {
            super::function::common_type(&[a.ty, b.ty]).expect("numbers have a common type")
        } else {
            return Err(SqlError::of(
                at,
                format!("column {} of UNION ALL is {} on one side and {} on the other; CAST one", i + 1, a.ty, b.ty),
            ));
        };
        types.push(ty);
    }
    let cast = |rel: Rel| -> LNode {
        if rel.node.schema.fields.iter().zip(&types).all(|(f, t)| f.ty == *t) {
            return rel.node;
        }
        let exprs: Vec<Expr> = rel
            .node
            .schema
            .fields
            .iter()
            .zip(&types)
            .enumerate()
            .map(|(idx, (f, t))| {
                let c = Expr::Column { idx, name: f.name.clone(), ty: f.ty };
                if f.ty == *t {
                    c
                } else {
                    Expr::Cast { expr: Box::new(c), to: *t }
                }
            })
            .collect();
        let schema = Schema::new(
            rel.node.schema.fields.iter().zip(&types).map(|(f, t)| Field { name: f.name.clone(), ty: *t }).collect(),
        );
        calc_over(rel.node, None, exprs, schema)
    };
    let names: Vec<String> = l.node.schema.fields.iter().map(|f| f.name.clone()).collect();
    let (ln, rn) = (cast(l), cast(r));
    let schema = Schema::new(names.iter().zip(&types).map(|(n, t)| Field { name: n.clone(), ty: *t }).collect());
    let rowtime = match (ln.rowtime, rn.rowtime) {
        (Some(a), Some(b)) if a == b => Some(a),
        _ => None,
    };
    let updating = ln.updating.clone().or_else(|| rn.updating.clone());
    let window = if ln.window == rn.window { ln.window } else { None };
    let cols = ColRef::of_schema(&schema, None);
    let node = LNode { op: LOp::Union, inputs: vec![ln, rn], schema, rowtime, updating, window };
    Ok(Rel { node, cols, window: None })
}

/// How an error names a relation: its table (or view, alias) when its columns come from one, else the FROM
/// clause.
fn describe_cols(cols: &[ColRef]) -> String {
    match cols.first().and_then(|c| c.qualifier.as_ref()) {
        Some(q) if cols.iter().all(|c| c.qualifier.as_ref() == Some(q)) => format!("table `{q}`"),
        _ => "the FROM clause".to_string(),
    }
}

fn in_view(name: &str, e: SqlError) -> SqlError {
    SqlError { message: format!("in view `{name}`: {}", e.message), ..e }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql::physical::NodeOp;
    use crate::sql::WatermarkSpec;

    fn tables() -> BTreeMap<String, TableInfo> {
        let bid = Schema::parse(crate::config::NEXMARK_BID_SCHEMA).unwrap();
        let time = bid.index_of("dateTime").unwrap();
        let mut t = BTreeMap::new();
        t.insert(
            "bid".to_string(),
            TableInfo { schema: bid, watermark: Some(WatermarkSpec { column: time, delay_ms: 4000 }) },
        );
        t
    }

    /// The operators of `sql`'s plan in order, e.g. `scan calc window-agg(TUMBLE(size 2 s)) sink`.
    fn shape(sql: &str) -> String {
        let plan = plan_job(sql, &tables(), &["out".to_string()]).unwrap_or_else(|e| panic!("{sql}: {e}"));
        plan.check().unwrap();
        let ops: Vec<String> = plan
            .nodes
            .iter()
            .map(|n| match &n.op {
                NodeOp::Scan { .. } => "scan".to_string(),
                NodeOp::Calc(_) => "calc".to_string(),
                NodeOp::WindowAgg(w) => format!("window-agg({})", w.spec),
                NodeOp::WindowAssign { spec, .. } => format!("window-assign({spec})"),
                NodeOp::GroupAgg(_) => "group-agg".to_string(),
                NodeOp::Rank(_) => "rank".to_string(),
                NodeOp::WindowRank(_) => "window-rank".to_string(),
                NodeOp::Join(j) => format!("join({})", j.sides.kind),
                NodeOp::IntervalJoin(j) => format!("interval-join[{}, {}]", j.lower_ms, j.upper_ms),
                NodeOp::WindowJoin(j) => format!("window-join({})", j.spec),
                NodeOp::Union => "union".to_string(),
                NodeOp::LocalAgg(_) => "local-agg".to_string(),
                NodeOp::Sink => "sink".to_string(),
            })
            .collect();
        let updating = if plan.updating.is_some() { " (updating)" } else { "" };
        format!("{}{updating}", ops.join(" "))
    }

    const HOP_COUNTS: &str = "SELECT auction, COUNT(*) AS num, window_start AS starttime, window_end AS endtime \
        FROM TABLE(HOP(TABLE bid, DESCRIPTOR(dateTime), INTERVAL '2' SECOND, INTERVAL '10' SECOND)) \
        GROUP BY auction, window_start, window_end";

    #[test]
    fn a_group_by_over_carried_window_bounds_is_a_window_aggregation_joinable_on_its_window() {
        // Nexmark q5: the maximum count per window is a window aggregation over the counts' window ends (a
        // tumbling window of the hop's slide), and the join on both bounds is a window join.
        let q5 = format!(
            "INSERT INTO out SELECT a.auction, a.num FROM ({HOP_COUNTS}) a JOIN (SELECT MAX(num) AS maxn, \
             starttime, endtime FROM ({HOP_COUNTS}) GROUP BY starttime, endtime) m \
             ON a.starttime = m.starttime AND a.endtime = m.endtime AND a.num >= m.maxn"
        );
        assert_eq!(
            shape(&q5),
            "scan calc window-agg(HOP(slide 2 s, size 10 s)) calc window-agg(HOP(slide 2 s, size 10 s)) calc local-agg \
             window-agg(TUMBLE(size 2 s)) calc window-join(HOP(slide 2 s, size 10 s)) calc sink"
        );
        // Grouping by the start alone is not a window: an unbounded, updating aggregation.
        assert_eq!(
            shape(&format!("INSERT INTO out SELECT starttime, MAX(num) AS m FROM ({HOP_COUNTS}) GROUP BY starttime")),
            "scan calc window-agg(HOP(slide 2 s, size 10 s)) calc group-agg sink (updating)"
        );
    }

    #[test]
    fn joins_are_classified_by_what_their_condition_says_of_time() {
        // Both sides' event times bounded: an interval join.
        assert_eq!(
            shape(
                "INSERT INTO out SELECT a.auction, b.price FROM bid a JOIN bid b ON a.auction = b.auction \
                 AND a.dateTime BETWEEN b.dateTime - INTERVAL '1' SECOND AND b.dateTime + INTERVAL '2' SECOND"
            ),
            // Each side narrowed to what the query reads (auction, price and the times).
            "scan calc calc interval-join[-1000, 2000] calc sink"
        );
        // A window end is a plain timestamp (window_time is the event time): Nexmark q7 is a regular join.
        assert_eq!(
            shape(
                "INSERT INTO out SELECT B.auction, B.price FROM bid B JOIN (SELECT MAX(price) AS maxprice, \
                 window_end AS dateTime FROM TABLE(TUMBLE(TABLE bid, DESCRIPTOR(dateTime), INTERVAL '10' SECOND)) \
                 GROUP BY window_start, window_end) B1 ON B.price = B1.maxprice \
                 WHERE B.dateTime BETWEEN B1.dateTime - INTERVAL '10' SECOND AND B1.dateTime"
            ),
            "scan calc calc local-agg window-agg(TUMBLE(size 10 s)) join(INNER) calc sink"
        );
    }

    #[test]
    fn join_inputs_keep_only_the_columns_read_above_and_by_the_join() {
        let plan = plan_job(
            "INSERT INTO out SELECT a.bidder, b.url FROM bid a JOIN bid b ON a.auction = b.auction \
             WHERE a.price > b.price",
            &tables(),
            &["out".to_string()],
        )
        .unwrap();
        let join = plan.nodes.iter().find_map(|n| match &n.op {
            NodeOp::Join(j) => Some(j),
            _ => None,
        });
        let names = |s: &Schema| s.fields.iter().map(|f| f.name.clone()).collect::<Vec<_>>().join(",");
        let j = join.expect("a regular join");
        assert_eq!(names(&j.sides.left), "auction,bidder,price");
        assert_eq!(names(&j.sides.right), "auction,price,url");
        assert_eq!((j.sides.left_keys.as_slice(), j.sides.right_keys.as_slice()), (&[0][..], &[0][..]));
        assert_eq!(j.sides.residual.as_ref().map(|r| r.columns()), Some(vec![2, 4]));
        // Below a ranking too: its partition and order columns are kept beside what is read above it.
        let plan = plan_job(
            "INSERT INTO out SELECT bidder, rn FROM (SELECT a.bidder, b.url, ROW_NUMBER() OVER (PARTITION BY \
             a.auction ORDER BY b.price DESC) AS rn FROM bid a JOIN bid b ON a.auction = b.auction) WHERE rn <= 2",
            &tables(),
            &["out".to_string()],
        )
        .unwrap();
        let (join, rank) = plan.nodes.iter().fold((None, None), |acc, n| match &n.op {
            NodeOp::Join(j) => (Some(j), acc.1),
            NodeOp::Rank(r) => (acc.0, Some(r)),
            _ => acc,
        });
        let (j, r) = (join.expect("a regular join"), rank.expect("a ranking"));
        assert_eq!(names(&j.sides.left), "auction,bidder");
        // (url is read by the inner SELECT list, the calc right above the ranking.)
        assert_eq!(names(&j.sides.right), "auction,price,url");
        assert_eq!((r.partition.as_slice(), r.order.as_slice()), (&[0][..], &[(3, false)][..]));
        assert_eq!(plan.out_schema.fields.len(), 2);
    }
}
