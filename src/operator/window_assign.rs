//! A window table function's rows as they are (not aggregated, ranked or joined): each row once per window
//! of the function it is in, with `window_start, window_end, window_time` appended. Stateless; a row whose
//! time is NULL is in no window.

use super::rank::window_ends;
use super::{Operator, Output};
use crate::record::BatchBuf;
use crate::window::WindowSpec;

pub struct WindowAssigner {
    spec: WindowSpec,
    time_col: usize,
}

impl WindowAssigner {
    pub fn new(spec: WindowSpec, time_col: usize) -> WindowAssigner {
        WindowAssigner { spec, time_col }
    }
}

impl Operator for WindowAssigner {
    fn process(&mut self, _port: usize, input: &BatchBuf, out: &mut Output) {
        let view = input.view();
        let n = view.n_columns();
        for r in 0..view.n_rows() {
            if view.is_null(self.time_col, r) {
                continue;
            }
            let ts = view.int(self.time_col, r);
            for end in window_ends(&self.spec, ts) {
                let start = self.spec.window_of_end(end).start;
                for c in 0..n {
                    out.rows.push_datum(c, &view.datum(c, r));
                }
                out.rows.push_int(n, start);
                out.rows.push_int(n + 1, end);
                out.rows.push_int(n + 2, end - 1);
                out.rows.end_row_as(view.kind(r));
                out.row_done();
            }
        }
    }
}
