//! The f32 ops around the matrix products.

pub mod attention;
pub mod elementwise;
mod exp;
pub mod norm;
pub mod rope;
pub mod softmax;
