//! Flink SQL: parsing (sqlparser, with a Flink dialect), binding to typed expressions, and planning into
//! physical operators.

pub mod binder;
pub mod expr;
pub mod function;
pub mod logical;
pub mod ops;
pub mod physical;
pub mod plan;
pub mod prune;
pub mod two_phase;

use std::fmt;

use sqlparser::ast::{self, Spanned};
use sqlparser::dialect::Dialect;
use sqlparser::keywords::Keyword;
use sqlparser::parser::{Parser, ParserError};

use crate::record::{DataType, Schema};

pub use binder::{plan_job, plan_job_with, Catalog, Planned};
pub use physical::JobPlan;
pub use plan::{AggCall, AggKind, Calc, WindowAggPlan};
pub use two_phase::AggPhaseStrategy;

/// A SQL error at a position of the SQL text (1-based line and column; 0 when unknown).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqlError {
    pub line: u64,
    pub column: u64,
    pub message: String,
}

impl SqlError {
    pub fn at(span: sqlparser::tokenizer::Span, message: impl Into<String>) -> SqlError {
        SqlError { line: span.start.line, column: span.start.column, message: message.into() }
    }

    pub fn of(node: &impl Spanned, message: impl Into<String>) -> SqlError {
        SqlError::at(node.span(), message)
    }

    pub fn nowhere(message: impl Into<String>) -> SqlError {
        SqlError { line: 0, column: 0, message: message.into() }
    }
}

impl fmt::Display for SqlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line > 0 {
            write!(f, "line {}, column {}: {}", self.line, self.column, self.message)
        } else {
            write!(f, "{}", self.message)
        }
    }
}

/// Flink's SQL lexical rules: backtick-quoted identifiers, `$` inside identifiers, and `TABLE t` as an
/// argument of a window table function (`TUMBLE(TABLE t, DESCRIPTOR(ts), ...)`), which becomes
/// `Expr::Prefixed { prefix: TABLE, value: t }`.
#[derive(Debug, Default)]
pub struct FlinkDialect;

impl Dialect for FlinkDialect {
    fn is_identifier_start(&self, ch: char) -> bool {
        ch.is_alphabetic() || ch == '_'
    }

    fn is_identifier_part(&self, ch: char) -> bool {
        ch.is_alphanumeric() || ch == '_' || ch == '$'
    }

    fn is_delimited_identifier_start(&self, ch: char) -> bool {
        ch == '`'
    }

    fn supports_filter_during_aggregation(&self) -> bool {
        false
    }

    fn parse_prefix(&self, parser: &mut Parser) -> Option<Result<ast::Expr, ParserError>> {
        if !parser.parse_keyword(Keyword::TABLE) {
            return None;
        }
        Some(parser.parse_identifier().map(|table| ast::Expr::Prefixed {
            prefix: ast::Ident::new("TABLE"),
            value: Box::new(ast::Expr::Identifier(table)),
        }))
    }
}

/// Turns sqlparser's error text ("... at Line: 1, Column: 80") into a positioned [`SqlError`].
fn parser_error(e: ParserError) -> SqlError {
    let text = e.to_string();
    let text = text.trim_start_matches("sql parser error: ").to_string();
    if let Some(at) = text.find(" at Line: ") {
        let pos = &text[at + " at Line: ".len()..];
        let mut nums = pos.split(", Column: ").map(|n| n.trim().parse::<u64>().unwrap_or(0));
        let (line, column) = (nums.next().unwrap_or(0), nums.next().unwrap_or(0));
        return SqlError { line, column, message: format!("syntax error: {}", &text[..at]) };
    }
    SqlError::nowhere(format!("syntax error: {text}"))
}

/// Parses one SQL statement.
pub fn parse_statement(sql: &str) -> Result<ast::Statement, SqlError> {
    let mut statements = Parser::parse_sql(&FlinkDialect, sql).map_err(parser_error)?;
    match statements.len() {
        1 => Ok(statements.remove(0)),
        0 => Err(SqlError::nowhere("the job's sql is empty; write one INSERT INTO ... SELECT ... statement")),
        _ => Err(SqlError::of(&statements[1], "a job runs one statement; put each INSERT in its own [[jobs]] entry")),
    }
}

/// Parses a query (a view's SELECT).
pub fn parse_query(sql: &str) -> Result<ast::Query, SqlError> {
    let mut parser = Parser::new(&FlinkDialect).try_with_sql(sql).map_err(parser_error)?;
    let q = parser.parse_query().map_err(parser_error)?;
    if parser.peek_token().token != sqlparser::tokenizer::Token::EOF {
        return Err(SqlError::at(parser.peek_token().span, "unexpected text after the query"));
    }
    Ok(*q)
}

/// Parses a standalone expression (e.g. a watermark).
pub fn parse_expr(text: &str) -> Result<ast::Expr, SqlError> {
    let mut parser = Parser::new(&FlinkDialect).try_with_sql(text).map_err(parser_error)?;
    let e = parser.parse_expr().map_err(parser_error)?;
    if parser.peek_token().token != sqlparser::tokenizer::Token::EOF {
        return Err(SqlError::at(parser.peek_token().span, "unexpected text after the expression"));
    }
    Ok(e)
}

