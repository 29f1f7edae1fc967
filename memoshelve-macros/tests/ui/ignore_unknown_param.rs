//! `ignore(..)` naming no parameter.

use memoshelve_build::memoize;

#[memoize(ignore(verbos))]
fn steps(n: u64, verbose: bool) -> u64 {
    let _ = verbose;
    n
}

fn main() {
    steps(1, false);
}
