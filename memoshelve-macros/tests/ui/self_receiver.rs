//! A method with a `self` receiver.

use memoshelve_build::memoize;

struct Grid {
    side: u32,
}

impl Grid {
    #[memoize]
    fn cells(&self, rows: u32) -> u32 {
        rows * self.side
    }
}

fn main() {
    Grid { side: 2 }.cells(3);
}
