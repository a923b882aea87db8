//! The calc operator: filter, then projection, batch in → rows appended to an output builder. Row kinds
//! pass through (a filtered changelog stays a changelog, as in Flink).

use super::{Operator, Output};
use crate::record::{BatchBuf, BatchBuilder, BatchView};
use crate::sql::expr::Expr;
use crate::sql::Calc;

/// A [`Calc`] as an operator.
pub struct CalcOp {
    calc: Calc,
    /// The rows of the last batch that passed the filter (reused between batches).
    sel: Vec<u32>,
}

impl CalcOp {
    pub fn new(calc: &Calc) -> CalcOp {
        CalcOp { calc: calc.clone(), sel: Vec::new() }
    }
}

impl Operator for CalcOp {
    fn process(&mut self, _port: usize, input: &BatchBuf, out: &mut Output) {
        run_calc_columnar(&self.calc, &input.view(), &mut out.rows, &mut self.sel);
        if let Some(l) = &input.lineage {
            out.rows.lineage.get_or_insert_with(|| l.empty_like()).gather(l, &self.sel);
        }
        out.row_done();
    }
}

/// Runs a calc over a whole batch, column at a time: the filter picks the rows (a selection vector, kept in
/// `sel` between calls), bare columns are copied in bulk, computed columns evaluated row by row.
pub fn run_calc_columnar(calc: &Calc, view: &BatchView<'_>, out: &mut BatchBuilder, sel: &mut Vec<u32>) {
    sel.clear();
    match &calc.filter {
        Some(f) => sel.extend((0..view.n_rows()).filter(|&r| f.is_true(view, r)).map(|r| r as u32)),
        None => sel.extend(0..view.n_rows() as u32),
    }
    for (out_col, e) in calc.exprs.iter().enumerate() {
        match e {
            Expr::Column { idx, .. } => out.gather(out_col, view, *idx, sel),
            _ => {
                for &r in sel.iter() {
                    out.push_datum(out_col, &e.eval(view, r as usize));
                }
            }
        }
    }
    out.end_rows_from(view, sel);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::types::{DataType, Storage};
    use crate::record::{Datum, Schema};
    use crate::sql::plan::TableInfo;
    use crate::sql::plan_job;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    // The reference model: the calc evaluated row by row, cell by cell.
    /// Copies one cell between batches of the same type, without going through a datum.
    fn copy_cell(view: &BatchView<'_>, col: usize, row: usize, out: &mut BatchBuilder, out_col: usize, ty: DataType) {
        if view.is_null(col, row) {
            out.push_null(out_col);
            return;
        }
        match ty.storage() {
            Storage::Int => out.push_int(out_col, view.int(col, row)),
            Storage::Double => out.push_double(out_col, view.double(col, row)),
            Storage::Bool => out.push_bool(out_col, view.bool(col, row)),
            Storage::Str => out.push_str(out_col, view.str(col, row)),
        }
    }

    /// Appends the projection of row `row` to `out`.
    fn project_row(exprs: &[Expr], view: &BatchView<'_>, row: usize, out: &mut BatchBuilder) {
        for (out_col, e) in exprs.iter().enumerate() {
            match e {
                Expr::Column { idx, ty, .. } => copy_cell(view, *idx, row, out, out_col, *ty),
                _ => out.push_datum(out_col, &e.eval(view, row)),
            }
        }
        out.end_row();
    }

    /// Runs a calc over rows `rows` of `view`, appending survivors to `out`; calls `flush` whenever `out` is full.
    fn run_calc(
        calc: &Calc,
        view: &BatchView<'_>,
        rows: std::ops::Range<usize>,
        out: &mut BatchBuilder,
        full: impl Fn(&BatchBuilder) -> bool,
        mut flush: impl FnMut(&mut BatchBuilder),
    ) {
        for row in rows {
            if let Some(f) = &calc.filter {
                if !f.is_true(view, row) {
                    continue;
                }
            }
            project_row(&calc.exprs, view, row, out);
            if full(out) {
                flush(out);
            }
        }
    }

    proptest! {
        /// Column-at-a-time and row-at-a-time evaluation give the same rows, NULLs included.
        #[test]
        fn columnar_calc_equals_row_calc(rows in proptest::collection::vec((proptest::option::of(-50i64..50), "[a-c]{0,3}"), 0..300)) {
            let schema = Schema::parse("v BIGINT, s VARCHAR").unwrap();
            let mut tables = BTreeMap::new();
            tables.insert("t".to_string(), TableInfo { schema: schema.clone(), watermark: None });
            let plan = plan_job("INSERT INTO o SELECT s, v, v * 2 AS w, UPPER(s) AS u FROM t WHERE v IS NULL OR v > 0", &tables, &["o".to_string()]).unwrap();
            let mut b = BatchBuilder::new(&schema.types());
            for (v, s) in &rows {
                match v { Some(v) => b.push_int(0, *v), None => b.push_null(0) }
                b.push_str(1, s.as_bytes());
                b.end_row();
            }
            let input = b.finish();
            let view = input.view();
            let types = plan.out_schema.types();
            let (mut by_row, mut by_col) = (BatchBuilder::new(&types), BatchBuilder::new(&types));
            run_calc(plan.first_calc().unwrap(), &view, 0..view.n_rows(), &mut by_row, |_| false, |_| {});
            run_calc_columnar(plan.first_calc().unwrap(), &view, &mut by_col, &mut Vec::new());
            let (a, c) = (by_row.finish(), by_col.finish());
            let (a, c) = (a.view(), c.view());
            prop_assert_eq!(a.n_rows(), c.n_rows());
            for r in 0..a.n_rows() {
                for col in 0..types.len() {
                    let (x, y): (Datum<'_>, Datum<'_>) = (a.datum(col, r), c.datum(col, r));
                    prop_assert_eq!(x, y);
                }
            }
        }
    }
}
