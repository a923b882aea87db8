//! The calc operator: filter, then projection, batch in → rows appended to an output builder.

use crate::record::types::{DataType, Storage};
use crate::record::{BatchBuilder, BatchView};
use crate::sql::expr::Expr;
use crate::sql::Calc;

/// Copies one cell between batches of the same type, without going through a datum.
#[inline]
pub fn copy_cell(view: &BatchView<'_>, col: usize, row: usize, out: &mut BatchBuilder, out_col: usize, ty: DataType) {
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
#[inline]
pub fn project_row(exprs: &[Expr], view: &BatchView<'_>, row: usize, out: &mut BatchBuilder) {
    for (out_col, e) in exprs.iter().enumerate() {
        match e {
            Expr::Column { idx, ty, .. } => copy_cell(view, *idx, row, out, out_col, *ty),
            _ => out.push_datum(out_col, &e.eval(view, row)),
        }
    }
    out.end_row();
}

/// Runs a calc over rows `rows` of `view`, appending survivors to `out`; calls `flush` whenever `out` is full.
pub fn run_calc(
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