/// An interval literal's length in milliseconds: `INTERVAL '10' SECOND`, `INTERVAL '1.5' MINUTE`.
pub fn interval_ms(e: &ast::Expr) -> Result<i64, SqlError> {
    let ast::Expr::Interval(iv) = e else {
        return Err(SqlError::of(e, format!("expected an interval such as INTERVAL '10' SECOND, found `{e}`")));
    };
    let text = match iv.value.as_ref() {
        ast::Expr::Value(v) => match &v.value {
            ast::Value::SingleQuotedString(s) | ast::Value::Number(s, _) => s.clone(),
            other => return Err(SqlError::of(e, format!("interval value `{other}` is not a number"))),
        },
        other => return Err(SqlError::of(e, format!("interval value `{other}` is not a literal number"))),
    };
    let unit_ms: f64 = match &iv.leading_field {
        Some(ast::DateTimeField::Millisecond | ast::DateTimeField::Milliseconds) => 1.0,
        Some(ast::DateTimeField::Second | ast::DateTimeField::Seconds) => 1e3,
        Some(ast::DateTimeField::Minute | ast::DateTimeField::Minutes) => 60e3,
        Some(ast::DateTimeField::Hour | ast::DateTimeField::Hours) => 3600e3,
        Some(ast::DateTimeField::Day | ast::DateTimeField::Days) => 86_400e3,
        other => {
            let unit = other.as_ref().map_or("none".to_string(), |u| u.to_string());
            return Err(SqlError::of(
                e,
                format!("interval unit `{unit}` is not supported; use MILLISECOND, SECOND, MINUTE, HOUR or DAY"),
            ));
        }
    };
    if iv.last_field.is_some() {
        return Err(SqlError::of(e, "compound intervals (e.g. MINUTE TO SECOND) are not supported; use one unit"));
    }
    let n: f64 =
        text.trim().parse().map_err(|_| SqlError::of(e, format!("interval value '{text}' is not a number")))?;
    let ms = n * unit_ms;
    if ms.fract() != 0.0 || !ms.is_finite() {
        return Err(SqlError::of(e, format!("interval '{text}' is not a whole number of milliseconds")));
    }
    Ok(ms as i64)
}

/// A source's watermark: `column - INTERVAL ...` (or just `column`, no delay).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WatermarkSpec {
    pub column: usize,
    pub delay_ms: i64,
}

/// Parses and checks a `watermark` expression against its source's schema.
pub fn parse_watermark(text: &str, schema: &Schema) -> Result<WatermarkSpec, SqlError> {
    let e = parse_expr(text)?;
    let (col, delay_ms) = match &e {
        ast::Expr::BinaryOp { left, op: ast::BinaryOperator::Minus, right } => (left.as_ref(), interval_ms(right)?),
        other => (other, 0),
    };
    let name = match col {
        ast::Expr::Identifier(id) => &id.value,
        other => {
            return Err(SqlError::of(
                other,
                "a watermark is `column - INTERVAL 'n' unit`, e.g. ts - INTERVAL '5' SECOND",
            ))
        }
    };
    let column = schema.index_of(name).ok_or_else(|| {
        SqlError::of(col, format!("unknown column `{name}` in the watermark; columns: {}", column_list(schema)))
    })?;
    if schema.fields[column].ty != DataType::Timestamp {
        return Err(SqlError::of(
            col,
            format!("watermark column `{name}` is {}, it must be TIMESTAMP(3)", schema.fields[column].ty),
        ));
    }
    if delay_ms < 0 {
        return Err(SqlError::of(&e, "a watermark delay cannot be negative"));
    }
    Ok(WatermarkSpec { column, delay_ms })
}

pub fn column_list(schema: &Schema) -> String {
    schema.fields.iter().map(|f| f.name.as_str()).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_watermarks() {
        let schema = Schema::parse("k VARCHAR, ts TIMESTAMP(3)").unwrap();
        assert_eq!(
            parse_watermark("ts - INTERVAL '4' SECOND", &schema),
            Ok(WatermarkSpec { column: 1, delay_ms: 4000 })
        );
        assert_eq!(parse_watermark("`ts`", &schema), Ok(WatermarkSpec { column: 1, delay_ms: 0 }));
        assert_eq!(parse_watermark("ts - INTERVAL '1.5' MINUTE", &schema).unwrap().delay_ms, 90_000);
        assert!(parse_watermark("k - INTERVAL '1' SECOND", &schema)
            .unwrap_err()
            .message
            .contains("must be TIMESTAMP(3)"));
        let e = parse_watermark("tss - INTERVAL '1' SECOND", &schema).unwrap_err();
        assert_eq!((e.line, e.column), (1, 1));
        assert!(e.message.contains("unknown column `tss`"));
        assert!(parse_watermark("ts - INTERVAL '1' WEEK", &schema).is_err());
    }

    #[test]
    fn reports_syntax_errors_with_positions() {
        let e = parse_statement("INSERT INTO out\nSELECT a,, b FROM t").unwrap_err();
        assert_eq!((e.line, e.column), (2, 10));
        assert!(e.message.starts_with("syntax error"), "{e}");
    }
}
