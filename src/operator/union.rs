//! UNION ALL: every input's rows, as they come (with their kinds). Watermarks, idleness and ends of the
//! inputs are combined by the runtime like any operator's.

use super::{Operator, Output};
use crate::record::BatchBuf;

#[derive(Default)]
pub struct UnionOp {
    all: Vec<u32>,
}

impl Operator for UnionOp {
    fn process(&mut self, _port: usize, input: &BatchBuf, out: &mut Output) {
        let view = input.view();
        self.all.clear();
        self.all.extend(0..view.n_rows() as u32);
        for col in 0..view.n_columns() {
            out.rows.gather(col, &view, col, &self.all);
        }
        out.rows.end_rows_from(&view, &self.all);
        if let Some(l) = &input.lineage {
            out.rows.lineage.get_or_insert_with(|| l.empty_like()).gather(l, &self.all);
        }
        out.row_done();
    }
}
