//! Options that do not exist, are repeated, or have a wrong value.

use memoshelve_build::memoize;

#[memoize(colour = "red")]
fn a(n: u32) -> u32 {
    n
}

#[memoize(log = "loud")]
fn b(n: u32) -> u32 {
    n
}

#[memoize(name = "x", name = "y")]
fn c(n: u32) -> u32 {
    n
}

#[memoize]
const fn d(n: u32) -> u32 {
    n
}

fn main() {}
