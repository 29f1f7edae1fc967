//! `impl Trait` in a parameter and in the return type.

use memoshelve_build::memoize;

#[memoize]
fn render(value: impl std::fmt::Display) -> String {
    value.to_string()
}

#[memoize]
fn numbers(n: u32) -> impl Iterator<Item = u32> {
    0..n
}

fn main() {
    render(1);
    numbers(2);
}
