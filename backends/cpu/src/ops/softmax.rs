//! Softmax over rows.

use super::exp::exp;

/// Numerically stable softmax of one row in place; `-inf` gives 0.
pub fn softmax_in_place(row: &mut [f32]) {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    // Two loops: the exponentials vectorise, the sum keeps its order.
    for v in row.iter_mut() {
        *v = exp(*v - max);
    }
    let sum: f32 = row.iter().sum();
    let inv = 1.0 / sum;
    for v in row.iter_mut() {
        *v *= inv;
    }
}
